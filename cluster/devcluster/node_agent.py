"""The node agent: the kubelet's part, for pods that run as local processes.

- Registers one Node and keeps its Ready condition.
- Binds every unscheduled pod (default scheduler) to that Node.
- For each pod bound here, a pod worker: gives the pod its own loopback IP (127.0.x.y),
  starts each container as a local process (``images.yaml`` maps image -> command), passes
  the container's env (downward-API fieldRefs, ConfigMap/Secret refs, a service-account
  kubeconfig in ``KUBECONFIG``), runs startup/readiness/liveness probes (httpGet, tcpSocket,
  exec), computes Ready from container readiness AND every readiness gate, patches the pod
  status, restarts containers per ``restartPolicy``, and on deletion sends SIGTERM, waits
  the grace period, then SIGKILL, and removes the pod.
- An image it does not know: a Warning event, and the pod stays Pending.

Each container runs in a mount and UTS namespace of its own with the pod's
``/etc/resolv.conf`` (the cluster DNS server), ``/etc/hosts`` and hostname, as a kubelet's
pods do (``podns``); ``exec`` probes run inside those namespaces.

What it does not do: volumes, init containers, resource limits, image pulls, preStop hooks
other than ``sleep``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .addresses import LOCAL_IP_ANNOTATION, to_api
from .images import ImageMap
from .kube import ApiError, Informer, Kube, Obj
from .podns import PodNamespaces, namespace_ready, pod_hostname
from .procs import ProcRef, start_time

AGENT = "devcluster-node-agent"
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV")
TICK = 0.2


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listening_ips() -> set[str]:
    """IPv4 addresses with a listening TCP socket on this machine (from /proc/net/tcp)."""
    out: set[str] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # LISTEN
            hexip = fields[1].split(":")[0]
            out.add(".".join(str(b) for b in reversed(bytes.fromhex(hexip))))
    return out


class IpPool:
    """Pod IPs ``127.0.X.Y``, handed out round-robin, never two at once.

    Several clusters may run on one machine (``make cluster-up`` and test sessions), so
    each node agent first claims a block of eight ``X`` values (2,032 addresses) for its
    lifetime with an ``flock`` on a file in the temporary folder; the kernel drops the
    claim when the process ends, however it ends.
    """

    BLOCK = 8

    def __init__(self) -> None:
        self._next = 0
        self._used: set[int] = set()
        self._lock = threading.Lock()
        self._claim: int | None = None
        self.first = 1
        folder = Path(tempfile.gettempdir()) / "devcluster-ip-blocks"
        folder.mkdir(exist_ok=True)
        for k in range(255 // self.BLOCK):
            fd = os.open(folder / f"{k}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._claim = fd
            self.first = 1 + k * self.BLOCK
            return
        raise RuntimeError("every block of pod IPs is claimed by another node agent")

    @property
    def size(self) -> int:
        return self.BLOCK * 254

    def close(self) -> None:
        """Give the block back (also happens when the process ends)."""
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None

    def _ip(self, i: int) -> str:
        return f"127.0.{self.first + i // 254}.{1 + i % 254}"

    def allocate(self) -> str:
        busy = listening_ips()  # also skip addresses that something else already serves on
        with self._lock:
            for _ in range(self.size):
                i = self._next
                self._next = (self._next + 1) % self.size
                if i not in self._used and self._ip(i) not in busy:
                    self._used.add(i)
                    return self._ip(i)
        raise RuntimeError("no pod IP left")

    def release(self, ip: str) -> None:
        parts = ip.split(".")
        with self._lock:
            self._used.discard((int(parts[2]) - self.first) * 254 + int(parts[3]) - 1)


# --------------------------------------------------------------------------- probes


@dataclass
class ProbeState:
    spec: Obj
    next_at: float
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None: not decided yet

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def record(self, ok: bool) -> None:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.result = False


def _port_of(spec: Obj, container: Obj) -> int:
    port = spec.get("port")
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return int(str(port))


def run_probe(
    spec: Obj,
    container: Obj,
    pod_ip: str,
    env: Mapping[str, str],
    enter: Callable[[list[str]], list[str]] = list,
) -> bool:
    """One probe; ``enter`` wraps an ``exec`` probe's command to run in the pod's namespaces."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            h = spec["httpGet"]
            host = h.get("host") or pod_ip
            port = _port_of(h, container)
            conn: http.client.HTTPConnection
            if str(h.get("scheme", "HTTP")).upper() == "HTTPS":
                import ssl

                ctx = ssl._create_unverified_context()
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/devcluster")
                conn.request("GET", h.get("path", "/"), headers=headers)
                status = conn.getresponse().status
                return 200 <= status < 400
            finally:
                conn.close()
        if "tcpSocket" in spec:
            t = spec["tcpSocket"]
            with socket.create_connection(
                (t.get("host") or pod_ip, _port_of(t, container)), timeout=timeout
            ):
                return True
        if "exec" in spec:
            proc = subprocess.run(
                enter([str(a) for a in spec["exec"]["command"]]),
                env=dict(env),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            return proc.returncode == 0
        if "grpc" in spec:
            with socket.create_connection((pod_ip, int(spec["grpc"]["port"])), timeout=timeout):
                return True
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- containers


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

    def status(self) -> Obj:
        state: Obj
        if self.running:
            state = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None and self.waiting is None:
            state = {"terminated": self.terminated}
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        out: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.ref is not None:
            out["containerID"] = f"local://{self.ref.pid}"
            out["imageID"] = f"local://{self.spec.get('image', '')}"
        return out


def _expand(value: str, env: Mapping[str, str]) -> str:
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


# --------------------------------------------------------------------------- pod worker


class PodWorker:
    """Owns one pod's processes for its whole life on this node."""

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        self.agent = agent
        self.kube = agent.kube
        meta = pod["metadata"]
        self.ns = str(meta["namespace"])
        self.name = str(meta["name"])
        self.uid = str(meta["uid"])
        self.latest: Obj | None = pod
        self.gone = False  # the pod object no longer exists
        self.wake = threading.Event()
        self.ip: str | None = None
        self.start_time = now_iso()
        self.containers: list[Container] = []
        self.last_status: Obj | None = None
        self.unknown_image_reported: set[str] = set()
        self.pending_reason: tuple[str, str] = ("ContainerCreating", "")
        self._last_sent = ""
        self._last_error = ""
        self.dir = agent.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.etc: Path | None = None  # the pod's resolv.conf, hosts, nsswitch.conf
        self.thread = threading.Thread(
            target=self._run, name=f"pod {self.ns}/{self.name}", daemon=True
        )

    # -- inputs
    def update(self, pod: Obj | None) -> None:
        if pod is None:
            self.gone = True
        else:
            self.latest = pod
        self.wake.set()

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/pods/{self.name}"

    def log(self, msg: str) -> None:
        self.agent.log(f"{self.ns}/{self.name}: {msg}")

    # -- main loop
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:
            import traceback

            self.log(f"worker crashed: {e!r}\n{traceback.format_exc()}")
            self._kill_all(0)
        finally:
            if self.ip:
                self.agent.ips.release(self.ip)
            self.agent.forget(self.uid)

    def _loop(self) -> None:
        while True:
            self.wake.wait(TICK)
            self.wake.clear()
            pod = self.latest
            if self.agent.stopping.is_set():
                self._kill_all(self._grace(pod, cap=self.agent.shutdown_grace_cap))
                return
            if self.gone or pod is None:
                self._kill_all(2)
                return
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            if not self.containers:
                if not self._prepare(pod):
                    self._patch_status(pod)
                    self.wake.wait(2)
                    continue
            self._step(pod)
            self._patch_status(pod)

    def _prepare(self, pod: Obj) -> bool:
        """Resolve images and env; False (pod stays Pending) if an image is unknown."""
        specs = pod["spec"].get("containers") or []
        unknown = [c for c in specs if self.agent.images.lookup(str(c.get("image", ""))) is None]
        if unknown:
            for c in unknown:
                image = str(c.get("image", ""))
                if image not in self.unknown_image_reported:
                    self.unknown_image_reported.add(image)
                    self.agent.event(
                        pod,
                        "Warning",
                        "Failed",
                        f'Image "{image}" is not in images.yaml: no local command runs it',
                    )
            self.pending_reason = ("ErrImageNeverPull", "image not in images.yaml")
            return False
        if self.ip is None:
            self.ip = self.agent.ips.allocate()
            try:  # where the pod really listens, for readers of the API
                self.kube.patch(
                    self.path, {"metadata": {"annotations": {LOCAL_IP_ANNOTATION: self.ip}}}
                )
            except (ApiError, OSError) as e:
                self.log(f"cannot annotate the local IP: {e}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.agent.pod_namespaces is not None and self.agent.dns_ip is not None:
            self.etc = self.agent.pod_namespaces.write(self.dir, pod, self.ip, self.agent.dns_ip)
        kubeconfig = self._service_account_kubeconfig(pod)
        containers = []
        for spec in specs:
            c = Container(
                spec,
                self.agent.state_dir
                / "logs"
                / "pods"
                / f"{self.ns}_{self.name}_{spec['name']}.log",
            )
            try:
                c.env = self._env(pod, spec, kubeconfig)
            except (ValueError, KeyError, ApiError, OSError) as e:
                self.pending_reason = ("CreateContainerConfigError", str(e))
                return False
            containers.append(c)
        self.containers = containers
        return True

    def _service_account_kubeconfig(self, pod: Obj) -> str | None:
        spec = pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        sa = spec.get("serviceAccountName") or "default"
        try:
            tr = self.kube.post(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": 86400,
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": self.name,
                            "uid": self.uid,
                        },
                    },
                },
            )
        except ApiError as e:
            self.log(f"no service-account token: {e}")
            return None
        token = str(tr["status"]["token"])
        sa_dir = self.dir / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        (sa_dir / "token").write_text(token)
        (sa_dir / "namespace").write_text(self.ns)
        ca = self.agent.ca_file
        (sa_dir / "ca.crt").write_bytes(Path(ca).read_bytes())
        path = self.dir / "kubeconfig"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {
                        "server": self.kube.creds.server,
                        "certificate-authority": str(sa_dir / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": f"system:serviceaccount:{self.ns}:{sa}",
                    "user": {"token": token},
                }
            ],
            "contexts": [
                {
                    "name": "devcluster",
                    "context": {
                        "cluster": "devcluster",
                        "user": f"system:serviceaccount:{self.ns}:{sa}",
                        "namespace": self.ns,
                    },
                }
            ],
            "current-context": "devcluster",
        }
        path.write_text(json.dumps(cfg, indent=1))
        return str(path)

    def _lookup(self, kind: str, name: str, key: str, optional: bool) -> str | None:
        obj = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        if obj is None:
            if optional:
                return None
            raise ValueError(f"{kind[:-1]} {name} not found")
        if kind == "secrets":
            raw = (obj.get("data") or {}).get(key)
            return base64.b64decode(raw).decode() if raw is not None else None
        value = (obj.get("data") or {}).get(key)
        return str(value) if value is not None else None

    def _env(self, pod: Obj, spec: Obj, kubeconfig: str | None) -> dict[str, str]:
        assert self.ip is not None
        env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        env["PYTHONUNBUFFERED"] = "1"
        env["HOSTNAME"] = pod_hostname(pod)
        env["POD_NAME"] = self.name
        env["POD_NAMESPACE"] = self.ns
        env["POD_IP"] = self.ip
        env["NODE_NAME"] = self.agent.node
        if kubeconfig:
            env["KUBECONFIG"] = kubeconfig
        env.update(self.agent.service_env(self.ns))
        for src in spec.get("envFrom") or []:
            prefix = str(src.get("prefix", ""))
            for kind, ref_key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                ref = src.get(ref_key)
                if not ref:
                    continue
                obj = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{ref['name']}")
                for k, v in ((obj or {}).get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        for var in spec.get("env") or []:
            name = str(var["name"])
            if "value" in var:
                env[name] = _expand(str(var["value"]), env)
                continue
            src = var.get("valueFrom") or {}
            value: str | None = None
            if "fieldRef" in src:
                value = field_ref(pod, str(src["fieldRef"]["fieldPath"]), self.ip, self.agent.node)
            elif "configMapKeyRef" in src:
                r = src["configMapKeyRef"]
                value = self._lookup("configmaps", r["name"], r["key"], bool(r.get("optional")))
            elif "secretKeyRef" in src:
                r = src["secretKeyRef"]
                value = self._lookup("secrets", r["name"], r["key"], bool(r.get("optional")))
            elif "resourceFieldRef" in src:
                value = "0"
            if value is not None:
                env[name] = value
            elif "value" not in var and not src:
                env[name] = ""
        return env

    def _start(self, pod: Obj, c: Container) -> None:
        spec = c.spec
        argv = self.agent.images.argv(
            str(spec.get("image", "")),
            [_expand(str(a), c.env) for a in spec.get("command") or []] or None,
            [_expand(str(a), c.env) for a in spec["args"]] if "args" in spec else None,
            expand=lambda word: _expand(word, c.env),
        )
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log, "ab") as out:
            out.write(f"--- {now_iso()} starting {argv!r}\n".encode())
            out.flush()
            if self.etc is not None and self.agent.pod_namespaces is not None:
                argv = self.agent.pod_namespaces.start_argv(argv, self.etc, pod_hostname(pod))
            c.in_pod_namespaces = False
            c.proc = subprocess.Popen(
                argv,
                env=c.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.get("workingDir") or self.dir,
                start_new_session=True,
            )
        c.ref = ProcRef(
            f"pod {self.ns}/{self.name}/{c.name}", c.proc.pid, start_time(c.proc.pid) or 0
        )
        self.agent.record_pid(self.uid, c)
        c.started_at = now_iso()
        c.started_mono = time.monotonic()
        c.terminated = None
        c.waiting = None
        t = time.monotonic()
        if "startupProbe" in spec:
            sp = spec["startupProbe"]
            c.startup = ProbeState(sp, t + float(sp.get("initialDelaySeconds", 0)))
        if "readinessProbe" in spec:
            rp = spec["readinessProbe"]
            c.readiness = ProbeState(rp, t + float(rp.get("initialDelaySeconds", 0)))
        if "livenessProbe" in spec:
            lp = spec["livenessProbe"]
            c.liveness = ProbeState(lp, t + float(lp.get("initialDelaySeconds", 0)))
        self.agent.event(pod, "Normal", "Started", f"Started container {c.name} (pid {c.proc.pid})")

    def _on_exit(self, c: Container, code: int) -> None:
        c.terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": f"local://{c.ref.pid if c.ref else 0}",
        }
        if code < 0:
            c.terminated["signal"] = -code
        c.proc = None
        self.agent.drop_pid(self.uid, c)
        c.startup = c.readiness = c.liveness = None

    def _step(self, pod: Obj) -> None:
        policy = pod["spec"].get("restartPolicy", "Always")
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                code = int(c.proc.returncode)
                self.log(f"container {c.name} exited with {code}")
                self._on_exit(c, code)
            if c.proc is None:
                if c.ref is not None:  # it ran before: restart per restartPolicy, with backoff
                    code = int((c.terminated or {}).get("exitCode", 0))
                    if c.terminated is not None:
                        if not (policy == "Always" or (policy == "OnFailure" and code != 0)):
                            continue
                        ran = time.monotonic() - c.started_mono
                        if ran > 60:
                            c.backoff = 1.0
                        c.next_start = time.monotonic() + c.backoff
                        c.backoff = min(c.backoff * 2, 30.0)
                        c.last_terminated = c.terminated
                        c.terminated = None
                        c.waiting = ("CrashLoopBackOff", f"back-off restarting {c.name}")
                    if time.monotonic() < c.next_start:
                        continue
                    c.restart_count += 1
                try:
                    self._start(pod, c)
                except (OSError, KeyError) as e:
                    c.waiting = ("CreateContainerError", str(e))
                    self.agent.event(pod, "Warning", "Failed", f"cannot start {c.name}: {e}")
                continue
            self._probe(pod, c)

    def _enter(self, c: Container) -> Callable[[list[str]], list[str]]:
        """How an ``exec`` probe of ``c`` runs: inside the container's namespaces."""
        tools, proc = self.agent.pod_namespaces, c.proc
        if self.etc is None or tools is None or proc is None:
            return list
        pid = proc.pid
        return lambda argv: tools.exec_argv(pid, argv)

    def _probe(self, pod: Obj, c: Container) -> None:
        assert self.ip is not None
        if self.etc is not None and not c.in_pod_namespaces:
            # the container's namespaces get the pod's files a few ms after it starts
            if c.proc is None or not namespace_ready(c.proc.pid):
                return
            c.in_pod_namespaces = True
        enter = self._enter(c)
        t = time.monotonic()
        if c.startup is not None and c.startup.result is not True:
            if t >= c.startup.next_at:
                c.startup.next_at = t + c.startup.period
                c.startup.record(run_probe(c.startup.spec, c.spec, self.ip, c.env, enter))
                if c.startup.result is False:
                    self._restart_unhealthy(pod, c, "startup")
            return
        for probe in (c.readiness, c.liveness):
            if probe is not None and t >= probe.next_at:
                probe.next_at = t + probe.period
                probe.record(run_probe(probe.spec, c.spec, self.ip, c.env, enter))
        if c.liveness is not None and c.liveness.result is False:
            self._restart_unhealthy(pod, c, "liveness")

    def _restart_unhealthy(self, pod: Obj, c: Container, which: str) -> None:
        self.agent.event(
            pod, "Warning", "Unhealthy", f"{which} probe failed for {c.name}; killing it"
        )
        self._stop_container(c, self._grace(pod))

    def _grace(self, pod: Obj | None, cap: float | None = None) -> float:
        grace = 30.0
        if pod is not None:
            meta = pod["metadata"]
            if meta.get("deletionGracePeriodSeconds") is not None:
                grace = float(meta["deletionGracePeriodSeconds"])
            elif pod["spec"].get("terminationGracePeriodSeconds") is not None:
                grace = float(pod["spec"]["terminationGracePeriodSeconds"])
        return min(grace, cap) if cap is not None else grace

    def _stop_container(self, c: Container, grace: float) -> None:
        self._stop_many([c], grace)

    def _stop_many(self, cs: list[Container], grace: float) -> None:
        live = [c for c in cs if c.proc is not None and c.proc.poll() is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            c.proc is not None and c.proc.poll() is None for c in live
        ):
            time.sleep(0.05)
        for c in live:
            assert c.proc is not None
            pid = c.proc.pid
            # SIGKILL the whole process group: nothing the container started stays behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            c.proc.wait(10)
        for c in cs:
            if c.proc is not None:
                self._on_exit(c, int(c.proc.returncode))

    def _kill_all(self, grace: float) -> None:
        self._stop_many(self.containers, grace)

    def _terminate(self, pod: Obj) -> None:
        grace = self._grace(pod)
        running = [c for c in self.containers if c.running]
        if running:
            self.agent.event(
                pod, "Normal", "Killing", f"Stopping containers (grace period {grace:.0f}s)"
            )
            for c in running:
                lifecycle = (c.spec.get("lifecycle") or {}).get("preStop") or {}
                if "sleep" in lifecycle:
                    time.sleep(min(float(lifecycle["sleep"].get("seconds", 0)), grace))
        self._stop_many(self.containers, grace)
        self._patch_status(pod)
        with contextlib.suppress(ApiError):
            self.kube.request(
                "DELETE",
                self.path,
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        self.log("terminated and removed")

    # -- status
    def _conditions(self, pod: Obj) -> list[Obj]:
        existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        containers_ready = bool(self.containers) and all(c.ready for c in self.containers)
        gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
        gates_ok = all(existing.get(g, {}).get("status") == "True" for g in gates)
        ready = containers_ready and gates_ok
        if not containers_ready:
            not_ready = [c.name for c in self.containers if not c.ready] or ["(pending)"]
            reason, msg = "ContainersNotReady", f"containers with unready status: {not_ready}"
        elif not gates_ok:
            missing = [g for g in gates if existing.get(g, {}).get("status") != "True"]
            reason, msg = (
                "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate {missing} "
                "does not exist or is False",
            )
        else:
            reason, msg = "", ""
        want = [
            ("PodReadyToStartContainers", self.ip is not None, "", ""),
            ("Initialized", True, "", ""),
            (
                "ContainersReady",
                containers_ready,
                reason if not containers_ready else "",
                msg if not containers_ready else "",
            ),
            ("Ready", ready, reason, msg),
            ("PodScheduled", True, "", ""),
        ]
        out = []
        for ctype, ok, why, text in want:
            status = "True" if ok else "False"
            old = existing.get(ctype)
            since = (
                old["lastTransitionTime"]
                if old and old.get("status") == status and old.get("lastTransitionTime")
                else now_iso()
            )
            cond: Obj = {
                "type": ctype,
                "status": status,
                "lastTransitionTime": since,
                "lastProbeTime": None,
            }
            if why:
                cond["reason"] = why
            if text:
                cond["message"] = text
            out.append(cond)
        return out

    def _phase(self, pod: Obj) -> str:
        if not self.containers or any(c.ref is None for c in self.containers):
            return "Pending"
        if any(c.running for c in self.containers):
            return "Running"
        policy = pod["spec"].get("restartPolicy", "Always")
        codes = [(c.terminated or {}).get("exitCode", 0) for c in self.containers]
        if policy == "Always" or (policy == "OnFailure" and any(codes)):
            return "Running"
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def _patch_status(self, pod: Obj) -> None:
        if self.containers:
            statuses = [c.status() for c in self.containers]
        else:
            reason, msg = self.pending_reason
            statuses = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "lastState": {},
                    "state": {"waiting": {"reason": reason, "message": msg}},
                }
                for c in pod["spec"].get("containers") or []
            ]
        status: Obj = {
            "phase": self._phase(pod),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": self._conditions(pod),
            "containerStatuses": statuses,
        }
        if self.ip:
            status["podIP"] = to_api(self.ip)
            status["podIPs"] = [{"ip": to_api(self.ip)}]
        comparable = json.dumps(
            {
                **status,
                "conditions": [
                    {k: v for k, v in c.items() if k != "lastTransitionTime"}
                    for c in status["conditions"]
                ],
            },
            sort_keys=True,
        )
        if comparable == self._last_sent:
            return
        try:
            self.kube.patch(self.path + "/status", {"status": status}, kind="strategic")
            self._last_sent = comparable
        except ApiError as e:
            if e.not_found:
                self.gone = True
            elif str(e) != self._last_error:  # say it once, keep trying
                self._last_error = str(e)
                self.log(f"status patch failed: {e}")
        except OSError as e:
            self.log(f"status patch failed: {e}")


