"""The node agent with a tiny test image (``roomwire/devcluster-testserver``).

Real: API server, controllers, the processes the agent starts. The image is a mapping
in ``cluster/images.yaml`` to ``python -m devcluster.testserver``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from devcluster.kube import Obj
from devcluster.pytest_plugin import KubeCluster

from .objects import small_server_pod

pytestmark = pytest.mark.cluster


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def _pod(kube_cluster: KubeCluster, ns: str, name: str) -> Obj:
    return kube_cluster.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def test_unknown_image_gets_a_warning_and_stays_pending(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    pod = small_server_pod(ns, "mystery", container={"image": "example/not-mapped:1"})
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", pod)

    def warned() -> list[Obj]:
        events = kube_cluster.kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
        return [e for e in events if e["type"] == "Warning" and "not-mapped" in e["message"]]

    kube_cluster.wait_for(warned, 30, "a Warning event about the unknown image")
    status = _pod(kube_cluster, ns, "mystery")["status"]
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"


def test_pod_runs_with_its_own_ip_and_downward_api_env(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    for name in ("one", "two"):
        kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, name))
    pods = {p["metadata"]["name"]: p for p in kube_cluster.wait_ready_pods(ns, "", 2)}
    ips = {kube_cluster.local_ip(p) for p in pods.values()}
    assert len(ips) == 2 and all(ip.startswith("127.0.") for ip in ips)
    ip = kube_cluster.local_ip(pods["one"])
    assert pods["one"]["metadata"]["annotations"]["devcluster.roomwire.io/local-ip"] == ip
    assert pods["one"]["status"]["podIP"] == "198.18." + ip.removeprefix("127.0.")
    env = json.loads(_get(f"http://{ip}:8080/env"))
    assert env["POD_NAME"] == "one"
    assert env["POD_NAMESPACE"] == ns
    assert env["POD_IP"] == env["MY_IP"] == ip
    assert env["MY_NODE"] == "devcluster"
    assert env["GREETING"] == f"hello {ns}"
    assert "KUBECONFIG" in env  # the pod's service account, not the admin


def test_crashed_container_is_restarted(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, "crashy"))
    (pod,) = kube_cluster.wait_ready_pods(ns, "app=crashy", 1)
    _get(f"http://{kube_cluster.local_ip(pod)}:8080/exit/3")

    def restarted() -> Obj | None:
        p = _pod(kube_cluster, ns, "crashy")
        cs = p["status"]["containerStatuses"][0]
        ready = cs["ready"] and cs["restartCount"] == 1
        return p if ready else None

    p = kube_cluster.wait_for(restarted, 30, "the container to be restarted and Ready")
    last = p["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 3
    assert p["status"]["podIP"] == pod["status"]["podIP"]


def test_deleted_pod_gets_sigterm_then_goes(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, "bye"))
    kube_cluster.wait_ready_pods(ns, "app=bye", 1)
    kube_cluster.kube.delete(f"/api/v1/namespaces/{ns}/pods/bye")

    def gone() -> bool:
        return kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{ns}/pods/bye") is None

    kube_cluster.wait_for(gone, 30, "the pod to be removed")
    log = kube_cluster.pod_log(ns, "bye", "app")
    assert "SIGTERM: draining" in log and "drained, exiting" in log


def test_service_names_resolve_and_reach_the_service(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """Python pods resolve Service names (through the cluster DNS server), and
    the Service's own port answers on its loopback IP, as behind kube-proxy. Also the
    ``redis`` image maps to Debian's redis-server on the pod's address."""
    kube_cluster.require_local()
    ns = kube_namespace
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, "backend"))
    redis = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "redis", "labels": {"app": "redis"}},
        "spec": {
            "containers": [
                {
                    "name": "redis",
                    "image": "redis:7",
                    "args": ["--save", "", "--appendonly", "no", "--port", "6379"],
                    "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                }
            ]
        },
    }
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", redis)
    for name, port, target in (("echo", 80, 8080), ("redis", 6379, 6379)):
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": "backend" if name == "echo" else "redis"},
                "ports": [{"port": port, "targetPort": target}],
            },
        }
        kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/services", svc)
    kube_cluster.wait_ready_pods(ns, "app in (backend, redis)", 2)

    def service_ip(name: str) -> str | None:
        entry = kube_cluster.proxy_services().get(f"{ns}/{name}")
        ready = entry and entry["ports"][0]["ready"]
        return str(entry["ip"]) if ready else None

    echo_ip = kube_cluster.wait_for(lambda: service_ip("echo"), 30, "echo's service IP")
    redis_ip = kube_cluster.wait_for(lambda: service_ip("redis"), 30, "redis's service IP")
    assert _get(f"http://{echo_ip}:80/") == "backend"
    import socket

    with socket.create_connection((redis_ip, 6379), timeout=3) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16).startswith(b"+PONG")

    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, "client"))
    (client,) = kube_cluster.wait_ready_pods(ns, "app=client", 1)
    base = f"http://{kube_cluster.local_ip(client)}:8080"
    assert _get(f"{base}/resolve/echo") == echo_ip
    assert _get(f"{base}/resolve/redis.{ns}.svc.cluster.local") == redis_ip
    env = json.loads(_get(f"{base}/env"))
    assert env["ECHO_SERVICE_HOST"] == echo_ip and env["ECHO_SERVICE_PORT"] == "80"
