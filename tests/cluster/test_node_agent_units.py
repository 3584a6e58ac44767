"""The node agent's pure parts, one section per module, without a control plane.

Real: loopback sockets (a probe's HTTP server, a listening address the IP pool must skip),
``true``/``false``/``sleep`` processes. Faked: the API (a dict of objects behind the reader
the environment builder is given) and pod objects.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from devcluster.images import ImageMap
from devcluster.kube import Obj
from devcluster.node_agent.binding import binding, wants_binding
from devcluster.node_agent.containers import (
    BASE_ENV_KEYS,
    Container,
    container_argv,
    container_env,
    exec_entry,
    service_account_kubeconfig,
    token_request,
)
from devcluster.node_agent.events import AGENT, pod_event
from devcluster.node_agent.ippool import IpPool, listening_ips
from devcluster.node_agent.node import node_object, node_status
from devcluster.node_agent.probes import ProbeState, probe_state, run_probe
from devcluster.node_agent.status import (
    comparable,
    container_status,
    pod_conditions,
    pod_phase,
    pod_status,
)
from devcluster.node_agent.worker import grace_period, restart_wanted
from devcluster.procs import ProcRef


def _pod(**spec: object) -> Obj:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "uid": "u-1",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "hi"},
        },
        "spec": {"containers": [{"name": "main", "image": "roomwire/signaling:1"}], **spec},
    }


# --------------------------------------------------------------------------- ippool


@pytest.fixture
def pool() -> Iterator[IpPool]:
    p = IpPool()
    yield p
    p.close()


def test_ip_pool_skips_an_address_something_listens_on(pool: IpPool) -> None:
    first = f"127.0.{pool.first}.1"
    with socket.socket() as s:
        s.bind((first, 0))
        s.listen()
        assert first in listening_ips()
        assert pool.allocate() == f"127.0.{pool.first}.2"


def test_ip_pool_block_and_release(pool: IpPool) -> None:
    assert pool.size == 8 * 254
    assert (pool.first - 1) % 8 == 0  # blocks of eight third octets
    a, b = pool.allocate(), pool.allocate()
    assert a != b
    assert all(ip.startswith(f"127.0.{pool.first}.") for ip in (a, b))
    pool.release(a)
    assert a not in [pool.allocate() for _ in range(5)]  # round-robin, not reused at once


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize(
    ("spec", "results", "decided"),
    [
        ({}, [True], True),
        ({}, [False, False], None),
        ({}, [False, False, False], False),
        ({"failureThreshold": 1}, [False], False),
        ({"successThreshold": 2}, [True], None),
        ({"successThreshold": 2}, [True, False, True], None),
        ({"successThreshold": 2}, [True, True], True),
        ({}, [False, False, True, False, False], True),  # a success resets the failures
        ({}, [True, False, False, False], False),
    ],
)
def test_probe_thresholds(spec: Obj, results: list[bool], decided: bool | None) -> None:
    state = ProbeState(spec, 0.0)
    for ok in results:
        state.record(ok)
    assert state.result is decided


def test_probe_state_from_a_container() -> None:
    c = {"readinessProbe": {"initialDelaySeconds": 3, "periodSeconds": 2}, "livenessProbe": {}}
    ready = probe_state(c, "readinessProbe", 100.0)
    assert ready is not None and ready.next_at == 103.0 and ready.period == 2.0
    live = probe_state(c, "livenessProbe", 100.0)
    assert live is not None and live.next_at == 100.0 and live.period == 10.0
    assert probe_state(c, "startupProbe", 100.0) is None


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/healthz" and self.headers["User-Agent"] == "kube-probe/devcluster"
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_probe_by_port_number_and_name(http_port: int) -> None:
    container = {"ports": [{"name": "http", "containerPort": http_port}]}
    ok = {"httpGet": {"path": "/healthz", "port": "http"}}
    assert run_probe(ok, container, "127.0.0.1", {})
    assert run_probe({"httpGet": {"path": "/healthz", "port": http_port}}, {}, "127.0.0.1", {})
    assert not run_probe({"httpGet": {"path": "/other", "port": http_port}}, {}, "127.0.0.1", {})
    assert not run_probe({"httpGet": {"path": "/healthz", "port": "nope"}}, {}, "127.0.0.1", {})


def test_tcp_probe(http_port: int) -> None:
    assert run_probe({"tcpSocket": {"port": http_port}}, {}, "127.0.0.1", {})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: refused
        assert not run_probe({"tcpSocket": {"port": closed}}, {}, "127.0.0.1", {})


def test_exec_probe_with_env_and_enter() -> None:
    check = [sys.executable, "-c", "import os, sys; sys.exit(os.environ['X'] != '1')"]
    assert run_probe({"exec": {"command": check}}, {}, "127.0.0.1", {"X": "1"})
    assert not run_probe({"exec": {"command": check}}, {}, "127.0.0.1", {"X": "2"})
    seen: list[list[str]] = []

    def enter(argv: list[str]) -> list[str]:
        seen.append(argv)
        return ["false"]

    assert not run_probe({"exec": {"command": ["true"]}}, {}, "127.0.0.1", {}, enter)
    assert seen == [["true"]]
    slow = {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 0.2}
    assert not run_probe(slow, {}, "127.0.0.1", {})


def test_a_probe_of_no_known_kind_passes() -> None:
    assert run_probe({"periodSeconds": 1}, {}, "127.0.0.1", {})


# --------------------------------------------------------------------------- containers


def _api() -> dict[str, Obj]:
    secret = base64.b64encode(b"s3cret").decode()
    return {
        "/api/v1/namespaces/shop/configmaps/cfg": {"data": {"MODE": "fast", "LEVEL": "2"}},
        "/api/v1/namespaces/shop/secrets/sec": {"data": {"TOKEN": secret}},
    }


def _env(spec: Obj, pod: Obj | None = None) -> dict[str, str]:
    api = _api()
    return container_env(
        pod or _pod(),
        spec,
        pod_ip="127.0.9.7",
        hostname="web-0",
        node="devcluster",
        kubeconfig="/pods/kubeconfig",
        service_env={"REDIS_SERVICE_HOST": "127.0.9.2", "REDIS_SERVICE_PORT": "6379"},
        read=api.get,
        base={"PATH": "/bin", "HOME": "/root", "SECRET_OF_THE_AGENT": "x"},
    )


def test_env_of_the_pod_and_nothing_else_of_the_agent() -> None:
    env = _env({"name": "main"})
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": "web-0",
        "POD_NAME": "web-0",
        "POD_NAMESPACE": "shop",
        "POD_IP": "127.0.9.7",
        "NODE_NAME": "devcluster",
        "KUBECONFIG": "/pods/kubeconfig",
        "REDIS_SERVICE_HOST": "127.0.9.2",
        "REDIS_SERVICE_PORT": "6379",
    }
    assert "SECRET_OF_THE_AGENT" not in BASE_ENV_KEYS


def test_env_from_refs_and_expansion_in_order() -> None:
    spec = {
        "name": "main",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "sec"}},
            {"configMapRef": {"name": "absent"}},
        ],
        "env": [
            {"name": "URL", "value": "redis://$(REDIS_SERVICE_HOST):$(REDIS_SERVICE_PORT)/0"},
            {"name": "LATER", "value": "$(EARLIER)"},  # not defined yet: kept as written
            {"name": "EARLIER", "value": "x"},
            {"name": "ESCAPED", "value": "$$(POD_IP)"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "EMPTY"},
        ],
    }
    env = _env(spec, _pod(serviceAccountName="web"))
    assert env["CFG_MODE"] == "fast" and env["CFG_LEVEL"] == "2"
    assert env["TOKEN"] == "s3cret" and env["T"] == "s3cret"
    assert env["URL"] == "redis://127.0.9.2:6379/0"
    assert env["LATER"] == "$(EARLIER)" and env["EARLIER"] == "x"
    assert env["ESCAPED"] == "$(POD_IP)"
    assert env["IP"] == "127.0.9.7"  # the loopback address, never the API's alias
    assert env["APP"] == "web"
    assert env["LABELS"] == 'app="web"\ntier="front"'
    assert env["SA"] == "web" and env["NODE"] == "devcluster"
    assert env["M"] == "fast" and env["CPU"] == "0" and env["EMPTY"] == ""
    assert "OPT" not in env


@pytest.mark.parametrize(
    "source",
    [
        {"configMapKeyRef": {"name": "gone", "key": "k"}},
        {"secretKeyRef": {"name": "gone", "key": "k"}},
        {"fieldRef": {"fieldPath": "status.phase"}},
    ],
)
def test_env_that_cannot_be_built(source: Obj) -> None:
    with pytest.raises(ValueError):
        _env({"name": "main", "env": [{"name": "X", "valueFrom": source}]})


def test_argv_from_the_image_map_with_overrides(tmp_path: Path) -> None:
    f = tmp_path / "images.yaml"
    f.write_text("images:\n  - image: roomwire/signaling\n    command: ['{python}', '-m', 's']\n")
    images = ImageMap(f, python="py")
    env = {"PORT": "8080"}
    spec: Obj = {"image": "roomwire/signaling:1", "args": ["serve", "--port", "$(PORT)"]}
    assert container_argv(images, spec, env) == ["py", "-m", "s", "serve", "--port", "8080"]
    spec = {"image": "roomwire/signaling:1", "command": ["{python}", "-c", "$(PORT)"]}
    assert container_argv(images, spec, env) == ["py", "-c", "8080"]
    with pytest.raises(KeyError):
        container_argv(images, {"image": "nginx"}, env)


def test_service_account_kubeconfig_and_token_request() -> None:
    cfg = service_account_kubeconfig("https://127.0.0.1:6443", "/ca.crt", "shop", "web", "tok")
    user = "system:serviceaccount:shop:web"
    assert cfg["users"] == [{"name": user, "user": {"token": "tok"}}]
    assert cfg["contexts"][0]["context"] == {
        "cluster": "devcluster",
        "user": user,
        "namespace": "shop",
    }
    assert cfg["clusters"][0]["cluster"]["certificate-authority"] == "/ca.crt"
    req = token_request(_pod())
    assert req["spec"]["boundObjectRef"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web-0",
        "uid": "u-1",
    }


def test_exec_probes_run_on_the_host_without_pod_namespaces(tmp_path: Path) -> None:
    c = Container({"name": "main"}, tmp_path / "log")
    assert exec_entry(None, tmp_path, c)(["true"]) == ["true"]
    assert exec_entry(None, None, c)(["true"]) == ["true"]


# --------------------------------------------------------------------------- status


def _started(tmp_path: Path, readiness: ProbeState | None = None) -> Container:
    c = Container({"name": "main", "image": "img:1"}, tmp_path / "log", readiness=readiness)
    c.proc = subprocess.Popen(["sleep", "30"])
    c.ref = ProcRef("main", c.proc.pid, 0)
    c.started_at = "T0"
    c.waiting = None
    return c


def _stop(*cs: Container) -> None:
    for c in cs:
        if c.proc is not None:
            c.proc.kill()
            c.proc.wait()


def test_container_status_waiting_running_terminated(tmp_path: Path) -> None:
    waiting = Container({"name": "main", "image": "img:1"}, tmp_path / "log")
    s = container_status(waiting)
    assert s["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (s["ready"], s["started"], s["imageID"]) == (False, False, "")
    running = _started(tmp_path)
    try:
        s = container_status(running)
        assert s["state"] == {"running": {"startedAt": "T0"}}
        assert s["ready"] and s["started"]
        assert s["containerID"] == f"local://{running.ref.pid if running.ref else 0}"
        assert s["imageID"] == "local://img:1"
    finally:
        _stop(running)
    done = Container({"name": "main"}, tmp_path / "log", waiting=None)
    done.terminated = {"exitCode": 1, "reason": "Error"}
    done.last_terminated = {"exitCode": 2, "reason": "Error"}
    s = container_status(done)
    assert s["state"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert s["lastState"] == {"terminated": {"exitCode": 2, "reason": "Error"}}
    done.waiting = ("CrashLoopBackOff", "back-off restarting main")
    assert container_status(done)["state"] == {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting main"}
    }


def test_ready_needs_the_readiness_probe_and_every_gate(tmp_path: Path) -> None:
    probe = ProbeState({}, 0.0)
    c = _started(tmp_path, readiness=probe)
    pod = _pod(readinessGates=[{"conditionType": "rtc.roomwire.io/accepting"}])
    try:
        conds = {x["type"]: x for x in pod_conditions(pod, [c], True, lambda: "T1")}
        assert conds["ContainersReady"]["status"] == "False"
        assert conds["Ready"]["reason"] == "ContainersNotReady"
        assert conds["Ready"]["message"] == "containers with unready status: ['main']"
        probe.record(True)
        conds = {x["type"]: x for x in pod_conditions(pod, [c], True, lambda: "T1")}
        assert conds["ContainersReady"]["status"] == "True"
        assert conds["Ready"]["status"] == "False"
        assert conds["Ready"]["reason"] == "ReadinessGatesNotReady"
        gate = {"type": "rtc.roomwire.io/accepting", "status": "True"}
        pod["status"] = {"conditions": [gate, *conds.values()]}
        after = {x["type"]: x for x in pod_conditions(pod, [c], True, lambda: "T2")}
        assert after["Ready"]["status"] == "True" and "reason" not in after["Ready"]
        assert after["Ready"]["lastTransitionTime"] == "T2"  # it changed
        assert after["Initialized"]["lastTransitionTime"] == "T1"  # it did not
        assert "rtc.roomwire.io/accepting" not in after  # the gate's writer owns it
    finally:
        _stop(c)


def test_no_containers_yet(tmp_path: Path) -> None:
    pod = _pod()
    status = pod_status(
        pod, [], ip=None, start_time="T0", pending=("ErrImageNeverPull", "not in images.yaml")
    )
    assert status["phase"] == "Pending"
    assert "podIP" not in status
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImageNeverPull", "message": "not in images.yaml"}
    }
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["PodReadyToStartContainers"]["status"] == "False"
    assert conds["Ready"]["message"] == "containers with unready status: ['(pending)']"


def test_pod_ip_is_written_as_its_api_alias(tmp_path: Path) -> None:
    status = pod_status(_pod(), [], ip="127.0.9.7", start_time="T0", pending=("A", ""))
    assert status["podIP"] == "198.18.9.7"
    assert status["podIPs"] == [{"ip": "198.18.9.7"}]
    assert status["hostIP"] == "127.0.0.1"


def _exited(tmp_path: Path, code: int | None) -> Container:
    c = Container({"name": f"c{code}"}, tmp_path / "log", waiting=None)
    c.ref = ProcRef("c", 1, 0)
    if code is not None:
        c.terminated = {"exitCode": code}
    return c


@pytest.mark.parametrize(
    ("policy", "codes", "phase"),
    [
        ("Always", [0, 0], "Running"),
        ("Always", [1], "Running"),
        ("OnFailure", [0, 0], "Succeeded"),
        ("OnFailure", [0, 1], "Running"),
        ("Never", [0, 0], "Succeeded"),
        ("Never", [0, 1], "Failed"),
    ],
)
def test_phase_of_exited_containers(
    tmp_path: Path, policy: str, codes: list[int], phase: str
) -> None:
    cs = [_exited(tmp_path, code) for code in codes]
    assert pod_phase(_pod(restartPolicy=policy), cs) == phase


def test_phase_pending_and_running(tmp_path: Path) -> None:
    assert pod_phase(_pod(), []) == "Pending"
    never_started = Container({"name": "b"}, tmp_path / "log")
    assert pod_phase(_pod(), [_exited(tmp_path, 0), never_started]) == "Pending"
    c = _started(tmp_path)
    try:
        assert pod_phase(_pod(restartPolicy="Never"), [c, _exited(tmp_path, 1)]) == "Running"
    finally:
        _stop(c)


def test_comparable_ignores_transition_times_only() -> None:
    def status(at: str, ready: str) -> Obj:
        return {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": at}],
        }

    assert comparable(status("T1", "True")) == comparable(status("T2", "True"))
    assert comparable(status("T1", "True")) != comparable(status("T1", "False"))


# --------------------------------------------------------------------------- worker


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert restart_wanted(policy, code) is restart


def test_grace_period() -> None:
    assert grace_period(None) == 30.0
    assert grace_period(_pod()) == 30.0
    assert grace_period(_pod(terminationGracePeriodSeconds=5)) == 5.0
    deleting = _pod(terminationGracePeriodSeconds=5)
    deleting["metadata"]["deletionGracePeriodSeconds"] = 0
    assert grace_period(deleting) == 0.0  # the deletion's grace wins
    assert grace_period(_pod(), cap=10) == 10.0


# --------------------------------------------------------------------------- binding, node, events


def test_which_pods_are_bound() -> None:
    assert wants_binding(_pod())
    assert wants_binding(_pod(schedulerName="default-scheduler"))
    assert not wants_binding(_pod(schedulerName="other"))
    assert not wants_binding(_pod(nodeName="devcluster"))
    deleting = _pod()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not wants_binding(deleting)
    b = binding(_pod(), "devcluster")
    assert b["target"] == {"apiVersion": "v1", "kind": "Node", "name": "devcluster"}
    assert b["metadata"] == {"name": "web-0", "namespace": "shop", "uid": "u-1"}


def test_node_object_and_status() -> None:
    assert node_object("devcluster")["metadata"]["labels"]["kubernetes.io/hostname"] == (
        "devcluster"
    )
    beat = node_status("devcluster", "T", "v1.35.4", "6.1")
    assert "capacity" not in beat
    ready = [c for c in beat["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True" and ready[0]["lastHeartbeatTime"] == "T"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in beat["addresses"]
    first = node_status("devcluster", "T", "v1.35.4", "6.1", cpus=2, mem_kib=1024)
    assert first["capacity"] == first["allocatable"]
    assert first["capacity"]["cpu"] == "2" and first["capacity"]["memory"] == "1024Ki"


def test_pod_event() -> None:
    ev = pod_event(_pod(), "Warning", "Failed", "no image", "devcluster", "T")
    assert ev["involvedObject"]["uid"] == "u-1"
    assert ev["metadata"] == {"generateName": "web-0.", "namespace": "shop"}
    assert ev["source"] == {"component": AGENT, "host": "devcluster"}
    assert (ev["type"], ev["reason"], ev["firstTimestamp"]) == ("Warning", "Failed", "T")
