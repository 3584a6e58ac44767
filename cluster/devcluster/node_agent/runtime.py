"""How a container runs: as a process of the node, the command ``images.yaml`` maps its image
to (the default, for speed), or, with ``DEVCLUSTER_RUNTIME=podman``, as a podman container of
the image itself when podman has it locally (``make images``; nothing is ever pulled).
Images podman does not have still run as processes (``redis``, ``rnacos``).

A podman container is run the way a kubelet would run it, as far as podman can:

- the host's network (``--network host``): it listens on the pod's own loopback address,
  ``POD_IP``, like a process of the pod; its own UTS namespace with the pod's hostname;
  the pod's ``resolv.conf`` and ``hosts`` bound over the image's; the ServiceAccount's
  files at ``/var/run/secrets/kubernetes.io/serviceaccount`` and the pod's folder
  (``KUBECONFIG``) read-only at its own path;
- ``command`` replaces the image's ENTRYPOINT and ``args`` its CMD (podman drops the CMD
  when the entrypoint is replaced, as Kubernetes does); ``env`` as for a process, without
  the agent's own variables (the image's ``PATH`` stays); values reach podman through its
  environment (``--env NAME``), never its command line;
- ``securityContext`` (the container's over the pod's): ``runAsUser`` with ``runAsGroup``
  (``--user``), ``supplementalGroups`` (``--group-add``), ``runAsNonRoot`` checked against
  the user the container would run as (a non-numeric image user cannot be checked and is
  refused, as by the kubelet), ``readOnlyRootFilesystem`` (``--read-only`` with no tmpfs
  added), ``allowPrivilegeEscalation: false`` (``no-new-privileges``), ``capabilities``,
  ``privileged``;
- ``resources``: ``limits.memory`` (``--memory``), ``limits.cpu`` (``--cpus``),
  ``requests.cpu`` (``--cpu-shares``, the kubelet's 1024 per core);
- output straight into the container's log file (``--log-driver passthrough``); SIGTERM to
  the ``podman run`` client reaches the container's process (``--sig-proxy``), SIGKILL
  goes through ``podman kill``; containers carry the cluster's label, so ``devcluster down``
  removes what a dead agent left.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import podman
from ..kube import Obj
from .containers import Container

RUNTIME_ENV = "DEVCLUSTER_RUNTIME"
RUNTIMES = ("process", "podman")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IMAGE_CACHE_S = 5.0


def runtime_name(env: Mapping[str, str] = os.environ) -> str:
    """``DEVCLUSTER_RUNTIME``: ``process`` (default) or ``podman``; ValueError otherwise."""
    name = env.get(RUNTIME_ENV, "") or "process"
    if name not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={name!r}: one of {', '.join(RUNTIMES)}")
    return name


# -- quantities (Kubernetes' resource.Quantity, the forms manifests use)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: object) -> float:
    """``"250m"`` -> 0.25, ``"1Gi"`` -> 1073741824, ``"1e3"`` -> 1000; ValueError if not one."""
    text = str(value).strip()
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    if text and text[-1] in _DECIMAL:
        return float(text[:-1]) * _DECIMAL[text[-1]]
    return float(text)


def resource_args(spec: Obj) -> list[str]:
    """podman's options for the container's ``resources``."""
    res = spec.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    out = []
    if "memory" in limits:
        out.append(f"--memory={int(quantity(limits['memory']))}")
    if "cpu" in limits:
        out.append(f"--cpus={quantity(limits['cpu']):g}")
    cpu_request = requests.get("cpu", limits.get("cpu"))
    if cpu_request is not None:
        out.append(f"--cpu-shares={max(2, int(quantity(cpu_request) * 1024))}")
    return out


# -- securityContext
def security_context(pod: Obj, spec: Obj) -> Obj:
    """The container's effective securityContext: its own fields over the pod's."""
    pod_sc = pod["spec"].get("securityContext") or {}
    own = spec.get("securityContext") or {}
    merged: Obj = {
        k: pod_sc[k]
        for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups", "fsGroup")
        if k in pod_sc
    }
    merged.update(own)
    return merged


def image_uid(user: str) -> int | None:
    """The uid of an image's ``USER`` (``10001``, ``10001:10001``; empty: root); None when
    it is a name, which cannot be checked without the image's ``/etc/passwd``."""
    name = user.split(":", 1)[0]
    if name == "":
        return 0
    return int(name) if name.isdigit() else None


