"""The node agent's podman runtime, its pure parts: resource quantities, the effective
securityContext and the kubelet's runAsNonRoot check, and the ``podman run`` command a
container spec becomes. No podman runs here (``test_podman_e2e.py`` runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.kube import Obj
from devcluster.node_agent.runtime import (
    PodFiles,
    container_name,
    non_root_refusal,
    podman_run_argv,
    quantity,
    resource_args,
    runtime_name,
    security_args,
    security_context,
)


def pod(containers: list[Obj], sc: Obj | None = None) -> Obj:
    spec: Obj = {"containers": containers}
    if sc is not None:
        spec["securityContext"] = sc
    meta = {"name": "signaling-abc", "namespace": "roomwire", "uid": "0123456789abcdef"}
    return {"metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("1", 1.0),
        ("0.5", 0.5),
        ("128Mi", 128 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("500k", 500_000),
        ("1e3", 1000.0),
        (2, 2.0),
    ],
)
def test_quantity(text: object, value: float) -> None:
    assert quantity(text) == value


def test_resources_become_memory_cpus_and_shares() -> None:
    requests, limits = {"cpu": "250m", "memory": "256Mi"}, {"memory": "1Gi"}
    spec: Obj = {"resources": {"requests": requests, "limits": limits}}
    assert resource_args(spec) == ["--memory=1073741824", "--cpu-shares=256"]
    spec = {"resources": {"limits": {"cpu": "1500m"}}}  # requests default to the limits
    assert resource_args(spec) == ["--cpus=1.5", "--cpu-shares=1536"]
    assert resource_args({}) == []
    assert resource_args({"resources": {"requests": {"cpu": "1m"}}}) == ["--cpu-shares=2"]


def test_container_security_context_over_the_pods() -> None:
    c = {"name": "c", "securityContext": {"runAsUser": 5, "readOnlyRootFilesystem": True}}
    p = pod([c], {"runAsUser": 10001, "runAsNonRoot": True, "fsGroup": 2000})
    assert security_context(p, c) == {
        "runAsUser": 5,
        "runAsNonRoot": True,
        "fsGroup": 2000,
        "readOnlyRootFilesystem": True,
    }


def test_security_args_as_the_manifests_ask() -> None:
    sc = {
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "supplementalGroups": [3000],
    }
    assert security_args(sc) == [
        "--user=10001:10001",
        "--group-add=3000",
        "--cap-drop=ALL",
        "--cap-add=NET_BIND_SERVICE",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--read-only-tmpfs=false",
    ]
    assert security_args({}) == []
    assert security_args({"runAsUser": 0}) == ["--user=0"]


@pytest.mark.parametrize(
    ("sc", "image_user", "refused"),
    [
        ({}, "", None),  # no runAsNonRoot: root is allowed
        ({"runAsNonRoot": True}, "10001:10001", None),
        ({"runAsNonRoot": True}, "", "image will run as root"),
        ({"runAsNonRoot": True}, "0", "image will run as root"),
        ({"runAsNonRoot": True}, "app", "non-numeric user (app)"),
        ({"runAsNonRoot": True, "runAsUser": 10001}, "app", None),
        ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "runAsUser breaks non-root"),
    ],
)
def test_run_as_non_root_is_checked_like_the_kubelet(
    sc: Obj, image_user: str, refused: str | None
) -> None:
    why = non_root_refusal(sc, image_user)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_podman_run_argv(tmp_path: Path) -> None:
    (tmp_path / "serviceaccount").mkdir()
    etc = tmp_path / "etc"
    c = {
        "name": "operator",
        "image": "roomwire/operator:0.1.0",
        "command": ["kopf"],
        "args": ["run", "--liveness=http://$(POD_IP):8081/healthz"],
        "securityContext": {"readOnlyRootFilesystem": True},
        "resources": {"limits": {"memory": "256Mi"}},
    }
    p = pod([c], {"runAsUser": 10001, "runAsNonRoot": True})
    argv = podman_run_argv(
        p,
        c,
        image="roomwire/operator:0.1.0",
        env_names=["POD_IP", "KUBECONFIG"],
        files=PodFiles(tmp_path, etc, "meetingroom-operator-x"),
        labels={"io.roomwire.devcluster.cluster": "k"},
        expand=lambda w: w.replace("$(POD_IP)", "127.0.9.5"),
    )
    name = container_name(p, c)
    assert name == "k8s_operator_signaling-abc_roomwire_01234567"
    assert argv[:2] == ["run", f"--name={name}"]
    for opt in (
        "--network=host",
        "--pull=never",
        "--hostname=meetingroom-operator-x",
        "--log-driver=passthrough",
        "--label=io.roomwire.devcluster.cluster=k",
        "--label=io.kubernetes.pod.name=signaling-abc",
        f"--volume={etc / 'resolv.conf'}:/etc/resolv.conf:ro",
        f"--volume={etc / 'hosts'}:/etc/hosts:ro",
        f"--volume={tmp_path / 'serviceaccount'}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        f"--volume={tmp_path}:{tmp_path}:ro",
        "--user=10001",
        "--read-only",
        "--memory=268435456",
        "--env=POD_IP",
        "--env=KUBECONFIG",
        '--entrypoint=["kopf"]',
    ):
        assert opt in argv, opt
    # values never on the command line, only names; the image, then the args expanded
    assert not any("=127.0.9.5" in a for a in argv if a.startswith("--env"))
    i = argv.index("roomwire/operator:0.1.0")
    assert argv[i + 1 :] == ["run", "--liveness=http://127.0.9.5:8081/healthz"]


def test_args_alone_keep_the_images_entrypoint(tmp_path: Path) -> None:
    c: Obj = {"name": "signaling", "image": "roomwire/signaling:0.1.0", "args": ["serve"]}
    argv = podman_run_argv(
        pod([c]), c, image=str(c["image"]), env_names=[], files=PodFiles(tmp_path, None, "h"),
        labels={},
    )  # fmt: skip
    assert not any(a.startswith("--entrypoint") for a in argv)
    assert argv[-2:] == ["roomwire/signaling:0.1.0", "serve"]
    assert not any("/etc/resolv.conf" in a for a in argv)  # no cluster DNS: the image's


def test_runtime_name() -> None:
    assert runtime_name({}) == "process"
    assert runtime_name({"DEVCLUSTER_RUNTIME": "podman"}) == "podman"
    with pytest.raises(ValueError, match="DEVCLUSTER_RUNTIME"):
        runtime_name({"DEVCLUSTER_RUNTIME": "docker"})
