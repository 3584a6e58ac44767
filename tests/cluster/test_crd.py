"""CustomResourceDefinitions on the real API server: served, validated, status subresource.

A small CRD of the tests' own shows the API server's behaviour; every CRD in ``crds/``
(the project's single source) must also be accepted, become Established and be served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.kube import ApiError
from devcluster.pytest_plugin import KubeCluster

pytestmark = pytest.mark.cluster

CRDS = Path(__file__).resolve().parents[2] / "crds"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.roomwire.io"},
    "spec": {
        "group": "test.roomwire.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _established(kube_cluster: KubeCluster, name: str) -> bool:
    crd = kube_cluster.kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conds = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


def test_crd_is_served_validated_and_has_status(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(WIDGET_CRD)
    kube_cluster.wait_for(
        lambda: _established(kube_cluster, "widgets.test.roomwire.io"), 30, "CRD Established"
    )
    base = f"/apis/test.roomwire.io/v1/namespaces/{kube_namespace}/widgets"
    widget = {"apiVersion": "test.roomwire.io/v1", "kind": "Widget", "metadata": {"name": "w"}}

    def create_ok() -> bool:
        try:
            kube_cluster.kube.post(base, {**widget, "spec": {"size": 2}})
            return True
        except ApiError as e:
            if e.status == 404:  # discovery of a brand-new CRD lags by a moment
                return False
            raise

    kube_cluster.wait_for(create_ok, 30, "the new resource to be served")
    for bad in ({"size": 0}, {}, {"size": "two"}):
        with pytest.raises(ApiError) as err:
            kube_cluster.kube.post(base, {**widget, "metadata": {"name": "bad"}, "spec": bad})
        assert err.value.status == 422

    # status only through the subresource; the main resource ignores it
    kube_cluster.kube.patch(f"{base}/w", {"status": {"phase": "Ignored"}})
    assert "status" not in kube_cluster.kube.get(f"{base}/w") or (
        kube_cluster.kube.get(f"{base}/w")["status"].get("phase") != "Ignored"
    )
    kube_cluster.kube.patch(f"{base}/w/status", {"status": {"phase": "Ready"}})
    got = kube_cluster.kube.get(f"{base}/w")
    assert got["status"]["phase"] == "Ready"
    assert got["metadata"]["generation"] == 1  # a status write is no spec change
    kube_cluster.kube.delete(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{WIDGET_CRD['metadata']['name']}"
    )


def _project_crds() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(CRDS.glob("*.y*ml")) if CRDS.is_dir() else []:
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        ]
    return docs


def test_project_crds_are_established_and_served(kube_cluster: KubeCluster) -> None:
    crds = _project_crds()
    if not crds:
        pytest.skip("crds/ holds no CustomResourceDefinition yet")
    for crd in crds:
        kube_cluster.apply(crd)
    for crd in crds:
        name = crd["metadata"]["name"]
        kube_cluster.wait_for(
            lambda n=name: _established(kube_cluster, n), 30, f"{name} Established"
        )
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            resources = kube_cluster.kube.get(f"/apis/{group}/{version['name']}")["resources"]
            served = {r["name"] for r in resources}
            plural = crd["spec"]["names"]["plural"]
            assert plural in served
            if "status" in (version.get("subresources") or {}):
                assert f"{plural}/status" in served
            # the schema is structural and enforced: spec must be an object
            scope = crd["spec"]["scope"]
            path = f"/apis/{group}/{version['name']}"
            path += "/namespaces/default" if scope == "Namespaced" else ""
            obj = {
                "apiVersion": f"{group}/{version['name']}",
                "kind": crd["spec"]["names"]["kind"],
                "metadata": {"name": "not-valid"},
                "spec": "not-an-object",
            }
            with pytest.raises(ApiError) as err:
                kube_cluster.kube.post(f"{path}/{plural}", obj)
            assert err.value.status in (400, 422)
