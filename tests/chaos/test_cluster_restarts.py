"""The local cluster's own processes restarted, as the chaos table does it: the API server
killed and started again on its port, the node agent stopped and started again.

Found while building the table: after a node agent restart, pods came back on other
loopback addresses (the new agent's pool handed them out in another order) while the
API kept each pod's first podIP (it may not change), so the Service and the pods'
readers of the API reached the wrong pod, or none. Now a pod of the earlier agent gets
its address back. Real cluster, real processes, nothing faked.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from devcluster.addresses import LOCAL_IP_ANNOTATION
from devcluster.kube import Obj
from devcluster.pytest_plugin import KubeCluster
from tests.cluster.objects import small_server_pod

pytestmark = pytest.mark.cluster
NAMES = ("one", "two", "three", "four")


def _env(ip: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/env", timeout=2) as r:
            env: dict[str, str] = json.loads(r.read())
            return env
    except OSError:
        return None


def _where(kube_cluster: KubeCluster, ns: str) -> dict[str, tuple[str, str]]:
    """Pod name -> (local IP from the API's podIP, the local-IP annotation)."""
    return {
        p["metadata"]["name"]: (
            kube_cluster.local_ip(p),
            str((p["metadata"].get("annotations") or {}).get(LOCAL_IP_ANNOTATION)),
        )
        for p in kube_cluster.pods(ns)
    }


def test_node_agent_restart_gives_each_pod_its_address_back(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    ns = kube_namespace
    # Created in reverse order of their names: a new agent may meet them in another.
    for name in reversed(NAMES):
        kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, name))
    kube_cluster.wait_ready_pods(ns, "", len(NAMES))
    before = _where(kube_cluster, ns)
    took = kube_cluster.restart_node_agent()

    def all_back() -> dict[str, str] | None:
        pods: list[Obj] = kube_cluster.ready_pods(ns)
        if len(pods) != len(NAMES):
            return None
        seen = {}
        for p in pods:
            env = _env(kube_cluster.local_ip(p))
            if env is None or env.get("POD_NAME") != p["metadata"]["name"]:
                return None
            seen[p["metadata"]["name"]] = kube_cluster.local_ip(p)
        return seen

    after = kube_cluster.wait_for(all_back, 60, "each pod answering as itself at its podIP")
    print(f"node agent serving again after {took:.1f} s; addresses {after}")
    assert _where(kube_cluster, ns) == before


def test_api_server_killed_comes_back_on_its_port(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.require_local()
    server = kube_cluster.kube.get("/api")["serverAddressByClientCIDRs"]
    took = kube_cluster.restart_apiserver(kill=True)
    print(f"kube-apiserver killed, ready again after {took:.1f} s")
    assert kube_cluster.kube.get("/api")["serverAddressByClientCIDRs"] == server
    ns = kube_namespace
    kube_cluster.kube.post(f"/api/v1/namespaces/{ns}/pods", small_server_pod(ns, "after"))
    kube_cluster.wait_ready_pods(ns, "", 1)  # the node agent and the scheduler's part too
