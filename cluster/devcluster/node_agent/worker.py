"""One pod's life on this node: its IP and files, its containers started, probed, restarted
with back-off per ``restartPolicy``, stopped on deletion (preStop sleep, SIGTERM, grace,
SIGKILL of the process group) and the pod removed; its status patched whenever it changes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from ..addresses import LOCAL_IP_ANNOTATION
from ..images import ImageMap
from ..kube import ApiError, Kube, Obj
from ..podns import PodNamespaces, namespace_ready, pod_hostname
from ..procs import ProcRef, start_time
from .clock import now_iso
from .containers import (
    Container,
    container_argv,
    container_env,
    exec_entry,
    expand,
    token_request,
    write_service_account,
)
from .ippool import IpPool
from .probes import probe_state, run_probe
from .runtime import PodFiles, PodmanRuntime
from .status import comparable, pod_status

TICK = 0.2
MAX_BACKOFF = 30.0
BACKOFF_RESET_AFTER = 60.0  # a container that ran this long restarts after 1 s again


def restart_wanted(policy: str, exit_code: int) -> bool:
    """Whether ``restartPolicy`` restarts a container that exited with ``exit_code``."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def grace_period(pod: Obj | None, cap: float | None = None) -> float:
    """Seconds between SIGTERM and SIGKILL: the deletion's grace, else the pod's
    ``terminationGracePeriodSeconds``, else 30; at most ``cap``."""
    grace = 30.0
    if pod is not None:
        meta = pod["metadata"]
        if meta.get("deletionGracePeriodSeconds") is not None:
            grace = float(meta["deletionGracePeriodSeconds"])
        elif pod["spec"].get("terminationGracePeriodSeconds") is not None:
            grace = float(pod["spec"]["terminationGracePeriodSeconds"])
    return min(grace, cap) if cap is not None else grace


class PodHost(Protocol):
    """What a pod worker needs from the node agent that runs it."""

    @property
    def kube(self) -> Kube: ...
    @property
    def node(self) -> str: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def images(self) -> ImageMap: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def ips(self) -> IpPool: ...
    @property
    def dns_ip(self) -> str | None: ...
    @property
    def pod_namespaces(self) -> PodNamespaces | None: ...
    @property
    def stopping(self) -> threading.Event: ...
    @property
    def shutdown_grace_cap(self) -> float: ...
    @property
    def podman(self) -> PodmanRuntime | None: ...

    def log(self, msg: str) -> None: ...
    def service_env(self, ns: str) -> dict[str, str]: ...
    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None: ...
    def record_pid(self, uid: str, c: Container) -> None: ...
    def drop_pid(self, uid: str, c: Container) -> None: ...
    def forget(self, uid: str) -> None: ...