# --------------------------------------------------------------------------- agent


class NodeAgent:
    def __init__(
        self,
        kube: Kube,
        node: str,
        state_dir: Path,
        images: ImageMap,
        ca_file: str,
        workdir: Path,
        service_env: Callable[[str], dict[str, str]] | None = None,
        log: Callable[[str], None] | None = None,
        ips: IpPool | None = None,
        dns_ip: str | None = None,
    ) -> None:
        """With ``dns_ip`` (the cluster DNS server) every container runs in namespaces of
        its own with the pod's resolv.conf, hosts and hostname; without it, on the host's."""
        self.kube = kube
        self.dns_ip = dns_ip
        self.pod_namespaces = PodNamespaces.find() if dns_ip else None
        self.node = node
        self.state_dir = state_dir
        self.images = images
        self.ca_file = ca_file
        self.workdir = workdir
        self.ips = ips or IpPool()
        self.stopping = threading.Event()
        self.stop_watch = threading.Event()
        self.shutdown_grace_cap = 10.0
        self.workers: dict[str, PodWorker] = {}
        self.bound: set[str] = set()
        self.lock = threading.Lock()
        self._service_env = service_env or (lambda ns: {})
        self._log = log or (lambda m: print(m, flush=True))
        self.pids_dir = state_dir / "pids"
        self.informer: Informer | None = None

    def log(self, msg: str) -> None:
        self._log(f"{now_iso()} node-agent {msg}")

    def service_env(self, ns: str) -> dict[str, str]:
        return self._service_env(ns)

    # -- pid records, so that `devcluster down` finds pods even if the agent died
    def _pid_file(self, uid: str, c: Container) -> Path:
        return self.pids_dir / f"pod-{uid}-{c.name}.json"

    def record_pid(self, uid: str, c: Container) -> None:
        if c.ref is not None:
            self.pids_dir.mkdir(parents=True, exist_ok=True)
            self._pid_file(uid, c).write_text(json.dumps(c.ref.to_json()))

    def drop_pid(self, uid: str, c: Container) -> None:
        self._pid_file(uid, c).unlink(missing_ok=True)

    # -- node
    def register_node(self) -> None:
        cpus = os.cpu_count() or 1
        mem_kib = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.roomwire.io/devcluster": "true",
                },
            },
        }
        try:
            self.kube.post("/api/v1/nodes", node)
        except ApiError as e:
            if not e.conflict:
                raise
        self.heartbeat(cpus, mem_kib)

    def heartbeat(self, cpus: int = 0, mem_kib: int = 0) -> None:
        t = now_iso()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        status: Obj = {
            "conditions": [
                {
                    "type": ty,
                    "status": st,
                    "reason": why,
                    "message": f"devcluster node agent: {why}",
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
                for ty, st, why in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "nodeInfo": {
                "kubeletVersion": os.environ.get("DEVCLUSTER_KUBE_VERSION", "v0.0.0"),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "devcluster://local-processes",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        if cpus:
            cap = {
                "cpu": str(cpus),
                "memory": f"{mem_kib}Ki",
                "pods": "250",
                "ephemeral-storage": "100Gi",
            }
            status["capacity"] = cap
            status["allocatable"] = cap
        self.kube.patch(f"/api/v1/nodes/{self.node}/status", {"status": status}, kind="strategic")

    # -- events
    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        t = now_iso()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": AGENT, "host": self.node},
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
            "reportingComponent": AGENT,
            "reportingInstance": self.node,
        }
        try:
            self.kube.post(f"/api/v1/namespaces/{meta['namespace']}/events", ev)
        except (ApiError, OSError) as e:
            self.log(f"event not recorded: {e}")
        if kind == "Warning":
            self.log(f"{meta['namespace']}/{meta['name']}: {reason}: {message}")

    # -- pods
    def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        if uid in self.bound:
            return
        self.bound.add(uid)
        try:
            self.kube.post(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": uid},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
                },
            )
            self.event(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node}",
            )
        except ApiError as e:
            if not (e.conflict or e.not_found):
                self.bound.discard(uid)
                self.log(f"binding {meta['name']} failed: {e}")

    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        spec = pod.get("spec") or {}
        if kind == "DELETED":
            with self.lock:
                worker = self.workers.get(uid)
            if worker:
                worker.update(None)
            self.bound.discard(uid)
            return
        node = spec.get("nodeName")
        if not node:
            if (
                spec.get("schedulerName") or "default-scheduler"
            ) == "default-scheduler" and not meta.get("deletionTimestamp"):
                self._bind(pod)
            return
        if node != self.node:
            return
        phase = (pod.get("status") or {}).get("phase")
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                if phase in ("Succeeded", "Failed") or self.stopping.is_set():
                    if meta.get("deletionTimestamp"):
                        with contextlib.suppress(ApiError, OSError):
                            self.kube.request(
                                "DELETE",
                                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                            )
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.thread.start()
                return
        worker.update(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def start(self) -> None:
        self.register_node()
        self.informer = Informer(
            self.kube, "/api/v1/pods", self.on_pod, self.stop_watch, name="pods"
        ).start()
        threading.Thread(target=self._heartbeats, name="node heartbeat", daemon=True).start()

    def _heartbeats(self) -> None:
        while not self.stopping.wait(30):
            with contextlib.suppress(ApiError, OSError):
                self.heartbeat()

    def shutdown(self) -> None:
        """Stop every pod's processes (grace capped) and wait for the workers."""
        self.stopping.set()
        self.stop_watch.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        deadline = time.monotonic() + self.shutdown_grace_cap + 10
        for w in workers:
            w.thread.join(max(0.1, deadline - time.monotonic()))
