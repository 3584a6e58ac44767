"""The control plane itself: real etcd, kube-apiserver and kube-controller-manager.

Nothing is faked: kubectl is the pinned upstream build, RBAC is the API server's own,
garbage collection is kube-controller-manager's.
"""

from __future__ import annotations

import pytest

from devcluster.control_plane import versions
from devcluster.kube import ApiError, Credentials, Kube
from devcluster.pytest_plugin import KubeCluster

pytestmark = pytest.mark.cluster


def test_readyz_and_ready_node(kube_cluster: KubeCluster) -> None:
    kube_cluster.require_local()
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    out = kube_cluster.kubectl("get", "nodes", "--no-headers").stdout.split()
    assert out[:2] == ["devcluster", "Ready"], out
    version = kube_cluster.kube.get("/version")
    assert version["gitVersion"] == versions()["KUBERNETES_VERSION"]


def test_rbac_is_enforced(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    """A service account's token gets 403 for what no Role grants it."""
    token = kube_cluster.kube.post(
        f"/api/v1/namespaces/{kube_namespace}/serviceaccounts/default/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    creds = kube_cluster.kube.creds
    sa = Kube(Credentials(creds.server, creds.ca_file, token=token, insecure=creds.insecure))
    with pytest.raises(ApiError) as err:
        sa.get(f"/api/v1/namespaces/{kube_namespace}/secrets")
    assert err.value.status == 403


def test_garbage_collection_follows_owner_references(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    owner = kube_cluster.kube.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    kube_cluster.kube.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        },
    )
    kube_cluster.kube.delete(f"/api/v1/namespaces/{ns}/configmaps/owner")

    def owned_gone() -> bool:
        return kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{ns}/configmaps/owned") is None

    kube_cluster.wait_for(owned_gone, 60, "the garbage collector to remove the owned object")
