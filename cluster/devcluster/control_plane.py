"""Start and stop the local cluster: etcd, kube-apiserver, kube-controller-manager, node agent.

Everything binds to loopback on free ports. State lives in one folder (``.cluster/`` by
default): ``kubeconfig``, ``state.json`` (what was started, by PID and start time), ``pki/``,
``logs/``, ``services.json``. ``down()`` stops only the processes recorded there.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .kube import ApiError, Credentials, Kube, wait_for
from .pki import Pki, ensure_pki
from .procs import ProcRef, free_port, rss_bytes, spawn

CLUSTER_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLUSTER_DIR.parent
DEFAULT_STATE = REPO_ROOT / ".cluster"
NODE_NAME = "devcluster"
CONTROLLERS = (
    "deployment,replicaset,statefulset,job,endpointslice,garbagecollector,namespace,"
    "serviceaccount,serviceaccount-token,disruption,ttl-after-finished"
)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
ENV_OVERRIDES = {
    "etcd": "TEST_ASSET_ETCD",
    "kube-apiserver": "TEST_ASSET_KUBE_APISERVER",
    "kube-controller-manager": "TEST_ASSET_KUBE_CONTROLLER_MANAGER",
    "kubectl": "TEST_ASSET_KUBECTL",
}


class ClusterError(Exception):
    """The cluster could not be built, started or reached."""


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (CLUSTER_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def cache_dir() -> Path:
    if os.environ.get("ROOMWIRE_CACHE"):
        return Path(os.environ["ROOMWIRE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "roomwire"


def binaries(build: bool = True, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Where each binary is: KUBEBUILDER_ASSETS / TEST_ASSET_*, else the build cache.

    Builds what is missing (``cluster/build.sh``) when ``build`` is set.
    """

    def resolve() -> dict[str, Path]:
        v = versions()
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        base = (
            Path(assets)
            if assets
            else (cache_dir() / "bin" / f"k8s-{v['KUBERNETES_VERSION']}-etcd-{v['ETCD_VERSION']}")
        )
        found = {}
        for b in BINARIES:
            override = os.environ.get(ENV_OVERRIDES[b])
            found[b] = Path(override) if override else base / b
        return found

    found = resolve()
    missing = [b for b, p in found.items() if not os.access(p, os.X_OK)]
    if missing and build:
        if os.environ.get("KUBEBUILDER_ASSETS"):
            raise ClusterError(f"KUBEBUILDER_ASSETS lacks {', '.join(missing)}")
        say(
            f"building {', '.join(missing)} (pinned {versions()['KUBERNETES_VERSION']}); "
            "a cold build takes tens of minutes, later runs reuse the cache"
        )
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", str(CLUSTER_DIR / "build.sh")], check=False, stdout=subprocess.PIPE, text=True
        )
        if proc.returncode != 0:
            raise ClusterError("cluster/build.sh failed (see its output above)")
        say(f"built in {time.monotonic() - t0:.0f} s")
        found = resolve()
        missing = [b for b, p in found.items() if not os.access(p, os.X_OK)]
    if missing:
        raise ClusterError(f"missing binaries: {', '.join(missing)}")
    return found


@dataclass
class ClusterInfo:
    """What a running cluster looks like from outside."""

    state_dir: Path
    kubeconfig: Path
    server: str
    node: str
    proxy_admin: str
    procs: list[ProcRef]
    kubectl: Path | None
    dns: str = ""  # the cluster DNS server, ip:53

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo:
        st = json.loads((state_dir / "state.json").read_text())
        agent = {}
        if (state_dir / "agent.json").exists():
            agent = json.loads((state_dir / "agent.json").read_text())
        return cls(
            state_dir=state_dir,
            kubeconfig=state_dir / "kubeconfig",
            server=str(st["server"]),
            node=str(st["node"]),
            proxy_admin=str(agent.get("proxy_admin", "")),
            procs=[ProcRef.from_json(p) for p in st["procs"]],
            kubectl=Path(st["kubectl"]) if st.get("kubectl") else None,
            dns=str(agent.get("dns", "")),
        )

    def kube(self) -> Kube:
        return Kube.from_kubeconfig(self.kubeconfig)

    def memory(self) -> dict[str, int]:
        return {p.name: rss_bytes(p.pid) for p in self.procs if p.alive()}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Pki, user: str) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_crt)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki.crt(user)),
                    "client-key-data": _b64(pki.key(user)),
                },
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def is_up(state_dir: Path) -> bool:
    try:
        info = ClusterInfo.load(state_dir)
    except (OSError, ValueError, KeyError):
        return False
    return bool(info.procs) and all(p.alive() for p in info.procs)


