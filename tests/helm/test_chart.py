"""The chart rendered offline (``helm lint``, ``helm template``), against manifests/.

Nothing is faked: the pinned helm renders the chart; the pinned kubectl's kustomize
renders manifests/. No control plane: a chart test that needs one is in
``test_chart_on_cluster.py``.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from devcluster import control_plane
from tests.support import ROOT

from .chart import (
    CHART,
    KUSTOMIZE_SECRETS,
    Helm,
    HelmError,
    env_of,
    key,
    load_all,
    sets,
    without_helm_labels,
)

pytestmark = pytest.mark.cluster

# Values sets that exercise every switch of values.yaml; each must lint and render.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "nacos and samples": {"nacos.deploy": True, "samples.enabled": True},
    "external Redis from a Secret, own control Secret, external Nacos": {
        "redis.deploy": False,
        "redis.urlSecret.name": "my-redis",
        "controlSecret.existingSecret": "my-control",
        "nacos.server": "nacos.infra:8848",
    },
    "resources and image": {
        "redis.deploy": False,
        "redis.url": "rediss://redis.example.internal:6380/2",
        "signaling.image.repository": "registry.example/roomwire/signaling",
        "signaling.image.tag": "0.1.0-rc1",
        "signaling.image.pullPolicy": "Always",
        "signaling.resources.limits.memory": "2Gi",
        "operator.resources.requests.cpu": "200m",
        "operator.perPod": 500,
    },
}


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = control_plane.binaries(build=False)["kubectl"]
    out = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, check=True
    )
    return load_all(out.stdout)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(helm: Helm, name: str) -> None:
    out = helm.run("lint", "--strict", str(CHART), *sets(VALUE_SETS[name]))
    print(out.stdout)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_default_values_render_the_objects_of_manifests(helm: Helm) -> None:
    """``helm template`` with the defaults (and the secrets of manifests/) gives
    the objects of ``kubectl kustomize manifests/`` but the Namespace (``helm install
    --create-namespace``), with Helm's labels beside theirs."""
    rendered = without_helm_labels(load_all(helm.template(KUSTOMIZE_SECRETS)))
    shipped = without_helm_labels(kustomize(ROOT / "manifests"))
    shipped.pop(("Namespace", "", "roomwire"))
    print("objects:", sorted(rendered))
    assert sorted(rendered) == sorted(shipped)
    for k, obj in shipped.items():
        assert rendered[k] == obj, k


def test_nacos_and_samples_render_manifests_nacos_and_samples(helm: Helm) -> None:
    """``nacos.deploy`` gives what ``manifests/nacos`` adds (rnacos and the signaling
    pods' registration); ``samples.enabled`` the rooms of ``manifests/samples``."""
    values = {**KUSTOMIZE_SECRETS, "nacos.deploy": True}
    rendered = without_helm_labels(load_all(helm.template({**values, "samples.enabled": True})))
    shipped = without_helm_labels(kustomize(ROOT / "manifests" / "nacos"))
    samples = without_helm_labels(kustomize(ROOT / "manifests" / "samples"))
    # rnacos comes verbatim (no part-of label: manifests/nacos's kustomization adds it)
    for k in [k for k in shipped if k[2] == "nacos"]:
        shipped[k]["metadata"]["labels"].pop("app.kubernetes.io/part-of")
        shipped[k]["metadata"].pop("namespace")
    for obj in samples.values():
        obj["metadata"].pop("namespace")
    expected = {**shipped, **{key(o): o for o in samples.values()}}
    expected = without_helm_labels(list(expected.values()))
    assert sorted(rendered) == sorted(expected)
    for k, obj in expected.items():
        assert rendered[k] == obj, k


def test_values_reach_the_objects(helm: Helm) -> None:
    objs = {
        key(o): o
        for o in load_all(helm.template(VALUE_SETS["resources and image"], namespace="rw"))
    }
    operator = objs[("Deployment", "rw", "meetingroom-operator")]
    signaling = objs[("Deployment", "rw", "signaling")]
    assert ("Deployment", "rw", "redis") not in objs
    assert env_of(operator, "operator")["ROOMWIRE_PER_POD"] == "500"
    url = "rediss://redis.example.internal:6380/2"
    assert env_of(operator, "operator")["ROOMWIRE_REDIS_URL"] == url
    assert env_of(signaling, "signaling")["SIGNALING_REDIS_URL"] == url
    c = signaling["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example/roomwire/signaling:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"]["limits"]["memory"] == "2Gi"
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "roomwire/operator:0.1.0"
    )

    objs = {key(o): o for o in load_all(helm.template(VALUE_SETS[list(VALUE_SETS)[2]]))}
    assert ("Secret", "roomwire", "roomwire-control") not in objs
    assert ("Deployment", "roomwire", "redis") not in objs
    signaling_env = env_of(objs[("Deployment", "roomwire", "signaling")], "signaling")
    assert signaling_env["SIGNALING_REDIS_URL"] == {
        "secretKeyRef": {"name": "my-redis", "key": "url"}
    }
    assert signaling_env["SIGNALING_CONTROL_SECRET"] == {
        "secretKeyRef": {"name": "my-control", "key": "control-secret"}
    }
    assert signaling_env["SIGNALING_NACOS_SERVER"] == "nacos.infra:8848"


def test_a_generated_control_secret_is_long_and_new_each_render(helm: Helm) -> None:
    """Offline each render makes a new one; on a cluster an upgrade keeps the installed
    one (``test_chart_on_cluster``)."""

    def secret() -> str:
        objs = {key(o): o for o in load_all(helm.template())}
        value = objs[("Secret", "roomwire", "roomwire-control")]["stringData"]["control-secret"]
        return str(value)

    first, second = secret(), secret()
    assert len(first) >= 16 and first != second


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator.perPod": 0}, "perPod"),
        ({"controlSecret.value": "too-short"}, "controlSecret"),
        ({"redis.auth.password": "too-short"}, "password"),
        ({"redis.deploy": False}, "set redis.url or redis.urlSecret.name"),
        ({"redis.url": "http://redis:6379"}, "url"),
        ({"signaling.replicaCount": 3}, "replicaCount"),
    ],
)
def test_bad_values_are_refused_with_a_message(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError) as e:
        helm.template(values)
    print(e.value)
    assert message in str(e.value)


def test_the_crd_has_one_source(helm: Helm, tmp_path: Path) -> None:
    """The chart's crds/ is a link to crds/ at the root; a packaged chart carries the
    file itself, byte for byte."""
    source = ROOT / "crds" / "rtc.roomwire.io_meetingrooms.yaml"
    link = CHART / "crds" / source.name
    assert link.is_symlink() and link.resolve() == source.resolve()
    for name in ("meetingrooms.yaml", "rnacos.yaml", "redis.yaml"):
        assert (CHART / "files" / name).is_symlink()
    out = helm.run("package", str(CHART), "--destination", str(tmp_path))
    print(out.stdout)
    archive = next(tmp_path.glob("roomwire-*.tgz"))
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"roomwire/crds/{source.name}")
        assert member.isfile()
        packed = tar.extractfile(member)
        assert packed is not None and packed.read() == source.read_bytes()
