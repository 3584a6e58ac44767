"""The signaling workload on the local cluster: Deployment, Service, EndpointSlices, proxy.

Real: the control plane, ``python -m signaling serve`` processes started by the node agent
(image ``roomwire/signaling``), Redis, and TCP through the user-space service proxy.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devcluster.addresses import to_local
from devcluster.pytest_plugin import KubeCluster

from .objects import SIGNALING_PORT, service, signaling_deployment

pytestmark = pytest.mark.cluster

GATE = "roomwire.io/test-gate"


class HttpConn:
    """One TCP connection through the proxy, reused for keep-alive HTTP requests."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.client = "{}:{}".format(*self.sock.getsockname()[:2])

    def get(self, path: str = "/healthz") -> int:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: signaling\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(body) < length:
            body += self.sock.recv(4096)
        return int(head.split()[1])

    def close(self) -> None:
        self.sock.close()


@contextmanager
def connections(host: str, port: int, n: int) -> Iterator[list[HttpConn]]:
    conns: list[HttpConn] = []
    try:
        for _ in range(n):
            c = HttpConn(host, port)
            assert c.get() == 200
            conns.append(c)
        yield conns
    finally:
        for c in conns:
            c.close()


def pod_of(kube_cluster: KubeCluster, conns: list[HttpConn]) -> dict[str, str]:
    """client address -> pod name, as the service proxy routed each connection."""
    wanted = {c.client for c in conns}
    opened = kube_cluster.proxy_connections()["open"]
    return {o["client"]: o["pod"] for o in opened if o["client"] in wanted}


def _readyz(ip: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{ip}:{SIGNALING_PORT}/readyz", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def test_three_replicas_behind_a_service(
    kube_cluster: KubeCluster, kube_namespace: str, redis_server: Any
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.apply(signaling_deployment(ns, replicas=3, redis_url=redis_server.url))
    kube_cluster.apply(service(ns, "signaling", {"app": "signaling"}, 80, "http"))
    pods = kube_cluster.wait_ready_pods(ns, "app=signaling", 3, timeout=120)
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3
    for p in pods:  # each a real `signaling serve` on its own pod IP
        assert _readyz(kube_cluster.local_ip(p)) == (200, "ok\n")
        cmd = kube_cluster.pod_log(ns, p["metadata"]["name"], "signaling")
        assert "'-m', 'signaling', 'serve'" in cmd

    def slice_ready() -> bool:
        return kube_cluster.ready_endpoints(ns, "signaling") == ips

    kube_cluster.wait_for(slice_ready, 30, "3 ready endpoints in the EndpointSlice")
    host, port = kube_cluster.service_address(ns, "signaling", 80)
    with connections(host, port, 30) as conns:
        routed = pod_of(kube_cluster, conns)
        assert len(routed) == 30
        assert set(routed.values()) == {p["metadata"]["name"] for p in pods}


def test_deleted_pod_drains_and_is_replaced(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.apply(signaling_deployment(ns, replicas=2, drain_seconds=3))
    pods = kube_cluster.wait_ready_pods(ns, "app=signaling", 2, timeout=120)
    victim = pods[0]["metadata"]["name"]
    ip = kube_cluster.local_ip(pods[0])
    kube_cluster.kube.delete(f"/api/v1/namespaces/{ns}/pods/{victim}")

    seen: set[tuple[int, str]] = set()

    def gone() -> bool:
        try:  # /readyz says "draining" between SIGTERM and exit (a short window)
            seen.add(_readyz(ip))
        except OSError:
            pass
        return kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{ns}/pods/{victim}") is None

    kube_cluster.wait_for(gone, 30, "the deleted pod to drain and go away", every=0.05)
    log = kube_cluster.pod_log(ns, victim, "signaling")
    assert "SIGTERM: draining" in log, log[-2000:]
    assert "draining 0 sessions" in log or (503, "draining\n") in seen
    again = kube_cluster.wait_ready_pods(ns, "app=signaling", 2, timeout=60)
    assert victim not in {p["metadata"]["name"] for p in again}


def test_unselected_and_gated_pods_get_no_new_connections(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.apply(signaling_deployment(ns, replicas=3, readiness_gate=GATE))
    kube_cluster.apply(service(ns, "signaling", {"app": "signaling", "serving": "yes"}, 80, "http"))

    def running() -> list[dict[str, Any]] | None:
        ps = [
            p
            for p in kube_cluster.pods(ns, "app=signaling")
            if any(c["ready"] for c in p["status"].get("containerStatuses") or [])
        ]
        return ps if len(ps) == 3 else None

    pods = kube_cluster.wait_for(running, 120, "3 running signaling containers")
    assert kube_cluster.ready_pods(ns, "app=signaling") == []  # the gate holds them back
    for p in pods:
        kube_cluster.set_pod_condition(ns, p["metadata"]["name"], GATE, True)
    pods = kube_cluster.wait_ready_pods(ns, "app=signaling", 3, timeout=30)
    names = sorted(p["metadata"]["name"] for p in pods)
    ip_of = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    relabelled, gated, kept = names

    def all_ready() -> bool:
        return kube_cluster.ready_endpoints(ns, "signaling") == set(ip_of.values())

    kube_cluster.wait_for(all_ready, 30, "3 ready endpoints")
    host, port = kube_cluster.service_address(ns, "signaling", 80)
    with connections(host, port, 30) as old:
        routed = pod_of(kube_cluster, old)
        assert set(routed.values()) == set(names)

        kube_cluster.kube.patch(
            f"/api/v1/namespaces/{ns}/pods/{relabelled}",
            {"metadata": {"labels": {"serving": "no"}}},
        )
        kube_cluster.set_pod_condition(ns, gated, GATE, False)

        def only_kept() -> bool:
            return kube_cluster.ready_endpoints(ns, "signaling") == {ip_of[kept]}

        kube_cluster.wait_for(only_kept, 30, "only the untouched pod left as a ready endpoint")

        def proxy_agrees() -> bool:
            entry = kube_cluster.proxy_services()[f"{ns}/signaling"]
            return {e["ip"] for e in entry["ports"][0]["ready"]} == {to_local(ip_of[kept])}

        kube_cluster.wait_for(proxy_agrees, 10, "the service proxy to see the same endpoints")
        with connections(host, port, 20) as new:
            assert set(pod_of(kube_cluster, new).values()) == {kept}
        # established connections stay where they are, on every pod
        for c in old:
            assert c.get() == 200
        assert pod_of(kube_cluster, old) == routed
