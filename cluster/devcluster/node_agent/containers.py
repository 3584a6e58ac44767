"""One container as the node agent runs it: its state, its command (``images.yaml``), its
environment (``$(VAR)``, the downward API, ConfigMap and Secret refs, the ServiceAccount's
kubeconfig) and the pod's own ``/etc`` view it runs in (``devcluster.podns``)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..images import ImageMap
from ..kube import Obj
from ..podns import PodNamespaces
from ..procs import ProcRef
from .probes import ProbeState

BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV")

Reader = Callable[[str], Obj | None]
"""GET of an API path: the object, or None when it does not exist."""


@dataclass
class Container:
    spec: Obj
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    ref: ProcRef | None = None
    started_at: str = ""
    restart_count: int = 0
    last_terminated: Obj | None = None
    terminated: Obj | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    next_start: float = 0.0
    started_mono: float = 0.0
    in_pod_namespaces: bool = False  # the pod's /etc files are in place in its namespaces
    runtime: str = "process"  # or "podman" (devcluster.node_agent.runtime)
    container_name: str = ""  # podman's name of the container
    container_id: str = ""  # podman's id, once it runs
    container_pid: int = 0  # its main process, once it runs
    image_id: str = ""  # the local image it runs (podman)
    backoff: float = 1.0
    env: dict[str, str] = field(default_factory=dict)
    startup: ProbeState | None = None
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        return self.running and (self.startup is None or self.startup.result is True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness is None or self.readiness.result is True


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion; ``$$`` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def field_ref(pod: Obj, path: str, pod_ip: str, node: str) -> str:
    meta = pod.get("metadata", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, str] = {
        "metadata.name": str(meta.get("name", "")),
        "metadata.namespace": str(meta.get("namespace", "")),
        "metadata.uid": str(meta.get("uid", "")),
        "spec.nodeName": str(pod.get("spec", {}).get("nodeName") or node),
        "spec.serviceAccountName": str(pod.get("spec", {}).get("serviceAccountName", "")),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ValueError(f"unsupported fieldRef {path}")


def _key_ref(read: Reader, ns: str, kind: str, name: str, key: str, optional: bool) -> str | None:
    obj = read(f"/api/v1/namespaces/{ns}/{kind}/{name}")
    if obj is None:
        if optional:
            return None
        raise ValueError(f"{kind[:-1]} {name} not found")
    if kind == "secrets":
        raw = (obj.get("data") or {}).get(key)
        return base64.b64decode(raw).decode() if raw is not None else None
    value = (obj.get("data") or {}).get(key)
    return str(value) if value is not None else None


def container_env(
    pod: Obj,
    spec: Obj,
    *,
    pod_ip: str,
    hostname: str,
    node: str,
    kubeconfig: str | None,
    service_env: Mapping[str, str],
    read: Reader,
    base: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The environment of container ``spec`` of ``pod``: a few of ``base``'s variables (the
    agent's own), the pod's, ``service_env``, ``envFrom`` and ``env`` in that order, ConfigMaps
    and Secrets read with ``read``. Raises ValueError (a missing ref, a fieldRef not served)."""
    meta = pod["metadata"]
    ns = str(meta["namespace"])
    env = {k: base[k] for k in BASE_ENV_KEYS if k in base}
    env["PYTHONUNBUFFERED"] = "1"
    env["HOSTNAME"] = hostname
    env["POD_NAME"] = str(meta["name"])
    env["POD_NAMESPACE"] = ns
    env["POD_IP"] = pod_ip
    env["NODE_NAME"] = node
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    env.update(service_env)
    for src in spec.get("envFrom") or []:
        prefix = str(src.get("prefix", ""))
        for kind, ref_key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = src.get(ref_key)
            if not ref:
                continue
            obj = read(f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
            for k, v in ((obj or {}).get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else v
    for var in spec.get("env") or []:
        name = str(var["name"])
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        src = var.get("valueFrom") or {}
        value: str | None = None
        if "fieldRef" in src:
            value = field_ref(pod, str(src["fieldRef"]["fieldPath"]), pod_ip, node)
        elif "configMapKeyRef" in src:
            r = src["configMapKeyRef"]
            value = _key_ref(read, ns, "configmaps", r["name"], r["key"], bool(r.get("optional")))
        elif "secretKeyRef" in src:
            r = src["secretKeyRef"]
            value = _key_ref(read, ns, "secrets", r["name"], r["key"], bool(r.get("optional")))
        elif "resourceFieldRef" in src:
            value = "0"
        if value is not None:
            env[name] = value
        elif "value" not in var and not src:
            env[name] = ""
    return env


def container_argv(images: ImageMap, spec: Obj, env: Mapping[str, str]) -> list[str]:
    """The container's program: its image's command from ``images.yaml``, overridden by its
    own ``command``/``args`` as in Kubernetes, ``$(VAR)`` expanded. KeyError: unknown image."""
    return images.argv(
        str(spec.get("image", "")),
        [expand(str(a), env) for a in spec.get("command") or []] or None,
        [expand(str(a), env) for a in spec["args"]] if "args" in spec else None,
        expand=lambda word: expand(word, env),
    )


def exec_entry(
    tools: PodNamespaces | None, etc: Path | None, c: Container
) -> Callable[[list[str]], list[str]]:
    """How an ``exec`` probe of ``c`` runs: inside the container's namespaces, when it has
    them (the pod has its own ``etc``)."""
    proc = c.proc
    if etc is None or tools is None or proc is None:
        return list
    pid = proc.pid
    return lambda argv: tools.exec_argv(pid, argv)


def service_account_kubeconfig(
    server: str, ca_file: str, namespace: str, service_account: str, token: str
) -> Obj:
    """A kubeconfig that authenticates as the ServiceAccount with ``token``."""
    user = f"system:serviceaccount:{namespace}:{service_account}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {"server": server, "certificate-authority": ca_file},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "devcluster",
                "context": {"cluster": "devcluster", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "devcluster",
    }


def token_request(pod: Obj) -> Obj:
    """The TokenRequest for a day's token of the pod's ServiceAccount, bound to the pod."""
    meta = pod["metadata"]
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": 86400,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": str(meta["name"]),
                "uid": str(meta["uid"]),
            },
        },
    }


def write_service_account(
    pod_dir: Path, server: str, ca_file: str, namespace: str, service_account: str, token: str
) -> Path:
    """The ServiceAccount's files in the pod's folder, as a kubelet mounts them
    (``serviceaccount/{token,namespace,ca.crt}``), and a ``kubeconfig`` that uses them."""
    sa_dir = pod_dir / "serviceaccount"
    sa_dir.mkdir(parents=True, exist_ok=True)
    (sa_dir / "token").write_text(token)
    (sa_dir / "namespace").write_text(namespace)
    (sa_dir / "ca.crt").write_bytes(Path(ca_file).read_bytes())
    path = pod_dir / "kubeconfig"
    cfg = service_account_kubeconfig(
        server, str(sa_dir / "ca.crt"), namespace, service_account, token
    )
    path.write_text(json.dumps(cfg, indent=1))
    return path
