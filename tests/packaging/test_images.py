"""The images as built by ``make images``, run for real with podman (marker ``images``).

The session builds both images with ``scripts/build-images.sh`` (podman with runc; the
local Debian base made by mmdebstrap when no base image can be pulled; podman's layer
cache makes an unchanged tree a matter of seconds), then runs them as Kubernetes would
with the shipped manifests' ``securityContext``: the image's own user, a read-only root
filesystem (no tmpfs added), all capabilities dropped, no new privileges. Two signaling
containers share a Redis, which is the host's ``redis-server`` on loopback (the session's
``redis_server``; there is no Redis image in this project, and the manifests' Redis runs
as that same program on the local cluster); the containers use the host's network and
listen on loopback. Nothing is faked: a peer on one container relays to a peer on the
other through Redis. Needs root, as podman does here.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster import podman
from signaling.client import Client
from tests.support import ROOT, free_port, wait_until

pytestmark = [pytest.mark.images, pytest.mark.timeout(900)]

# As the manifests ask (manifests/workload/signaling.yaml, manifests/operator/deployment.yaml).
RESTRICTED = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--no-healthcheck",  # Kubernetes does not run HEALTHCHECK; podman would want systemd
]


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """``make images``: both images built (or found in podman's cache); their tags."""
    cp = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-images.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert cp.returncode == 0, f"make images failed:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}"
    tags = {c: podman.image_tag(c) for c in podman.IMAGES}
    for tag in tags.values():
        assert tag in cp.stdout, f"{tag} not in the build's summary:\n{cp.stdout}"
    return tags


Runner = Callable[..., str]


@pytest.fixture()
def run_container(tmp_path: Path) -> Iterator[Runner]:
    """``run_container(image, *args, env={...}) -> name``: a detached container that is
    removed at the end of the test."""
    names: list[str] = []

    def start(image: str, *args: str, env: dict[str, str] | None = None) -> str:
        name = f"rw-test-{secrets.token_hex(4)}"
        envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
        podman.run(
            "run", "--detach", "--name", name, "--network=host", "--pull=never",
            *RESTRICTED, *podman.ulimit_args(), *envs, image, *args,
        )  # fmt: skip
        names.append(name)
        return name

    yield start
    for name in names:
        podman.run("rm", "--force", "--time=2", name, check=False, timeout=30)


def state(name: str) -> dict[str, object]:
    out = podman.run("inspect", "--format", "{{json .State}}", name).stdout
    result: dict[str, object] = json.loads(out)
    return result


def logs(name: str) -> str:
    return podman.run("logs", name, check=False).stdout[-3000:]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return int(r.status) == 200
    except OSError:
        return False


def proc_cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_images_are_tagged_with_the_version_and_run_as_a_non_root_user(
    images: dict[str, str],
) -> None:
    version = podman.project_version()
    for component, tag in images.items():
        info = podman.image_info(tag)
        assert info is not None, tag
        config = info["Config"]
        assert isinstance(config, dict)
        assert tag.endswith(f":{version}")
        assert config["User"] == "10001:10001", (tag, config["User"])
        assert config["Labels"]["org.opencontainers.image.version"] == version
        entry = {"workload": ["signaling"], "operator": ["kopf"]}[component]
        assert config["Entrypoint"] == entry, (tag, config["Entrypoint"])
    operator_cmd = podman.image_info(images["operator"])["Config"]["Cmd"]  # type: ignore[index]
    assert "meetingroom_operator.main" in operator_cmd


async def test_two_signaling_containers_relay_a_frame_through_redis(
    images: dict[str, str], run_container: Runner, redis_url: str
) -> None:
    ports = {"pod-a": free_port(), "pod-b": free_port()}
    names = {
        pod: run_container(
            images["workload"],
            env={
                "SIGNALING_HOST": "127.0.0.1",
                "SIGNALING_PORT": str(port),
                "SIGNALING_POD_ID": pod,
                "SIGNALING_REDIS_URL": redis_url,
            },
        )
        for pod, port in ports.items()
    }

    def both_ready() -> bool:
        for pod, name in names.items():
            if state(name).get("Running") is not True:
                raise AssertionError(f"{pod} is not running:\n{logs(name)}")
        return all(ready(p) for p in ports.values())

    wait_until(both_ready, 60, "both signaling containers ready", every=0.2)

    for pod, name in names.items():
        pid = int(str(state(name)["Pid"]))
        # The container's own process, seen from the host: the image's command, its user.
        cmdline = proc_cmdline(pid)
        assert b"serve" in cmdline and any(w.endswith(b"signaling") for w in cmdline), cmdline
        uids = proc_status(pid)["Uid"].split()
        assert uids[0] != "0" and set(uids) == {"10001"}, (pod, uids)
        assert podman.run("exec", name, "id", "-u").stdout.strip() == "10001"
        # The root filesystem is read-only, and the server runs on it all the same.
        touch = podman.run("exec", name, "touch", "/opt/roomwire/probe", check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch

    alice = Client(f"ws://127.0.0.1:{ports['pod-a']}/ws")
    bob = Client(f"ws://127.0.0.1:{ports['pod-b']}/ws")
    try:
        await alice.connect()
        await alice.join("room-images", "alice")
        await bob.connect()
        await bob.join("room-images", "bob")
        assert (await alice.recv())["type"] == "peer-joined"
        await alice.relay("offer", "bob", {"sdp": "v=0 from a container"}, frame_id="o-1")
        assert await alice.recv() == {"type": "ack", "id": "o-1"}
        got = await bob.recv()
        assert got["type"] == "offer" and got["from"] == "alice"
        assert got["data"] == {"sdp": "v=0 from a container"}
        assert "rn" in got, got  # it crossed pods: through pod-b's inbox in Redis
        await bob.relay("answer", "alice", {"sdp": "v=0 answer"})
        back = await alice.recv()
        assert back["type"] == "answer" and back["from"] == "bob"
    finally:
        await alice.close()
        await bob.close()


def test_operator_image_starts_kopf_with_the_operator_module(
    images: dict[str, str], run_container: Runner
) -> None:
    # The image's entrypoint with the operator's module importable, as user 10001 on a
    # read-only root filesystem (no cluster here: kopf itself is not started).
    name = run_container(images["operator"], "--version")
    wait_until(lambda: state(name).get("Running") is False, 30, "kopf --version to exit")
    assert state(name)["ExitCode"] == 0, logs(name)
    assert "kopf" in logs(name).lower()
    check = podman.run(
        "run", "--rm", "--network=host", "--pull=never", *RESTRICTED, *podman.ulimit_args(),
        "--entrypoint", '["python", "-c"]', images["operator"],
        "import os, meetingroom_operator.main; print(os.getuid())",
    )  # fmt: skip
    assert check.stdout.strip() == "10001", check