def up(
    state_dir: Path = DEFAULT_STATE,
    say: Callable[[str], None] = print,
    build: bool = True,
    runtime: str | None = None,
) -> ClusterInfo:
    """Start everything; return once the API is ready, the Node Ready and the proxy serving.
    ``runtime``: how the node agent runs containers, ``process`` or ``podman`` (default:
    ``$DEVCLUSTER_RUNTIME``, else ``process``; see ``devcluster.node_agent.runtime``)."""
    t0 = time.monotonic()
    runtime = runtime or os.environ.get("DEVCLUSTER_RUNTIME") or "process"
    if runtime not in ("process", "podman"):
        raise ClusterError(f"unknown runtime {runtime!r}: process or podman")
    state_dir = state_dir.resolve()
    if is_up(state_dir):
        say(f"already up: {state_dir / 'kubeconfig'}")
        return ClusterInfo.load(state_dir)
    if (state_dir / "state.json").exists():
        down(state_dir, say=lambda m: None)
    bins = binaries(build=build, say=say)
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir()
    for stale in ("pods", "pids", "etcd", "agent.json", "services.json"):
        p = state_dir / stale
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    pki = ensure_pki(state_dir / "pki")
    procs: list[ProcRef] = []
    kube_version = versions()["KUBERNETES_VERSION"]

    def save(server: str) -> None:
        (state_dir / "state.json").write_text(
            json.dumps(
                {
                    "server": server,
                    "node": NODE_NAME,
                    "kubernetes": kube_version,
                    "procs": [p.to_json() for p in procs],
                    "kubectl": str(bins["kubectl"]),
                    "runtime": runtime,
                },
                indent=1,
            )
        )

    def check_alive(ref: ProcRef, log: Path) -> None:
        if not ref.alive():
            raise ClusterError(f"{ref.name} exited; last lines of {log}:\n{_tail(log)}")

    try:
        # etcd
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        _, etcd = spawn("etcd", [
            str(bins["etcd"]), "--name", NODE_NAME, "--data-dir", str(state_dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{NODE_NAME}={peer_url}", "--unsafe-no-fsync",
            "--watch-progress-notify-interval=5s", "--log-level=warn",
        ], logs / "etcd.log")  # fmt: skip
        procs.append(etcd)
        save("")

        # kube-apiserver
        api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        t_start = time.monotonic()
        _, apiserver = spawn("kube-apiserver", [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={api_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={pki.folder}",
            f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_crt}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ], logs / "kube-apiserver.log")  # fmt: skip
        procs.append(apiserver)
        save(server)
        write_kubeconfig(state_dir / "kubeconfig", server, pki, "admin")
        write_kubeconfig(
            state_dir / "controller-manager.kubeconfig", server, pki, "controller-manager"
        )
        write_kubeconfig(state_dir / "node-agent.kubeconfig", server, pki, "node-agent")
        admin = Kube(
            Credentials(server, str(pki.ca_crt), str(pki.crt("admin")), str(pki.key("admin"))),
            timeout=5,
        )

        def api_ready() -> bool:
            check_alive(etcd, logs / "etcd.log")
            check_alive(apiserver, logs / "kube-apiserver.log")
            status, body = admin.request_raw("GET", "/readyz")
            return status == 200 and body.strip() == b"ok"

        wait_for(api_ready, 180, "kube-apiserver /readyz", every=0.2)
        say(f"kube-apiserver ready at {server}, {time.monotonic() - t_start:.1f} s after start")

        # kube-controller-manager and the node agent, side by side
        _, kcm = spawn("kube-controller-manager", [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--concurrent-deployment-syncs=5", "--concurrent-replicaset-syncs=5",
            "--v=1",
        ], logs / "kube-controller-manager.log")  # fmt: skip
        procs.append(kcm)
        env = dict(os.environ)
        env["DEVCLUSTER_KUBE_VERSION"] = kube_version
        env["DEVCLUSTER_RUNTIME"] = runtime
        _, agent = spawn("node-agent", [
            sys.executable, "-m", "devcluster", "--state", str(state_dir), "agent",
        ], logs / "node-agent.log", env=env, cwd=REPO_ROOT)  # fmt: skip
        procs.append(agent)
        save(server)

        def node_ready() -> bool:
            check_alive(agent, logs / "node-agent.log")
            node = admin.get_or_none(f"/api/v1/nodes/{NODE_NAME}")
            conds = (node or {}).get("status", {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return ok and (state_dir / "agent.json").exists()

        def controllers_ready() -> bool:
            check_alive(kcm, logs / "kube-controller-manager.log")
            return (
                admin.get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None
            )

        wait_for(node_ready, 60, "the node agent to register a Ready Node", every=0.2)
        wait_for(
            controllers_ready, 90, "kube-controller-manager (default ServiceAccount)", every=0.2
        )
    except (ClusterError, TimeoutError, ApiError, OSError) as e:
        say(f"cluster-up failed: {e}")
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "node-agent"):
            tail = _tail(logs / f"{name}.log", 15)
            if tail:
                say(f"--- {name}.log (last lines)\n{tail}")
        down(state_dir, say=lambda m: None)
        raise ClusterError(str(e)) from e

    bindir = state_dir / "bin"
    bindir.mkdir(exist_ok=True)
    link = bindir / "kubectl"
    link.unlink(missing_ok=True)
    link.symlink_to(bins["kubectl"])
    elapsed = time.monotonic() - t0
    (state_dir / "up-seconds").write_text(f"{elapsed:.1f}\n")
    say(f"cluster up in {elapsed:.1f} s: kubeconfig {state_dir / 'kubeconfig'}; kubectl {link}")
    return ClusterInfo.load(state_dir)


def _runtime(state_file: Path) -> str:
    try:
        return str(json.loads(state_file.read_text()).get("runtime") or "process")
    except (OSError, ValueError, AttributeError):
        return "process"


def down(state_dir: Path = DEFAULT_STATE, say: Callable[[str], None] = print) -> None:
    """Stop what ``up`` started (node agent and its pods first), by recorded PID only."""
    state_dir = state_dir.resolve()
    state_file = state_dir / "state.json"
    if not state_file.exists():
        say("not running")
        return
    try:
        info = ClusterInfo.load(state_dir)
    except (OSError, ValueError, KeyError):
        state_file.unlink(missing_ok=True)
        return
    order = ["node-agent", "kube-controller-manager", "kube-apiserver", "etcd"]
    by_name = {p.name: p for p in info.procs}
    if "node-agent" in by_name:
        by_name["node-agent"].stop(grace=40)
    pids = state_dir / "pids"
    if pids.is_dir():  # pods the agent could not stop (it crashed or was killed)
        for f in pids.glob("*.json"):
            try:
                ref = ProcRef.from_json(json.loads(f.read_text()))
            except (OSError, ValueError, KeyError):
                continue
            ref.stop(grace=5)
            f.unlink(missing_ok=True)
    if _runtime(state_file) == "podman":  # containers outlive a killed `podman run`
        from .podman import remove_cluster_containers

        removed = remove_cluster_containers(state_dir)
        if removed:
            say(f"removed {removed} podman containers the node agent left")
    for name in order[1:]:
        if name in by_name:
            by_name[name].stop(grace=15)
    left = [p for p in info.procs if p.alive()]
    if left:
        raise ClusterError(f"still running: {[(p.name, p.pid) for p in left]}")
    state_file.unlink(missing_ok=True)
    for p in ("agent.json", "services.json"):
        (state_dir / p).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "etcd", ignore_errors=True)
    say(f"cluster down: stopped {len(info.procs)} processes")


def restart(
    state_dir: Path, name: str, kill: bool = False, say: Callable[[str], None] = print
) -> float:
    """Stop one of the cluster's processes and start it again as it was: the same command
    line, environment and working directory (read from ``/proc`` before it stops), its
    log appended to. ``kill``: SIGKILL at once instead of SIGTERM and a grace period
    (not for the node agent: its pods would outlive it, and a new agent does not adopt
    them). Returns the seconds from the stop until it serves again: the API's ``/readyz``
    for ``kube-apiserver``; for ``node-agent``, its ``agent.json`` written anew (the
    service proxy and DNS listen on new addresses) and the Node Ready."""
    state_dir = state_dir.resolve()
    state_file = state_dir / "state.json"
    st = json.loads(state_file.read_text())
    refs = [ProcRef.from_json(p) for p in st["procs"]]
    ref = next((r for r in refs if r.name == name), None)
    if ref is None or not ref.alive():
        raise ClusterError(f"{name} is not running here")
    if kill and name == "node-agent":
        raise ClusterError("the node agent is restarted with SIGTERM: it stops its pods first")
    proc = Path(f"/proc/{ref.pid}")
    argv = [a.decode() for a in proc.joinpath("cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        e.decode().split("=", 1)
        for e in proc.joinpath("environ").read_bytes().split(b"\0")
        if b"=" in e
    )
    cwd = Path(os.readlink(proc / "cwd"))
    if name == "node-agent":
        (state_dir / "agent.json").unlink(missing_ok=True)
    t0 = time.monotonic()
    if kill:
        ref.signal(signal.SIGKILL)
    ref.stop(grace=40 if name == "node-agent" else 15)
    admin = Kube.from_kubeconfig(state_dir / "kubeconfig")
    log = state_dir / "logs" / f"{name}.log"
    # While it is down, its port may be taken a moment by a client's own connection (an
    # ephemeral port, or a client of it connecting to itself): then it exits at once,
    # and is started again once the port is free (a few tries).
    port = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--secure-port=")), 0)
    for attempt in range(1, 6):
        logged = log.stat().st_size if log.exists() else 0
        _, new = spawn(name, argv, log, env=env, cwd=cwd)
        st["procs"] = [(new if r.name == name else r).to_json() for r in refs]
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1))
        tmp.replace(state_file)
        try:
            wait_for(partial(_serving, name, new, admin, state_dir, st["node"]), 120,
                     f"{name} to serve again", every=0.1)  # fmt: skip
            break
        except ClusterError:
            with open(log, "rb") as f:
                f.seek(logged)
                taken = b"address already in use" in f.read()
            if not (taken and port and attempt < 5):
                raise
            say(f"{name}: port {port} taken for now; starting it again")
            wait_for(partial(_bindable, port), 30, f"port {port} free", every=0.2)
    took = time.monotonic() - t0
    say(f"{name} restarted (pid {new.pid}), serving {took:.1f} s after the stop")
    return took


def _serving(name: str, proc: ProcRef, admin: Kube, state_dir: Path, node: str) -> bool:
    """Whether a restarted process serves again (see ``restart``)."""
    if not proc.alive():
        log = state_dir / "logs" / f"{name}.log"
        raise ClusterError(f"{name} exited; last lines of {log}:\n{_tail(log)}")
    try:
        if name == "kube-apiserver":
            status, body = admin.request_raw("GET", "/readyz")
            return status == 200 and body.strip() == b"ok"
        if name == "node-agent":
            got = admin.get_or_none(f"/api/v1/nodes/{node}")
            conds = (got or {}).get("status", {}).get("conditions") or []
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return ready and (state_dir / "agent.json").exists()
    except (ApiError, OSError):
        return False
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def status(state_dir: Path = DEFAULT_STATE) -> dict[str, Any]:
    info = ClusterInfo.load(state_dir)
    return {
        "server": info.server,
        "kubeconfig": str(info.kubeconfig),
        "processes": {
            p.name: {
                "pid": p.pid,
                "alive": p.alive(),
                "rss_mib": round(rss_bytes(p.pid) / 2**20, 1),
            }
            for p in info.procs
        },
        "proxy_admin": info.proxy_admin,
        "dns": info.dns,
    }
