"""Helpers for the operator's cluster tests and benchmark: the shipped manifests
adapted to a test namespace, and clients that follow ``reconnect``/``migrate`` frames.

Nothing is faked: manifests come from ``manifests/`` and ``crds/`` (built by the
pinned kubectl's kustomize), pods are real signaling processes run by the node agent,
the operator is the real kopf operator, Redis is a real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signaling.client import Client, ClientError, Closed

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "rtc.roomwire.io_meetingrooms.yaml"
SECRET = "test-control-secret-0123456789abcdef"
Obj = dict[str, Any]

# Operator settings for tests: fast loops, short windows.
FAST_OPERATOR_ENV = {
    "ROOMWIRE_INTERVAL_S": "0.5",
    "ROOMWIRE_STATUS_INTERVAL_S": "1",
    "ROOMWIRE_SKEW_PERSIST_S": "2",
    "ROOMWIRE_SKEW_THRESHOLD": "1.10",
    "ROOMWIRE_MOVE_WINDOW_MS": "3000",
    "ROOMWIRE_MOVE_TIMEOUT_S": "15",
    "ROOMWIRE_METRICS_PORT": "0",
    "ROOMWIRE_BUFFER_PODS": "0",
    "ROOMWIRE_MIN_REPLICAS": "1",
}


def kustomize(kubectl: Callable[..., Any], path: Path) -> list[Obj]:
    out = kubectl("kustomize", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _env(container: Obj, name: str, value: str | None) -> None:
    env = [e for e in container.get("env") or [] if e["name"] != name]
    if value is not None:
        env.append({"name": name, "value": value})
    container["env"] = env


def in_namespace(objs: list[Obj], ns: str) -> list[Obj]:
    out = []
    for o in copy.deepcopy(objs):
        if o["kind"] in ("Namespace", "CustomResourceDefinition"):
            continue
        o["metadata"]["namespace"] = ns
        for s in o.get("subjects") or []:
            s["namespace"] = ns
        out.append(o)
    return out


def for_devcluster(o: Obj) -> Obj:
    """The node agent enforces no resources and reports every pod as BestEffort, which
    the API refuses for pods with requests (qosClass is immutable): drop them."""
    if o["kind"] == "Deployment":
        for c in o["spec"]["template"]["spec"]["containers"]:
            c.pop("resources", None)
    return o


def workload_objects(
    objs: list[Obj],
    ns: str,
    redis_url: str,
    replicas: int,
    drain_s: float = 5,
    env: dict[str, str] | None = None,
) -> list[Obj]:
    """The shipped workload for a test: the test's Redis instead of the Redis pod; ``env``
    set on the signaling container."""
    out = []
    for o in in_namespace(objs, ns):
        name = o["metadata"]["name"]
        if name == "redis":
            continue
        if o["kind"] == "Secret" and name == "roomwire-control":
            o["stringData"] = {"control-secret": SECRET}
        if o["kind"] == "Deployment" and name == "signaling":
            o["spec"]["replicas"] = replicas
            pod = o["spec"]["template"]["spec"]
            pod["terminationGracePeriodSeconds"] = int(drain_s) + 10
            c = pod["containers"][0]
            _env(c, "SIGNALING_REDIS_URL", redis_url)
            _env(c, "SIGNALING_DRAIN_S", str(drain_s))
            _env(c, "SIGNALING_LOG_LEVEL", "WARNING")
            for k, v in (env or {}).items():
                _env(c, k, v)
        out.append(for_devcluster(o))
    return out


def operator_objects(objs: list[Obj], ns: str, redis_url: str, env: dict[str, str]) -> list[Obj]:
    """The shipped operator for a test. Its metrics port stays on: the pod's readiness
    probe is served there (``/readyz``), and each pod has an address of its own."""
    out = []
    for o in in_namespace(objs, ns):
        if o["kind"] == "Deployment":
            c = o["spec"]["template"]["spec"]["containers"][0]
            _env(c, "ROOMWIRE_REDIS_URL", redis_url)
            for k, v in {**FAST_OPERATOR_ENV, **env}.items():
                if k != "ROOMWIRE_METRICS_PORT":
                    _env(c, k, v)
        out.append(for_devcluster(o))
    return out


def room(ns: str, name: str, capacity: int, **spec: Any) -> Obj:
    return {
        "apiVersion": "rtc.roomwire.io/v1alpha1",
        "kind": "MeetingRoom",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"capacity": capacity, **spec},
    }


# ---- clients that follow the operator's moves ------------------------------------------


@dataclass
class Follower:
    """A client that, on ``reconnect``, resumes through ``service_url`` after ``after_ms``
    and, on ``migrate``, resumes at the given URL. Counts the moves it was told to make
    and keeps every relayed ``n`` it received, per sender.

    With ``make_before_break``, a ``migrate`` is followed as the demo page follows it:
    the new connection opens and resumes while the old one stays open, read until the
    server closes it (when the new pod takes the session over) or for at most 2 s.
    Otherwise the old connection is closed first."""

    client: Client
    service_url: str
    room: str
    peer: str
    moves: int = 0
    received: dict[str, list[int]] = field(default_factory=dict)
    resumes: int = 0
    errors: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    make_before_break: bool = False
    retiring: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        self.ready.set()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.client.recv(timeout=3600)
            except Closed:
                # Closed without a move order (e.g. the pod died): resume via the Service.
                await self._resume(self.service_url, 200)
                continue
            except TimeoutError:
                continue
            kind = frame.get("type")
            if kind == "reconnect":
                self.moves += 1
                await self._resume(self.service_url, int(frame.get("after_ms", 0)))
            elif kind == "migrate" and self.make_before_break:
                self.moves += 1
                await self._switch(str(frame["url"]))
            elif kind == "migrate":
                self.moves += 1
                await self._resume(str(frame["url"]), 0)
            else:
                self._take(frame)

    def _take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ack":
            self.acked.add(str(frame.get("id")))
        elif kind == "candidate":
            data = frame.get("data") or {}
            self.received.setdefault(str(frame.get("from")), []).append(int(data["n"]))

    def _drain(self) -> None:
        """Take what the old connection delivered before ``resume`` (which drops frames
        that arrive before its ``joined``) reads the inbox."""
        while not self.client.inbox.empty():
            frame = self.client.inbox.get_nowait()
            if frame.get("type") not in ("reconnect", "migrate"):
                self._take(frame)

    async def _resume(self, url: str, after_ms: int) -> None:
        self.ready.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.wait_closed(), max(after_ms / 1000, 0) + 5)
        await asyncio.sleep(after_ms / 1000)
        for attempt in range(40):
            self._drain()
            try:
                await self.client.resume(url, timeout=5)
                self.resumes += 1
                self.ready.set()
                return
            except (ClientError, OSError, TimeoutError) as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        raise AssertionError(f"{self.peer} could not resume: {self.errors[-3:]}")

    async def _switch(self, url: str) -> None:
        """Resume on a second connection to ``url``, then retire the first one."""
        self.ready.clear()
        old = self.client
        for attempt in range(40):
            new = Client(url)
            new.room, new.peer, new.role = old.room, old.peer, old.role
            new.resume_token, new.last_seq, new.last_rn = (
                old.resume_token,
                old.last_seq,
                old.last_rn,
            )
            try:
                await new.resume(url, timeout=5)
                break
            except (ClientError, OSError, TimeoutError) as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                await new.close()
                await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        else:
            raise AssertionError(f"{self.peer} could not resume: {self.errors[-3:]}")
        self.client = new
        self.resumes += 1
        self.ready.set()
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def _retire(self, old: Client) -> None:
        """Take what the old connection still delivers until it closes (at most 2 s)."""
        deadline = time.monotonic() + 2.0
        with contextlib.suppress(Closed, TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                frame = await old.recv(timeout=left)
                if frame.get("type") not in ("reconnect", "migrate"):
                    self._take(frame)
        await old.close()

    async def send_n(self, to: str, n: int, timeout: float = 30) -> None:
        """Relay ``n`` to ``to`` until the server acknowledges it (resent across moves;
        the receiver deduplicates)."""
        fid = f"{self.peer}-{n}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.wait_for(self.ready.wait(), max(deadline - time.monotonic(), 0.01))
            try:
                await self.client.relay("candidate", to, {"n": n}, frame_id=fid)
            except (Closed, ConnectionError, RuntimeError):
                await asyncio.sleep(0.05)
                continue
            ack_by = time.monotonic() + 3
            while time.monotonic() < ack_by and fid not in self.acked:
                await asyncio.sleep(0.02)
            if fid in self.acked:
                return
        raise AssertionError(f"{self.peer} could not send {n}")

    async def stop(self) -> None:
        for task in [self.task, *self.retiring]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.client.close()


def counts_by_pod(sessions: list[tuple[str, str]]) -> Counter[str]:
    return Counter(pod for _, pod in sessions)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)[:3000]
