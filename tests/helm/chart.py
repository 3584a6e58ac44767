"""The Helm chart under test and the pinned ``helm`` that renders and installs it.

``helm`` is built by ``cluster/build-helm.sh`` (the version of ``cluster/versions.env``,
cached outside the repository) and runs with its own configuration, cache and data
folders, so that nothing of a user's Helm set-up is read or written. Objects are
compared as the API would see them, with Helm's own labels taken off.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

CHART = ROOT / "deploy" / "helm" / "roomwire"
BUILD = ROOT / "cluster" / "build-helm.sh"
# Labels the chart adds beside those of manifests/ (Helm's conventions).
HELM_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart")
# The control secret of manifests/workload/control-secret.yaml (development only).
KUSTOMIZE_SECRET = "dev-only-replace-me-0123456789abcdef"
# The Redis password of manifests/workload/redis-secret.yaml (development only).
KUSTOMIZE_REDIS_PASSWORD = "dev-only-redis-replace-me-0123456789"
# The values that render the development secrets of manifests/ (the chart generates both).
KUSTOMIZE_SECRETS = {
    "controlSecret.value": KUSTOMIZE_SECRET,
    "redis.auth.password": KUSTOMIZE_REDIS_PASSWORD,
}

Obj = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message has its stderr."""


def build(timeout: float = 1800) -> Path:
    """The folder of the pinned helm, built first when the cache lacks it."""
    out = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise HelmError(f"cluster/build-helm.sh failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Helm:
    exe: Path
    home: Path  # HELM_CONFIG_HOME, HELM_CACHE_HOME and HELM_DATA_HOME live under it
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home)}
        for kind in ("CONFIG", "CACHE", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.home / kind.lower())
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> Any:
        """``helm ARGS``; a ``CompletedProcess[str]``. Raises ``HelmError`` on failure
        when ``check``."""
        out = subprocess.run(
            [str(self.exe), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and out.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
        return out

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        namespace: str = "roomwire",
        crds: bool = True,
        release: str = "roomwire",
    ) -> str:
        """``helm template`` of the chart with ``--set`` values (rendered offline: no
        lookups reach a cluster)."""
        args = ["template", release, str(CHART), "--namespace", namespace]
        if crds:
            args.append("--include-crds")
        return str(self.run(*args, *sets(values or {})).stdout)


def sets(values: Mapping[str, Any]) -> list[str]:
    """``--set``/``--set-string`` arguments: strings stay strings, the rest is typed."""
    args = []
    for k, v in values.items():
        flag = "--set-string" if isinstance(v, str) else "--set"
        args += [flag, f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return args


def load_all(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(o: Obj) -> tuple[str, str, str]:
    meta = o.get("metadata") or {}
    return (str(o["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


def without_helm_labels(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    """The objects by (kind, namespace, name), Helm's labels removed from each, and each
    container's env in name order: the API merges env by name, and kustomize's patches
    put theirs first (the order matters only to ``$(VAR)`` references in env values,
    of which neither container has any)."""
    out = {}
    for o in copy.deepcopy(objs):
        labels = o.get("metadata", {}).get("labels")
        if labels is not None:
            for name in HELM_LABELS:
                labels.pop(name, None)
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                c["env"] = sorted(c.get("env") or [], key=lambda e: str(e["name"]))
        out[key(o)] = o
    return out


def env_of(obj: Obj, container: str) -> dict[str, Any]:
    """A Deployment's or Pod's container's env, by name: the value, or the ``valueFrom``."""
    spec = obj["spec"]["template"]["spec"] if obj.get("kind") == "Deployment" else obj["spec"]
    c = next(c for c in spec["containers"] if c["name"] == container)
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}
