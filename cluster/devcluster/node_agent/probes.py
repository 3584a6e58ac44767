"""Startup, readiness and liveness probes: their state (thresholds, period) and one run of a
probe (``httpGet``, ``tcpSocket``, ``exec``, or ``grpc`` as a TCP connect)."""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..kube import Obj


@dataclass
class ProbeState:
    spec: Obj
    next_at: float
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None: not decided yet

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def record(self, ok: bool) -> None:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.result = False


def probe_state(container: Obj, key: str, now: float) -> ProbeState | None:
    """The state of the container's probe ``key`` (``startupProbe``, ...) for a container
    started at ``now`` (monotonic): first run after ``initialDelaySeconds``; None without one."""
    if key not in container:
        return None
    spec = container[key]
    return ProbeState(spec, now + float(spec.get("initialDelaySeconds", 0)))


def _port_of(spec: Obj, container: Obj) -> int:
    port = spec.get("port")
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return int(str(port))


def run_probe(
    spec: Obj,
    container: Obj,
    pod_ip: str,
    env: Mapping[str, str],
    enter: Callable[[list[str]], list[str]] = list,
) -> bool:
    """One probe; ``enter`` wraps an ``exec`` probe's command to run in the pod's namespaces."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            h = spec["httpGet"]
            host = h.get("host") or pod_ip
            port = _port_of(h, container)
            conn: http.client.HTTPConnection
            if str(h.get("scheme", "HTTP")).upper() == "HTTPS":
                import ssl

                ctx = ssl._create_unverified_context()
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/devcluster")
                conn.request("GET", h.get("path", "/"), headers=headers)
                status = conn.getresponse().status
                return 200 <= status < 400
            finally:
                conn.close()
        if "tcpSocket" in spec:
            t = spec["tcpSocket"]
            with socket.create_connection(
                (t.get("host") or pod_ip, _port_of(t, container)), timeout=timeout
            ):
                return True
        if "exec" in spec:
            proc = subprocess.run(
                enter([str(a) for a in spec["exec"]["command"]]),
                env=dict(env),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            return proc.returncode == 0
        if "grpc" in spec:
            with socket.create_connection((pod_ip, int(spec["grpc"]["port"])), timeout=timeout):
                return True
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, ValueError):
        return False
    return True