class PodWorker:
    """Owns one pod's processes for its whole life on this node."""

    def __init__(self, agent: PodHost, pod: Obj) -> None:
        self.agent = agent
        self.kube = agent.kube
        meta = pod["metadata"]
        self.ns = str(meta["namespace"])
        self.name = str(meta["name"])
        self.uid = str(meta["uid"])
        self.latest: Obj | None = pod
        self.gone = False  # the pod object no longer exists
        self.wake = threading.Event()
        self.ip: str | None = None
        self.start_time = now_iso()
        self.containers: list[Container] = []
        self.last_status: Obj | None = None
        self.unknown_image_reported: set[str] = set()  # and refusals, each said once
        self.pending_reason: tuple[str, str] = ("ContainerCreating", "")
        self._last_sent = ""
        self._last_error = ""
        self.dir = agent.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.etc: Path | None = None  # the pod's resolv.conf, hosts, nsswitch.conf
        self.thread = threading.Thread(
            target=self._run, name=f"pod {self.ns}/{self.name}", daemon=True
        )

    # -- inputs
    def update(self, pod: Obj | None) -> None:
        if pod is None:
            self.gone = True
        else:
            self.latest = pod
        self.wake.set()

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/pods/{self.name}"

    def log(self, msg: str) -> None:
        self.agent.log(f"{self.ns}/{self.name}: {msg}")

    # -- main loop
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:
            import traceback

            self.log(f"worker crashed: {e!r}\n{traceback.format_exc()}")
            self._kill_all(0)
        finally:
            if self.ip:
                self.agent.ips.release(self.ip)
            self.agent.forget(self.uid)

    def _loop(self) -> None:
        while True:
            self.wake.wait(TICK)
            self.wake.clear()
            pod = self.latest
            if self.agent.stopping.is_set():
                self._kill_all(grace_period(pod, cap=self.agent.shutdown_grace_cap))
                return
            if self.gone or pod is None:
                self._kill_all(2)
                return
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            if not self.containers:
                if not self._prepare(pod):
                    self._patch_status(pod)
                    self.wake.wait(2)
                    continue
            self._step(pod)
            self._patch_status(pod)

    # -- start
    def _in_podman(self, spec: Obj) -> bool:
        """Whether the container runs in podman: the agent runs podman and has the image."""
        rt = self.agent.podman
        return rt is not None and rt.image(str(spec.get("image", ""))) is not None

    def _prepare(self, pod: Obj) -> bool:
        """Resolve images and env; False (pod stays Pending) if an image is unknown."""
        specs = pod["spec"].get("containers") or []
        in_podman = {str(c["name"]): self._in_podman(c) for c in specs}
        unknown = [
            c
            for c in specs
            if not in_podman[str(c["name"])]
            and self.agent.images.lookup(str(c.get("image", ""))) is None
        ]
        if unknown:
            for c in unknown:
                image = str(c.get("image", ""))
                if image not in self.unknown_image_reported:
                    self.unknown_image_reported.add(image)
                    self.agent.event(
                        pod,
                        "Warning",
                        "Failed",
                        f'Image "{image}" is not in images.yaml: no local command runs it',
                    )
            self.pending_reason = ("ErrImageNeverPull", "image not in images.yaml")
            return False
        if self.ip is None:
            # A pod that ran under an earlier node agent keeps its address: the API does
            # not let its podIP change.
            before = str((pod["metadata"].get("annotations") or {}).get(LOCAL_IP_ANNOTATION, ""))
            self.ip = before if before and self.agent.ips.claim(before) else None
            self.ip = self.ip or self.agent.ips.allocate()
            try:  # where the pod really listens, for readers of the API
                self.kube.patch(
                    self.path, {"metadata": {"annotations": {LOCAL_IP_ANNOTATION: self.ip}}}
                )
            except (ApiError, OSError) as e:
                self.log(f"cannot annotate the local IP: {e}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.agent.pod_namespaces is not None and self.agent.dns_ip is not None:
            self.etc = self.agent.pod_namespaces.write(self.dir, pod, self.ip, self.agent.dns_ip)
        kubeconfig = self._service_account_kubeconfig(pod)
        containers = []
        for spec in specs:
            c = Container(
                spec,
                self.agent.state_dir
                / "logs"
                / "pods"
                / f"{self.ns}_{self.name}_{spec['name']}.log",
            )
            if in_podman[c.name] and self.agent.podman is not None:
                c.runtime = "podman"
                refusal = self.agent.podman.refusal(pod, spec)
                if refusal is not None:
                    if refusal not in self.unknown_image_reported:  # said once
                        self.unknown_image_reported.add(refusal)
                        self.agent.event(pod, "Warning", "Failed", f"Error: {refusal}")
                    self.pending_reason = ("CreateContainerConfigError", refusal)
                    return False
            try:
                c.env = container_env(
                    pod,
                    spec,
                    pod_ip=self.ip,
                    hostname=pod_hostname(pod),
                    node=self.agent.node,
                    kubeconfig=kubeconfig,
                    service_env=self.agent.service_env(self.ns),
                    read=self.kube.get_or_none,
                    # a container has its image's PATH and the like, nothing of the agent's
                    base={} if c.runtime == "podman" else os.environ,
                )
            except (ValueError, KeyError, ApiError, OSError) as e:
                self.pending_reason = ("CreateContainerConfigError", str(e))
                return False
            containers.append(c)
        self.containers = containers
        return True

    def _service_account_kubeconfig(self, pod: Obj) -> str | None:
        spec = pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        sa = spec.get("serviceAccountName") or "default"
        try:
            tr = self.kube.post(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", token_request(pod)
            )
        except ApiError as e:
            self.log(f"no service-account token: {e}")
            return None
        path = write_service_account(
            self.dir,
            self.kube.creds.server,
            self.agent.ca_file,
            self.ns,
            sa,
            str(tr["status"]["token"]),
        )
        return str(path)

    def _start(self, pod: Obj, c: Container) -> None:
        spec = c.spec
        c.in_pod_namespaces = False
        c.container_id, c.container_pid = "", 0
        if c.runtime == "podman" and self.agent.podman is not None:
            files = PodFiles(self.dir, self.etc, pod_hostname(pod))
            env = c.env
            argv = self.agent.podman.argv(pod, c, files, lambda word: expand(word, env))
            proc_env = self.agent.podman.process_env(c)
        else:
            argv = container_argv(self.agent.images, spec, c.env)
            proc_env = c.env
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log, "ab") as out:
            out.write(f"--- {now_iso()} starting {argv!r}\n".encode())
            out.flush()
            if (
                c.runtime == "process"
                and self.etc is not None
                and self.agent.pod_namespaces is not None
            ):
                argv = self.agent.pod_namespaces.start_argv(argv, self.etc, pod_hostname(pod))
            c.proc = subprocess.Popen(
                argv,
                env=proc_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.get("workingDir") or self.dir,
                start_new_session=True,
            )
        c.ref = ProcRef(
            f"pod {self.ns}/{self.name}/{c.name}", c.proc.pid, start_time(c.proc.pid) or 0
        )
        self.agent.record_pid(self.uid, c)
        c.started_at = now_iso()
        c.started_mono = time.monotonic()
        c.terminated = None
        c.waiting = None
        t = time.monotonic()
        c.startup = probe_state(spec, "startupProbe", t)
        c.readiness = probe_state(spec, "readinessProbe", t)
        c.liveness = probe_state(spec, "livenessProbe", t)
        self.agent.event(pod, "Normal", "Started", f"Started container {c.name} (pid {c.proc.pid})")

    def _on_exit(self, c: Container, code: int) -> None:
        c.terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": f"podman://{c.container_id}"
            if c.container_id
            else f"local://{c.ref.pid if c.ref else 0}",
        }
        if code < 0:
            c.terminated["signal"] = -code
        c.proc = None
        self.agent.drop_pid(self.uid, c)
        c.startup = c.readiness = c.liveness = None

    # -- run: exits, restarts, probes
    def _step(self, pod: Obj) -> None:
        policy = pod["spec"].get("restartPolicy", "Always")
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                code = int(c.proc.returncode)
                self.log(f"container {c.name} exited with {code}")
                self._on_exit(c, code)
            if c.proc is None:
                if c.ref is not None:  # it ran before: restart per restartPolicy, with backoff
                    code = int((c.terminated or {}).get("exitCode", 0))
                    if c.terminated is not None:
                        if not restart_wanted(policy, code):
                            continue
                        ran = time.monotonic() - c.started_mono
                        if ran > BACKOFF_RESET_AFTER:
                            c.backoff = 1.0
                        c.next_start = time.monotonic() + c.backoff
                        c.backoff = min(c.backoff * 2, MAX_BACKOFF)
                        c.last_terminated = c.terminated
                        c.terminated = None
                        c.waiting = ("CrashLoopBackOff", f"back-off restarting {c.name}")
                    if time.monotonic() < c.next_start:
                        continue
                    c.restart_count += 1
                try:
                    self._start(pod, c)
                except (OSError, KeyError) as e:
                    c.waiting = ("CreateContainerError", str(e))
                    self.agent.event(pod, "Warning", "Failed", f"cannot start {c.name}: {e}")
                continue
            self._probe(pod, c)

    def _entered(self, c: Container) -> bool:
        """Whether ``c`` runs in the pod's own view yet: a podman container once podman
        reports it running; a process once its namespaces have the pod's files (a few ms
        after it starts)."""
        if c.in_pod_namespaces:
            return True
        if c.runtime == "podman" and self.agent.podman is not None:
            c.in_pod_namespaces = self.agent.podman.entered(c)
        elif self.etc is not None:
            c.in_pod_namespaces = c.proc is not None and namespace_ready(c.proc.pid)
        else:
            return True
        return c.in_pod_namespaces

    def _probe(self, pod: Obj, c: Container) -> None:
        assert self.ip is not None
        if not self._entered(c):
            return
        if c.runtime == "podman" and self.agent.podman is not None:
            enter = self.agent.podman.exec_argv(c)
        else:
            enter = exec_entry(self.agent.pod_namespaces, self.etc, c)
        t = time.monotonic()
        if c.startup is not None and c.startup.result is not True:
            if t >= c.startup.next_at:
                c.startup.next_at = t + c.startup.period
                c.startup.record(run_probe(c.startup.spec, c.spec, self.ip, c.env, enter))
                if c.startup.result is False:
                    self._restart_unhealthy(pod, c, "startup")
            return
        for probe in (c.readiness, c.liveness):
            if probe is not None and t >= probe.next_at:
                probe.next_at = t + probe.period
                probe.record(run_probe(probe.spec, c.spec, self.ip, c.env, enter))
        if c.liveness is not None and c.liveness.result is False:
            self._restart_unhealthy(pod, c, "liveness")

    def _restart_unhealthy(self, pod: Obj, c: Container, which: str) -> None:
        self.agent.event(
            pod, "Warning", "Unhealthy", f"{which} probe failed for {c.name}; killing it"
        )
        self._stop_container(c, grace_period(pod))

    # -- stop
    def _stop_container(self, c: Container, grace: float) -> None:
        self._stop_many([c], grace)

    def _stop_many(self, cs: list[Container], grace: float) -> None:
        live = [c for c in cs if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            c.proc is not None and c.proc.poll() is None for c in live
        ):
            time.sleep(0.05)
        for c in live:
            assert c.proc is not None
            if c.proc.poll() is None and c.runtime == "podman" and self.agent.podman is not None:
                self.agent.podman.kill(c)  # killing `podman run` would leave the container
            pid = c.proc.pid
            # SIGKILL the whole process group: nothing the container started stays behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            c.proc.wait(10)
        for c in cs:
            if c.proc is not None:
                self._on_exit(c, int(c.proc.returncode))

    def _kill_all(self, grace: float) -> None:
        self._stop_many(self.containers, grace)

    def _terminate(self, pod: Obj) -> None:
        grace = grace_period(pod)
        running = [c for c in self.containers if c.running]
        if running:
            self.agent.event(
                pod, "Normal", "Killing", f"Stopping containers (grace period {grace:.0f}s)"
            )
            for c in running:
                lifecycle = (c.spec.get("lifecycle") or {}).get("preStop") or {}
                if "sleep" in lifecycle:
                    time.sleep(min(float(lifecycle["sleep"].get("seconds", 0)), grace))
        self._stop_many(self.containers, grace)
        self._patch_status(pod)
        with contextlib.suppress(ApiError):
            self.kube.request(
                "DELETE",
                self.path,
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        self.log("terminated and removed")

    # -- status
    def _patch_status(self, pod: Obj) -> None:
        status = pod_status(
            pod,
            self.containers,
            ip=self.ip,
            start_time=self.start_time,
            pending=self.pending_reason,
        )
        text = comparable(status)
        if text == self._last_sent:
            return
        try:
            self.kube.patch(self.path + "/status", {"status": status}, kind="strategic")
            self._last_sent = text
        except ApiError as e:
            if e.not_found:
                self.gone = True
            elif str(e) != self._last_error:  # say it once, keep trying
                self._last_error = str(e)
                self.log(f"status patch failed: {e}")
        except OSError as e:
            self.log(f"status patch failed: {e}")
