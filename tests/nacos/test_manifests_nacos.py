"""The opt-in Nacos overlay on the local cluster, applied as docs/nacos.md says:
``kubectl apply -k manifests/`` then ``kubectl apply -k manifests/nacos/``. The node agent
runs image ``qingpan/rnacos`` as the cached rnacos binary (``cluster/images.yaml``); every
signaling pod registers in it through the ``nacos`` Service (the service proxy carries
both the HTTP and the gRPC port), with its pod name and namespace in the metadata.

Opt-in: ``-m cluster`` (its own local cluster unless ``ROOMWIRE_CLUSTER`` says
otherwise). Nothing is faked."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devcluster.pytest_plugin import KubeCluster
from tests.cluster.objects import deployment_available
from tests.support import ROOT

pytestmark = pytest.mark.cluster

NS = "roomwire"
DEPLOYMENTS = ("meetingroom-operator", "nacos", "redis", "signaling")


def test_signaling_pods_register_in_the_overlay_s_rnacos(
    kube_cluster: KubeCluster, rnacos_bin: Path
) -> None:
    """``rnacos_bin``: the binary the node agent runs is built before the applies."""
    kube_cluster.require_local()
    kube_cluster.wait_for(
        lambda: kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{NS}") is None,
        120,
        f"namespace {NS} gone (a fresh install)",
    )
    started = time.monotonic()
    print(kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests")).stdout)
    print(kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "nacos")).stdout)
    try:

        def every_deployment_available() -> bool:
            items = kube_cluster.kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments")["items"]
            return sorted(
                d["metadata"]["name"] for d in items if deployment_available(d, settled=True)
            ) == sorted(DEPLOYMENTS)

        try:
            kube_cluster.wait_for(every_deployment_available, 180, "every Deployment Available")
        except (AssertionError, TimeoutError):
            for p in kube_cluster.pods(NS):
                print(p["metadata"]["name"], json.dumps(p.get("status"), default=str)[:1500])
            raise
        print(f"every Deployment Available {time.monotonic() - started:.1f} s after the applies")

        host, port = kube_cluster.service_address(NS, "nacos", 8848)

        def instances() -> list[dict[str, Any]]:
            query = urllib.parse.urlencode(
                {"serviceName": "roomwire-signaling", "healthyOnly": "false"}
            )
            url = f"http://{host}:{port}/nacos/v1/ns/instance/list?{query}"
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    return list(json.loads(r.read()).get("hosts") or [])
            except (OSError, urllib.error.HTTPError, ValueError):
                return []

        def every_pod_registered() -> list[dict[str, Any]] | None:
            pods = {
                p["metadata"]["name"]
                for p in kube_cluster.ready_pods(NS, "app.kubernetes.io/name=signaling")
            }
            got = instances()
            return got if pods and {h["metadata"].get("pod") for h in got} == pods else None

        hosts = kube_cluster.wait_for(every_pod_registered, 60, "every signaling pod in Nacos")
        print(f"every signaling pod in Nacos {time.monotonic() - started:.1f} s after the applies")
        for h in hosts:
            print(h["ip"], h["port"], h["weight"], h["metadata"])
            assert h["metadata"]["namespace"] == NS
            assert h["metadata"]["draining"] == "false"
            assert float(h["weight"]) == 100.0
            assert int(h["port"]) == 8080

        # The operator's config center: a document published in the overlay's rnacos is
        # taken live (its log says so), the operator's pod never restarted.
        def operator_log() -> str:
            pods = kube_cluster.pods(NS, "app.kubernetes.io/name=meetingroom-operator")
            return "".join(
                kube_cluster.pod_log(NS, p["metadata"]["name"], "operator") for p in pods
            )

        kube_cluster.wait_for(
            lambda: "config center: listening" in operator_log(), 60, "the operator listening"
        )
        form = urllib.parse.urlencode(
            {"dataId": "roomwire-operator.yaml", "group": "DEFAULT_GROUP",
             "content": "skew_threshold: 1.25\n", "type": "yaml"}
        ).encode()  # fmt: skip
        published = time.monotonic()
        with urllib.request.urlopen(
            urllib.request.Request(f"http://{host}:{port}/nacos/v1/cs/configs", form), timeout=5
        ) as r:
            assert r.read().decode().strip() == "true"
        kube_cluster.wait_for(
            lambda: "config roomwire-operator.yaml applied: skew_threshold=1.25" in operator_log(),
            10,
            "the operator applying its document",
        )
        print(f"the operator applied its document {time.monotonic() - published:.2f} s after")
        restarts = {
            p["metadata"]["name"]: [
                cs.get("restartCount", 0)
                for cs in (p.get("status") or {}).get("containerStatuses") or []
            ]
            for p in kube_cluster.pods(NS)
        }
        assert all(set(r) <= {0} for r in restarts.values()), restarts
    finally:
        kube_cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
