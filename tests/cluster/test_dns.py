"""Service names resolve for every process of a pod, through the cluster DNS server.

Real: the control plane, the node agent and its DNS server, and C programs in the pods
(Debian's ``redis-cli``, glibc's ``getent``) in the pods' own mount namespaces; dnspython
asks the DNS server from the test itself. Nothing here is faked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from devcluster.kube import Obj
from devcluster.pytest_plugin import KubeCluster

from .objects import signaling_deployment, small_server_pod

pytestmark = pytest.mark.cluster

HOST_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")


def _digests() -> dict[str, str]:
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in HOST_FILES}


def _shell_pod(ns: str, name: str, script: str) -> Obj:
    """A pod that runs ``script`` once (``sh``, glibc's tools, redis-cli) and ends."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "sh",
                    "image": "roomwire/devcluster-testserver",
                    "command": ["sh", "-c", script],
                }
            ],
        },
    }


def _run_script(kube_cluster: KubeCluster, ns: str, name: str, script: str) -> dict[str, str]:
    """Run ``script`` in a pod; its output lines ``key value...`` as a dict."""
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", _shell_pod(ns, name, script))

    def finished() -> str | None:
        pod = kube_cluster.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        phase = (pod.get("status") or {}).get("phase")
        return str(phase) if phase in ("Succeeded", "Failed") else None

    phase = kube_cluster.wait_for(finished, 60, f"pod {name} to finish")
    log = kube_cluster.pod_log(ns, name, "sh")
    assert phase == "Succeeded", log
    out: dict[str, str] = {}
    for line in log.splitlines():
        if line and not line.startswith("---"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def _ask(kube_cluster: KubeCluster, name: str) -> dns.message.Message:
    host, port = kube_cluster.dns.rsplit(":", 1)
    return dns.query.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=3)


def _a(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for s in msg.answer if s.rdtype == dns.rdatatype.A for r in s)


def _redis(kube_cluster: KubeCluster, ns: str) -> None:
    """A redis pod (Debian's redis-server) behind the Service ``redis``."""
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
    kube_cluster.kube.post(
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379}]},
        },
    )


def test_c_programs_in_a_pod_resolve_service_names(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """``redis-cli -h redis ping`` as an exec readiness probe makes the pod Ready; glibc's
    resolver finds ``redis``, ``redis.<ns>`` and ``redis.<ns>.svc.cluster.local`` at the
    service proxy's loopback IP; an unknown name is NXDOMAIN; the host's files stay."""
    kube_cluster.require_local()
    assert kube_cluster.dns, "the node agent publishes its DNS server in agent.json"
    host_files = _digests()
    ns = kube_namespace
    _redis(kube_cluster, ns)
    probe = {"exec": {"command": ["redis-cli", "-h", "redis", "ping"]}, "periodSeconds": 1}
    client = small_server_pod(ns, "client", container={"readinessProbe": probe})
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", client)
    kube_cluster.wait_ready_pods(ns, "app=client", 1, timeout=60)  # the C client got PONG

    redis_ip = str(kube_cluster.proxy_services()[f"{ns}/redis"]["ip"])
    assert redis_ip.startswith("127.")
    dns_ip = kube_cluster.dns.rsplit(":", 1)[0]
    script = (
        f"for n in redis redis.{ns} redis.{ns}.svc.cluster.local; do "
        'echo "$n $(getent ahostsv4 $n | cut -d" " -f1 | sort -u | tr "\\n" " ")"; done; '
        f'echo "ping $(redis-cli -h redis.{ns}.svc.cluster.local ping)"; '
        'getent hosts nosuch; echo "nosuch $?"; '
        f'getent hosts nosuch.{ns}.svc.cluster.local; echo "nosuch-fqdn $?"; '
        'echo "hostname $(hostname)"; '
        'echo "self $(getent hosts $(hostname) | cut -d" " -f1)"; '
        'echo "nameserver $(grep ^nameserver /etc/resolv.conf)"; '
        'echo "search $(grep ^search /etc/resolv.conf)"'
    )
    out = _run_script(kube_cluster, ns, "lookups", script)
    assert out["redis"] == redis_ip
    assert out[f"redis.{ns}"] == redis_ip
    assert out[f"redis.{ns}.svc.cluster.local"] == redis_ip
    assert out["ping"] == "PONG"
    assert out["nosuch"] == "2" and out["nosuch-fqdn"] == "2"  # getent: not found
    assert out["hostname"] == "lookups"
    pod = kube_cluster.kube.get(f"/api/v1/namespaces/{ns}/pods/lookups")
    assert out["self"] == kube_cluster.local_ip(pod)
    assert out["nameserver"] == f"nameserver {dns_ip}"
    assert out["search"] == f"search {ns}.svc.cluster.local svc.cluster.local cluster.local"

    assert _a(_ask(kube_cluster, f"redis.{ns}.svc.cluster.local")) == [redis_ip]
    assert _ask(kube_cluster, f"nosuch.{ns}.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    assert _digests() == host_files
    assert dns_ip not in Path("/etc/resolv.conf").read_text()


def test_headless_service_resolves_to_its_ready_pods(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    for name in ("web-a", "web-b"):
        pod = small_server_pod(ns, name, hostname=name, subdomain="web")
        pod["metadata"]["labels"] = {"app": "web"}
        kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", pod)
    kube_cluster.kube.post(
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 8080}]},
        },
    )
    pods = {p["metadata"]["name"]: p for p in kube_cluster.wait_ready_pods(ns, "app=web", 2)}
    local = {name: kube_cluster.local_ip(p) for name, p in pods.items()}
    kube_cluster.wait_for(
        lambda: len(kube_cluster.ready_endpoints(ns, "web")) == 2, 30, "2 ready endpoints"
    )
    fqdn = f"web.{ns}.svc.cluster.local"
    assert _a(_ask(kube_cluster, fqdn)) == sorted(local.values())
    assert _a(_ask(kube_cluster, f"web-a.{fqdn}")) == [local["web-a"]]

    script = (
        'echo "web $(getent ahostsv4 web | cut -d" " -f1 | sort -u | tr "\\n" " ")"; '
        'echo "web-b $(getent hosts web-b.web | cut -d" " -f1)"'
    )
    out = _run_script(kube_cluster, ns, "lookups", script)
    assert out["web"].split() == sorted(local.values())
    assert out["web-b"] == local["web-b"]

    # a pod that is no longer ready leaves the answer
    kube_cluster.kube.delete(f"/api/v1/namespaces/{ns}/pods/web-b")
    kube_cluster.wait_for(
        lambda: _a(_ask(kube_cluster, fqdn)) == [local["web-a"]], 30, "web-b to leave the answer"
    )


def test_signaling_on_uvloop_reaches_redis_by_service_name(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """The workload as shipped: ``redis://redis:6379/0`` from a signaling pod on uvloop,
    whose resolver (libuv's getaddrinfo) never saw a Python-level shim; /readyz answers
    503 until the pod's Redis registry and inbox are up."""
    kube_cluster.require_local()
    ns = kube_namespace
    _redis(kube_cluster, ns)
    kube_cluster.apply(signaling_deployment(ns, replicas=1, redis_url="redis://redis:6379/0"))
    (pod,) = kube_cluster.wait_ready_pods(ns, "app=signaling", 1, timeout=90)
    log = kube_cluster.pod_log(ns, pod["metadata"]["name"], "signaling")
    assert "uvloop is not installed" not in log
