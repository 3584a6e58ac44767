"""Pod Security ``restricted`` and the NetworkPolicies, checked by the API server.

The namespace ``roomwire`` is created from ``manifests/namespace.yaml`` as shipped: its
labels make the API server's PodSecurity admission enforce ``restricted`` on its pods and
warn about any Deployment whose pod template would break it. Then a server-side apply
in dry-run mode of ``kubectl apply -k manifests/`` (and of the opt-in ``manifests/nacos``
and ``manifests/samples``, and of the Helm chart's renderings) must succeed with no
warning, every Deployment's pod must be admitted as a Pod, and the NetworkPolicies
must pass the API server's validation.

Controls, so that "no warning" means something: a pod template without its
``seccompProfile`` draws the PodSecurity warning on its Deployment and is refused as a
Pod; a NetworkPolicy with a malformed port is refused.

Nothing is faked: the local control plane's kube-apiserver (PodSecurity is one of its
default admission plugins since Kubernetes 1.25; cluster/devcluster/control_plane.py
leaves the default set on). The local cluster does not enforce NetworkPolicies (no
network plugin: pods are processes on loopback addresses): here they are validated,
not exercised. Opt-in: ``-m cluster``; the namespace is deleted at the end (the shipped
manifests' end-to-end test wants to create it afresh).
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import control_plane
from devcluster.pytest_plugin import KubeCluster
from tests.helm.chart import Helm, HelmError, build, load_all
from tests.support import ROOT

pytestmark = pytest.mark.cluster

NS = "roomwire"
CRD = ROOT / "crds" / "rtc.roomwire.io_meetingrooms.yaml"
MANAGER = "roomwire-hardening-test"
Obj = dict[str, Any]


def _kustomize(cluster: KubeCluster, path: Path) -> list[Obj]:
    return load_all(cluster.kubectl("kustomize", str(path)).stdout)


def _dry_run(cluster: KubeCluster, *args: str, stdin: str | None = None) -> Any:
    """``kubectl apply --server-side --dry-run=server ARGS``: the API server runs every
    admission step (PodSecurity among them) and stores nothing."""
    kubectl = cluster.kubectl_path or control_plane.binaries(build=False)["kubectl"]
    return subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
            "apply",
            "--server-side",
            "--dry-run=server",
            f"--field-manager={MANAGER}",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _pod_of(deployment: Obj) -> Obj:
    """The Pod a Deployment's ReplicaSet would create (what enforcement judges)."""
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{deployment['metadata']['name']}-pod-security",
            "namespace": NS,
            "labels": template["metadata"].get("labels", {}),
        },
        "spec": template["spec"],
    }


@pytest.fixture(scope="module")
def restricted_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    kube_cluster.require_local()
    path = f"/api/v1/namespaces/{NS}"
    kube_cluster.wait_for(
        lambda: kube_cluster.kube.get_or_none(path) is None,
        120,
        f"namespace {NS} absent (an earlier test's deletion finished)",
    )
    kube_cluster.apply_yaml(CRD)
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/meetingrooms.rtc.roomwire.io", "--timeout=30s"
    )
    out = kube_cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    print(out.stdout)
    labels = kube_cluster.kube.get(path)["metadata"]["labels"]
    print("namespace labels:", labels)
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    # The operator's pod names its ServiceAccount, which admission looks up.
    sa = ROOT / "manifests" / "operator" / "serviceaccount.yaml"
    kube_cluster.kubectl("apply", "-n", NS, "-f", str(sa))
    yield NS
    kube_cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    kube_cluster.wait_for(
        lambda: kube_cluster.kube.get_or_none(path) is None, 120, f"namespace {NS} deleted"
    )


def _assert_clean(out: Any, objs: list[Obj]) -> None:
    print(out.stdout, out.stderr)
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr.lower(), out.stderr
    assert out.stdout.count("(server dry run)") == len(objs), out.stdout