def non_root_refusal(sc: Obj, image_user: str) -> str | None:
    """Why ``runAsNonRoot`` refuses to start the container, as the kubelet words it; None
    when it may start."""
    if not sc.get("runAsNonRoot"):
        return None
    uid = sc.get("runAsUser")
    if uid is None:
        uid = image_uid(image_user)
        if uid is None:
            return (
                f"container has runAsNonRoot and image has non-numeric user ({image_user}), "
                "cannot verify user is non-root"
            )
    if int(uid) == 0:
        if "runAsUser" in sc:
            return "container's runAsUser breaks non-root policy"
        return "container has runAsNonRoot and image will run as root"
    return None


def security_args(sc: Obj) -> list[str]:
    """podman's options for an effective securityContext."""
    out = []
    if "runAsUser" in sc:  # runAsGroup with it (podman takes no group without a user)
        group = sc.get("runAsGroup")
        out.append(f"--user={sc['runAsUser']}" + (f":{group}" if group is not None else ""))
    groups = [*(sc.get("supplementalGroups") or []), *([sc["fsGroup"]] if "fsGroup" in sc else [])]
    out += [f"--group-add={gid}" for gid in groups]
    if sc.get("privileged"):
        out.append("--privileged")
    caps = sc.get("capabilities") or {}
    out += [f"--cap-drop={c}" for c in caps.get("drop") or []]
    out += [f"--cap-add={c}" for c in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        out.append("--security-opt=no-new-privileges")
    if sc.get("readOnlyRootFilesystem"):
        out += ["--read-only", "--read-only-tmpfs=false"]
    return out


def container_name(pod: Obj, spec: Obj) -> str:
    """The kubelet's naming, ``k8s_<container>_<pod>_<namespace>_<uid>``, shortened."""
    meta = pod["metadata"]
    return f"k8s_{spec['name']}_{meta['name']}_{meta['namespace']}_{str(meta['uid'])[:8]}"


@dataclass(frozen=True)
class PodFiles:
    """What the node agent prepared for the pod on the host."""

    folder: Path  # the pod's state folder (ServiceAccount files, kubeconfig)
    etc: Path | None  # resolv.conf and hosts, when the cluster has its DNS
    hostname: str


def podman_run_argv(
    pod: Obj,
    spec: Obj,
    *,
    image: str,
    env_names: list[str],
    files: PodFiles,
    labels: Mapping[str, str],
    expand: Callable[[str], str] = str,
) -> list[str]:
    """``podman run`` for container ``spec`` of ``pod`` (without the global options)."""
    meta = pod["metadata"]
    argv = [
        "run", f"--name={container_name(pod, spec)}", "--replace", "--rm", "--pull=never",
        "--network=host", "--uts=private", f"--hostname={files.hostname}",
        "--log-driver=passthrough", "--no-healthcheck", "--sig-proxy=true",
    ]  # fmt: skip
    all_labels = {
        **labels,
        "io.kubernetes.pod.namespace": str(meta["namespace"]),
        "io.kubernetes.pod.name": str(meta["name"]),
        "io.kubernetes.pod.uid": str(meta["uid"]),
        "io.kubernetes.container.name": str(spec["name"]),
    }
    argv += [f"--label={k}={v}" for k, v in all_labels.items()]
    if files.etc is not None:
        for name in ("resolv.conf", "hosts"):
            argv.append(f"--volume={files.etc / name}:/etc/{name}:ro")
    sa = files.folder / "serviceaccount"
    if sa.is_dir():
        argv.append(f"--volume={sa}:{SERVICE_ACCOUNT_DIR}:ro")
    argv.append(f"--volume={files.folder}:{files.folder}:ro")
    argv += security_args(security_context(pod, spec))
    argv += resource_args(spec)
    argv += podman.ulimit_args()
    if spec.get("workingDir"):
        argv.append(f"--workdir={spec['workingDir']}")
    argv += [f"--env={name}" for name in env_names]
    command = [expand(str(a)) for a in spec.get("command") or []]
    if command:
        argv.append("--entrypoint=" + json.dumps(command))
    argv.append(image)
    argv += [expand(str(a)) for a in spec.get("args") or []]
    return argv


@dataclass
class PodmanRuntime:
    """Runs containers of the images podman has with ``podman run`` (see the module's
    docstring); one per node agent."""

    state_dir: Path
    log: Callable[[str], None] = print
    _images: dict[str, tuple[float, Obj | None]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return podman.cluster_key(self.state_dir)

    def image(self, image: str) -> Obj | None:
        """``podman image inspect`` of ``image`` (briefly cached), None when podman lacks it."""
        now = time.monotonic()
        hit = self._images.get(image)
        if hit is not None and now - hit[0] < IMAGE_CACHE_S:
            return hit[1]
        try:
            info = podman.image_info(image)
        except (podman.PodmanError, OSError, subprocess.TimeoutExpired) as e:
            self.log(f"podman cannot inspect {image}: {e}")
            info = None
        self._images[image] = (now, info)
        return info

    def refusal(self, pod: Obj, spec: Obj) -> str | None:
        """Why the container may not start (``runAsNonRoot``), or None."""
        info = self.image(str(spec.get("image", ""))) or {}
        user = str((info.get("Config") or {}).get("User") or "")
        return non_root_refusal(security_context(pod, spec), user)

    def argv(
        self, pod: Obj, c: Container, files: PodFiles, expand: Callable[[str], str]
    ) -> list[str]:
        """The ``podman run`` command for ``c``; notes its name and image on it."""
        info = self.image(str(c.spec.get("image", ""))) or {}
        c.image_id = f"sha256:{info.get('Id', '')}"
        c.container_name = container_name(pod, c.spec)
        argv = podman_run_argv(
            pod,
            c.spec,
            image=str(c.spec.get("image", "")),
            env_names=sorted(c.env),
            files=files,
            labels={podman.CLUSTER_LABEL: self.key},
            expand=expand,
        )
        return [*podman.podman(), *argv]

    def process_env(self, c: Container) -> dict[str, str]:
        """podman's own environment: the container's values (named by ``--env``) and what
        podman needs to run."""
        own = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        return {**own, **c.env}

    def entered(self, c: Container) -> bool:
        """True once the container runs (its id and main PID known, for status and exec)."""
        if c.container_id:
            return True
        cp = podman.run(
            "container", "inspect", "--format", "{{.Id}} {{.State.Pid}}", c.container_name,
            check=False, timeout=15,
        )  # fmt: skip
        words = cp.stdout.split()
        if cp.returncode != 0 or len(words) != 2 or words[1] == "0":
            return False
        c.container_id, c.container_pid = words[0], int(words[1])
        return True

    def exec_argv(self, c: Container) -> Callable[[list[str]], list[str]]:
        return lambda argv: [*podman.podman(), "exec", c.container_name, *argv]

    def kill(self, c: Container) -> None:
        """SIGKILL the container (the ``podman run`` client's death would leave it)."""
        if c.container_name:
            with contextlib.suppress(podman.PodmanError, OSError, subprocess.TimeoutExpired):
                podman.run("kill", "--signal=KILL", c.container_name, check=False, timeout=30)

    def remove_all(self) -> int:
        """Remove every container of this cluster (what a dead agent left); how many."""
        return podman.remove_cluster_containers(self.state_dir)
