"""Podman as this project drives it (``make images``, the image tests, the node agent's
``podman`` runtime): Debian's podman with runc as the OCI runtime (the default crun refuses
a host with a hybrid cgroup v1 layout), and rlimits a host without ``CAP_SYS_RESOURCE`` can
grant (podman's defaults ask for more open files and processes than such a host's hard
limits, and runc then fails with "error setting rlimit ... operation not permitted")."""

from __future__ import annotations

import hashlib
import json
import re
import resource
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
MAX_NPROC = 32768  # what podman gives conmon, so what runc may hand on

# The images `make images` builds (scripts/build-images.sh), by Dockerfile.
IMAGES = {"workload": "roomwire/signaling", "operator": "roomwire/operator"}


class PodmanError(RuntimeError):
    """podman is missing, or a podman command failed."""


def podman() -> list[str]:
    """The podman command with the project's global options."""
    exe = shutil.which("podman")
    if exe is None:
        raise PodmanError("podman is missing: run `make images` (installs podman and runc)")
    return [exe, "--runtime", "runc"]


def ulimit_args() -> list[str]:
    """``--ulimit`` options within this process' hard limits."""
    out = []
    for name, which, cap in (
        ("nofile", resource.RLIMIT_NOFILE, 1 << 20),
        ("nproc", resource.RLIMIT_NPROC, MAX_NPROC),
    ):
        hard = resource.getrlimit(which)[1]
        n = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        out += ["--ulimit", f"{name}={n}:{n}"]
    return out


def project_version(root: Path = REPO_ROOT) -> str:
    """The one version of every Roomwire distribution (the root ``pyproject.toml``)."""
    text = (root / "pyproject.toml").read_text()
    m = re.search(r'(?m)^version = "([^"]+)"$', text)
    if m is None:
        raise PodmanError("no version in pyproject.toml")
    return m.group(1)


def image_tag(component: str, version: str | None = None) -> str:
    """``workload`` -> ``roomwire/signaling:<version>`` (what ``make images`` tags)."""
    return f"{IMAGES[component]}:{version or project_version()}"


def run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One podman command; PodmanError with its output when it fails and ``check``."""
    cp = subprocess.run(
        [*podman(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and cp.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: {cp.returncode}: {cp.stderr.strip()}")
    return cp


def image_info(image: str) -> dict[str, object] | None:
    """``podman image inspect`` of a local image, or None when podman does not have it."""
    cp = run("image", "inspect", image, check=False)
    if cp.returncode != 0:
        return None
    items = json.loads(cp.stdout or "[]")
    return dict(items[0]) if items else None


# -- the node agent's containers (DEVCLUSTER_RUNTIME=podman), found by their cluster's label
CLUSTER_LABEL = "io.roomwire.devcluster.cluster"


def cluster_key(state_dir: Path) -> str:
    """The label value of a cluster's containers: its state folder, hashed."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


def cluster_containers(state_dir: Path) -> list[str]:
    """IDs of every container, running or not, labelled with this cluster's key."""
    label = f"label={CLUSTER_LABEL}={cluster_key(state_dir)}"
    return run("ps", "--all", "--quiet", "--no-trunc", "--filter", label).stdout.split()


def remove_cluster_containers(state_dir: Path) -> int:
    """``podman rm --force`` of every container of this cluster; how many there were."""
    try:
        ids = cluster_containers(state_dir)
        if ids:
            run("rm", "--force", "--time=0", *ids, check=False, timeout=120)
    except (PodmanError, OSError, subprocess.TimeoutExpired):
        return 0
    return len(ids)