@pytest.mark.parametrize("overlay", ["", "nacos", "samples"])
def test_kubectl_apply_k_into_a_restricted_namespace_has_no_warning(
    kube_cluster: KubeCluster, restricted_namespace: str, overlay: str
) -> None:
    """The must-show: ``kubectl apply -k manifests/`` (server-side, dry run) into the
    namespace labelled ``pod-security.kubernetes.io/enforce: restricted``: accepted,
    every object, no warning. The same for the opt-in overlays."""
    path = ROOT / "manifests" / overlay if overlay else ROOT / "manifests"
    objs = _kustomize(kube_cluster, path)
    out = _dry_run(kube_cluster, "-k", str(path))
    _assert_clean(out, objs)
    kinds = sorted({o["kind"] for o in objs})
    print(f"manifests/{overlay}: {len(objs)} objects ({', '.join(kinds)}), no warning")
    if overlay != "samples":
        policies = [o["metadata"]["name"] for o in objs if o["kind"] == "NetworkPolicy"]
        print("NetworkPolicies validated:", policies)
        assert {"signaling", "redis", "meetingroom-operator"} <= set(policies)
        for name in policies:
            assert f"networkpolicy.networking.k8s.io/{name} serverside-applied" in out.stdout


@pytest.mark.parametrize("overlay", ["", "nacos"])
def test_every_pod_is_admitted_under_enforce_restricted(
    kube_cluster: KubeCluster, restricted_namespace: str, overlay: str
) -> None:
    """What enforcement judges is the Pod: each Deployment's pod, created as a Pod
    (dry run), is admitted."""
    path = ROOT / "manifests" / overlay if overlay else ROOT / "manifests"
    deployments = [o for o in _kustomize(kube_cluster, path) if o["kind"] == "Deployment"]
    assert len(deployments) == (4 if overlay else 3)
    pods = [_pod_of(d) for d in deployments]
    out = _dry_run(kube_cluster, "-f", "-", stdin=yaml.safe_dump_all(pods))
    _assert_clean(out, pods)


def test_controls_a_pod_off_restricted_is_warned_and_refused_a_bad_policy_refused(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    """PodSecurity is on and judging: the signaling Deployment without its
    seccompProfile draws the warning, and its Pod is refused; a NetworkPolicy with an
    invalid port name is refused by validation."""
    objs = _kustomize(kube_cluster, ROOT / "manifests")
    deployment = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "signaling"
    )
    weak = copy.deepcopy(deployment)
    weak["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile")
    out = _dry_run(kube_cluster, "-f", "-", stdin=yaml.safe_dump(weak))
    print(out.stdout, out.stderr)
    assert out.returncode == 0
    assert 'would violate PodSecurity "restricted:latest"' in out.stderr
    assert "seccompProfile" in out.stderr

    out = _dry_run(kube_cluster, "-f", "-", stdin=yaml.safe_dump(_pod_of(weak)))
    print(out.stdout, out.stderr)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in out.stderr

    policy = copy.deepcopy(
        next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "redis")
    )
    policy["spec"]["ingress"][0]["ports"][0]["port"] = "not_a-port-name!"
    out = _dry_run(kube_cluster, "-f", "-", stdin=yaml.safe_dump(policy))
    print(out.stdout, out.stderr)
    assert out.returncode != 0 and "Invalid value" in out.stderr


@pytest.fixture(scope="module")
def helm_exe() -> Path:
    """The pinned helm (tests/helm builds it; cached outside the repository)."""
    try:
        return build() / "helm"
    except HelmError as e:
        pytest.fail(str(e))


@pytest.mark.parametrize(
    "values",
    [{}, {"nacos.deploy": True, "samples.enabled": True}],
    ids=["defaults", "nacos and samples"],
)
def test_the_chart_renders_into_a_restricted_namespace_with_no_warning(
    kube_cluster: KubeCluster,
    restricted_namespace: str,
    helm_exe: Path,
    tmp_path: Path,
    values: Obj,
) -> None:
    """The chart mirrors manifests/ (tests/helm): its renderings pass the same way."""
    text = Helm(helm_exe, tmp_path / "helm-home").template(values, namespace=NS, crds=False)
    objs = load_all(text)
    out = _dry_run(kube_cluster, "-f", "-", stdin=text)
    _assert_clean(out, objs)
    print(f"chart {values or 'defaults'}: {len(objs)} objects, no warning")
