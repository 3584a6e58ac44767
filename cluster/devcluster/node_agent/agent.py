"""The node agent assembled: registers the Node, watches every pod, binds the unscheduled
ones, hands each pod bound here to a pod worker, records container PIDs for ``devcluster
down``, and stops every pod on shutdown."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..images import ImageMap
from ..kube import ApiError, Informer, Kube, Obj
from ..podns import PodNamespaces
from . import node
from .binding import Binder, wants_binding
from .clock import now_iso
from .containers import Container
from .events import PodEvents
from .ippool import IpPool
from .runtime import PodmanRuntime
from .worker import PodWorker


class NodeAgent:
    def __init__(
        self,
        kube: Kube,
        node: str,
        state_dir: Path,
        images: ImageMap,
        ca_file: str,
        workdir: Path,
        service_env: Callable[[str], dict[str, str]] | None = None,
        log: Callable[[str], None] | None = None,
        ips: IpPool | None = None,
        dns_ip: str | None = None,
        runtime: str = "process",
    ) -> None:
        """With ``dns_ip`` (the cluster DNS server) every container runs in namespaces of
        its own with the pod's resolv.conf, hosts and hostname; without it, on the host's.
        With ``runtime="podman"``, containers whose image podman has run in podman
        (``devcluster.node_agent.runtime``)."""
        self.kube = kube
        self.dns_ip = dns_ip
        self.pod_namespaces = PodNamespaces.find() if dns_ip else None
        self.node = node
        self.state_dir = state_dir
        self.images = images
        self.ca_file = ca_file
        self.workdir = workdir
        self.ips = ips or IpPool()
        self.stopping = threading.Event()
        self.stop_watch = threading.Event()
        self.shutdown_grace_cap = 10.0
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self._service_env = service_env or (lambda ns: {})
        self._log = log or (lambda m: print(m, flush=True))
        self.podman = PodmanRuntime(state_dir, self.log) if runtime == "podman" else None
        self.pids_dir = state_dir / "pids"
        self.informer: Informer | None = None
        self.events = PodEvents(kube, node, self.log)
        self.binder = Binder(kube, node, self.event, self.log)

    def log(self, msg: str) -> None:
        self._log(f"{now_iso()} node-agent {msg}")

    def service_env(self, ns: str) -> dict[str, str]:
        return self._service_env(ns)

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        self.events.record(pod, kind, reason, message)

    # -- pid records, so that `devcluster down` finds pods even if the agent died
    def _pid_file(self, uid: str, c: Container) -> Path:
        return self.pids_dir / f"pod-{uid}-{c.name}.json"

    def record_pid(self, uid: str, c: Container) -> None:
        if c.ref is not None:
            self.pids_dir.mkdir(parents=True, exist_ok=True)
            self._pid_file(uid, c).write_text(json.dumps(c.ref.to_json()))

    def drop_pid(self, uid: str, c: Container) -> None:
        self._pid_file(uid, c).unlink(missing_ok=True)

    # -- pods
    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        spec = pod.get("spec") or {}
        if kind == "DELETED":
            with self.lock:
                worker = self.workers.get(uid)
            if worker:
                worker.update(None)
            self.binder.forget(uid)
            return
        node_name = spec.get("nodeName")
        if not node_name:
            if wants_binding(pod):
                self.binder.bind(pod)
            return
        if node_name != self.node:
            return
        phase = (pod.get("status") or {}).get("phase")
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                if phase in ("Succeeded", "Failed") or self.stopping.is_set():
                    if meta.get("deletionTimestamp"):
                        with contextlib.suppress(ApiError, OSError):
                            self.kube.request(
                                "DELETE",
                                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                            )
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.thread.start()
                return
        worker.update(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    # -- life
    def start(self) -> None:
        if self.podman is not None:
            left = self.podman.remove_all()  # of an agent of this cluster that died
            self.log(
                "runtime podman: images podman has run in containers, others as processes"
                f" ({left} containers of an earlier agent removed)"
            )
        node.register(self.kube, self.node)
        self.informer = Informer(
            self.kube, "/api/v1/pods", self.on_pod, self.stop_watch, name="pods"
        ).start()
        threading.Thread(
            target=node.heartbeats,
            args=(self.kube, self.node, self.stopping),
            name="node heartbeat",
            daemon=True,
        ).start()

    def shutdown(self) -> None:
        """Stop every pod's processes (grace capped) and wait for the workers."""
        self.stopping.set()
        self.stop_watch.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        deadline = time.monotonic() + self.shutdown_grace_cap + 10
        for w in workers:
            w.thread.join(max(0.1, deadline - time.monotonic()))
