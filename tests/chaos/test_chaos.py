"""Chaos on the local cluster: faults under clients that keep signaling (issue 12, item 8).

One deployment for the module: the shipped workload (3 signaling pods) and operator
(``manifests/``, adapted only to a test namespace, a test Redis and fast operator loops,
scaling off so that the pod count is the test's), the CRD from ``crds/``, a real
``redis-server``. Each test connects ``CLIENTS`` fresh clients (rooms of two, the two
peers straight on two different pods), lets them relay numbered frames (``Load``), injects
one fault, waits until every sender's frames are acked again, stops, and checks the
promises of docs/protocol.md: no acked frame lost, none delivered twice, in order, ``seq``
gapless, every resume a resume. Each asserts its bound and prints its row of the table
in docs/reliability.md.

The faults, in order (each test leaves the deployment whole for the next):

1. ``kill -9`` of a signaling pod's process under load;
2. Redis paused (SIGSTOP) for ``PAUSE_S``, then SIGCONT;
3. Redis restarted (its data gone: no persistence, as shipped);
4. the operator killed (``kill -9``) while a rebalance wave is in flight;
5. the API server killed and restarted;
6. the node agent restarted (it stops every pod, a new agent starts them again).

Nothing is faked. Opt-in: ``-m cluster``. Short by default (12 clients, about 3 s of
steady load around each fault); ``make chaos`` runs the long mode
(``ROOMWIRE_CHAOS_CLIENTS``, ``ROOMWIRE_CHAOS_STEADY_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from devcluster.pytest_plugin import KubeCluster
from roomwire_contract import keys
from tests.conftest import RedisServer
from tests.operator.harness import (
    CRD,
    ROOT,
    Obj,
    kustomize,
    operator_objects,
    workload_objects,
)
from tests.support import eventually

from .harness import CLIENTS, STEADY_S, Load, Outcome, Signaler, connect, disconnect

pytestmark = pytest.mark.cluster

SIGNALING = "app.kubernetes.io/name=signaling"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"
PODS = 3
PAUSE_S = float(os.environ.get("ROOMWIRE_CHAOS_PAUSE_S", "12"))  # past the 10 s heartbeat TTL
OPERATOR_ENV = {
    "ROOMWIRE_SCALING_ENABLED": "false",
    "ROOMWIRE_MOVE_WINDOW_MS": "4000",
    "ROOMWIRE_MOVE_BATCH": "2",
    "ROOMWIRE_MOVE_TIMEOUT_S": "10",
}
TABLE: list[dict[str, Any]] = []
SIGNALING_ENV = {"SIGNALING_LOG_LEVEL": os.environ.get("ROOMWIRE_CHAOS_LOG_LEVEL", "WARNING")}


@dataclass
class Stack:
    cluster: KubeCluster
    ns: str
    redis: RedisServer
    redis_url: str
    pods: int = PODS
    notes: dict[str, Any] = field(default_factory=dict)

    def ready(self, selector: str = SIGNALING) -> list[Obj]:
        return self.cluster.ready_pods(self.ns, selector)

    def direct_urls(self) -> list[str]:
        return [f"ws://{self.cluster.local_ip(p)}:8080/ws" for p in self.ready()]

    def service_url(self) -> str:
        host, port = self.cluster.service_address(self.ns, "signaling", 80, timeout=5)
        return f"ws://{host}:{port}/ws"

    async def lookup(self) -> str:
        return await asyncio.to_thread(self.service_url)

    def pid(self, pod: Obj, container: str) -> int:
        """The container's process, as the node agent records it."""
        assert self.cluster.state_dir is not None
        uid = pod["metadata"]["uid"]
        path = self.cluster.state_dir / "pids" / f"pod-{uid}-{container}.json"
        return int(json.loads(path.read_text())["pid"])

    def restarts(self, selector: str) -> int:
        return sum(
            int(cs.get("restartCount", 0))
            for p in self.cluster.pods(self.ns, selector)
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        )

    def serving(self) -> bool:
        """Every signaling pod Ready and answering ``/readyz`` at its address as the
        API shows it (a status can be stale a moment: a new node agent's pods)."""
        pods = self.ready()
        return len(pods) == self.pods and all(
            _answers(f"http://{self.cluster.local_ip(p)}:8080/readyz") for p in pods
        )

    def whole(self, timeout: float = 90) -> None:
        """Every signaling pod and the operator Ready again."""
        self.cluster.wait_for(self.serving, timeout, "every signaling pod serving")
        self.cluster.wait_ready_pods(self.ns, OPERATOR, 1, timeout)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status) == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(kube_cluster: KubeCluster, redis_server: RedisServer) -> Iterator[Stack]:
    kube_cluster.require_local()
    crd: Obj = yaml.safe_load(CRD.read_text())
    kube_cluster.apply(crd)
    ns = f"chaos-{secrets.token_hex(3)}"
    kube_cluster.kube.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    kube_cluster.wait_for(
        lambda: kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
        30,
        f"default ServiceAccount in {ns}",
    )
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{1 + sum(ns.encode()) % 15}"
    workload = kustomize(kube_cluster.kubectl, ROOT / "manifests" / "workload")
    for o in workload_objects(workload, ns, redis_url, PODS, env=SIGNALING_ENV):
        kube_cluster.apply(o)
    operator = kustomize(kube_cluster.kubectl, ROOT / "manifests" / "operator")
    for o in operator_objects(operator, ns, redis_url, OPERATOR_ENV):
        kube_cluster.apply(o)
    s = Stack(kube_cluster, ns, redis_server, redis_url)
    s.whole()
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        print_table()
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def print_table() -> None:
    if not TABLE:
        return
    cols = ["fault", *Outcome.__dataclass_fields__]
    print("\nchaos table:", json.dumps({"clients": CLIENTS, "steady_s": STEADY_S}))
    print(" | ".join([*cols, "times"]))
    for row in TABLE:
        times = {k: v for k, v in row.items() if k not in cols}
        print(" | ".join([*(str(row[c]) for c in cols), json.dumps(times)]))


async def run_scenario(
    stack: Stack, name: str, fault: Callable[[list[Signaler]], Awaitable[dict[str, Any]]]
) -> tuple[Outcome, dict[str, Any], Load]:
    """Clients signaling, the fault, until every sender is acked again, then the count."""
    urls = await asyncio.to_thread(stack.direct_urls)
    service = await stack.lookup()
    prefix = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    clients = await connect(urls, service, stack.lookup, f"{prefix}-{secrets.token_hex(2)}")
    load = Load(clients)
    load.start()
    try:
        await steady(load, STEADY_S)
        t_fault = time.monotonic()
        info = await fault(clients)
        info["fault_s"] = round(time.monotonic() - t_fault, 2)
        await flowing(load, since=time.monotonic(), timeout=120)
        info["flowing_again_s"] = round(time.monotonic() - t_fault, 2)
        await steady(load, STEADY_S)
        await load.stop()
        out = load.outcome(since=t_fault)
        row = {"fault": name, **out.table_row(), **info}
        TABLE.append(row)
        print(f"chaos {name}: {json.dumps(row)}")
        for c in clients:
            print(f"  {c.peer} on {c.client.joined.get('pod')}: moves {c.moves}, "
                  f"resumes {[round(t, 2) for _, t in c.outages]}, "
                  f"lost connections {len(c.drops)}, errors {c.errors[-2:]}")  # fmt: skip
        if not out.promises_kept():
            await asyncio.to_thread(print_logs, stack, load)
    finally:
        load.stopping.set()
        await disconnect(clients)
    missing = load.missing()
    assert not missing, f"acked frames lost: {dict(list(missing.items())[:3])}"
    return out, info, load


def print_logs(stack: Stack, load: Load) -> None:
    """What the pods and the operator logged, and each client's story, for a failure."""
    for c in load.clients:
        print(
            c.peer, "on", c.client.joined.get("pod"), "moves", c.moves, "outages", c.outages,
            "codes", dict(c.codes), "errors", c.errors[-3:], "missing", load.missing().get(c.peer),
        )  # fmt: skip
    for selector, container in ((SIGNALING, "signaling"), (OPERATOR, "operator")):
        for p in stack.cluster.pods(stack.ns, selector):
            log = stack.cluster.pod_log(stack.ns, p["metadata"]["name"], container)
            print(f"--- {p['metadata']['name']} (last 40 lines)")
            print("\n".join(log.splitlines()[-40:]))


async def steady(load: Load, seconds: float) -> None:
    """Signaling goes on for ``seconds`` (bounded: fails if it does not)."""
    await flowing(load, since=time.monotonic(), timeout=seconds + 60)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await asyncio.sleep(0.1)


async def flowing(load: Load, since: float, timeout: float) -> None:
    """Every sender got an ack after ``since``."""

    async def all_acked() -> bool:
        return len(load.ack_times) == len(load.clients) and all(
            t[-1] > since for t in load.ack_times.values()
        )

    await eventually(all_acked, timeout, "every sender acked again", every=0.1)


def assert_promises(out: Outcome) -> None:
    """What docs/protocol.md promises under every fault."""
    assert out.lost == 0, out
    assert out.duplicates == 0, out
    assert out.out_of_order == 0, out
    assert out.seq_faults == 0, out
    assert out.not_resumed == 0, out
    assert out.failed_clients == 0, out


def on_pod(clients: list[Signaler], pod: str) -> list[Signaler]:
    return [c for c in clients if c.client.joined.get("pod") == pod]


# ---- the faults -------------------------------------------------------------------------


async def test_kill_9_of_a_signaling_pod_under_load(stack: Stack) -> None:
    """Bound: the clients of the killed pod all resume within 15 s (the dead pod's
    heartbeat TTL is 10 s); nothing acked lost; its replacement Ready within 60 s."""
    victim = (await asyncio.to_thread(stack.ready))[0]
    name = victim["metadata"]["name"]
    pid = await asyncio.to_thread(stack.pid, victim, "signaling")
    before = await asyncio.to_thread(stack.restarts, SIGNALING)

    async def kill(clients: list[Signaler]) -> dict[str, Any]:
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        def back() -> bool:
            return stack.restarts(SIGNALING) > before and len(stack.ready()) == stack.pods

        await asyncio.to_thread(stack.cluster.wait_for, back, 60, f"{name} restarted, Ready")
        return {"pod_back_s": round(time.monotonic() - t0, 2)}

    out, info, _load = await run_scenario(stack, "kill -9 of a signaling pod", kill)
    assert_promises(out)
    assert out.resumed_clients >= 1 and out.resume_max_s <= 15, out
    assert info["pod_back_s"] <= 60, info


async def test_redis_paused(stack: Stack) -> None:
    """Bound: frames answered ``unavailable`` and resent with their id arrive once;
    signaling stalls no longer than the pause plus 5 s; no client needs to resume."""

    async def pause(clients: list[Signaler]) -> dict[str, Any]:
        pid = stack.redis.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            until = time.monotonic() + PAUSE_S
            while time.monotonic() < until:
                await asyncio.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)
        return {"paused_s": PAUSE_S}

    out, _info, _ = await run_scenario(stack, f"Redis paused {PAUSE_S:.0f} s", pause)
    assert_promises(out)
    assert out.dropped == 0 and out.stall_max_s <= PAUSE_S + 5, out


async def test_redis_restarted(stack: Stack) -> None:
    """Redis stopped and started again, empty (no persistence, as shipped). Bound: the
    pods restore their sessions; signaling stalls at most 10 s after Redis answers; no
    connection lost; nothing acked lost."""

    async def restart(clients: list[Signaler]) -> dict[str, Any]:
        t0 = time.monotonic()
        await asyncio.to_thread(stack.redis.stop)
        await asyncio.to_thread(stack.redis.start)
        return {"redis_back_s": round(time.monotonic() - t0, 2)}

    out, info, _ = await run_scenario(stack, "Redis restarted (empty)", restart)
    assert_promises(out)
    assert out.dropped == 0 and out.stall_max_s <= info["redis_back_s"] + 10, out


async def test_operator_killed_mid_rebalance(stack: Stack) -> None:
    """A fourth pod comes, the operator starts moving sessions to it and is killed -9
    while the wave is in flight. Bound: its container is restarted and Ready within 60 s,
    every moved client resumes (within 10 s of its order), nothing acked lost."""
    r = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)

    async def kill(clients: list[Signaler]) -> dict[str, Any]:
        await asyncio.to_thread(
            stack.cluster.kubectl,
            "scale", "-n", stack.ns, "deployment/signaling", f"--replicas={stack.pods + 1}",
        )  # fmt: skip
        stack.pods += 1
        await asyncio.to_thread(stack.cluster.wait_ready_pods, stack.ns, SIGNALING, stack.pods)
        t0 = time.monotonic()
        ours = {c.client.session_id for c in clients}

        async def moving_ours() -> bool:
            return bool(ours.intersection(await r.hkeys(keys.OPERATOR_MOVES)))

        await eventually(moving_ours, 60, "a wave in flight moving these clients", every=0.1)
        wave_s = time.monotonic() - t0
        op = (await asyncio.to_thread(stack.ready, OPERATOR))[0]
        before = await asyncio.to_thread(stack.restarts, OPERATOR)
        os.kill(await asyncio.to_thread(stack.pid, op, "operator"), signal.SIGKILL)
        t1 = time.monotonic()

        def back() -> bool:
            return stack.restarts(OPERATOR) > before and len(stack.ready(OPERATOR)) == 1

        await asyncio.to_thread(stack.cluster.wait_for, back, 60, "the operator back, Ready")
        back_s = time.monotonic() - t1
        await eventually(lambda: _no_moves(r), 60, "no moves in flight", every=0.2)
        return {
            "wave_after_s": round(wave_s, 2),
            "operator_back_s": round(back_s, 2),
            "moves_done_s": round(time.monotonic() - t1, 2),
        }

    try:
        out, info, load = await run_scenario(stack, "operator killed mid-rebalance", kill)
    finally:
        await r.aclose()
    moved = sum(c.moves for c in load.clients)
    info["moved"] = moved
    print("moved clients:", moved)
    assert_promises(out)
    assert moved >= 1 and out.resume_max_s <= 10, (out, info)
    assert info["operator_back_s"] <= 60, info


async def _no_moves(r: aioredis.Redis) -> bool:
    return not await r.hlen(keys.OPERATOR_MOVES)


async def test_api_server_restarted(stack: Stack) -> None:
    """kube-apiserver killed -9 and started again. Bound: signaling does not notice (no
    connection lost, no sender waits more than 3 s); the API ready again within 60 s;
    the operator and every pod still Ready afterwards, none restarted."""
    before = await asyncio.to_thread(stack.restarts, "")

    async def restart(clients: list[Signaler]) -> dict[str, Any]:
        took = await asyncio.to_thread(stack.cluster.restart_apiserver, True)
        return {"api_back_s": round(took, 2)}

    out, info, _ = await run_scenario(stack, "API server killed, restarted", restart)
    await asyncio.to_thread(stack.whole, 60)
    assert_promises(out)
    assert out.dropped == 0 and out.stall_max_s <= 3, out
    assert info["api_back_s"] <= 60, info
    assert await asyncio.to_thread(stack.restarts, "") == before


async def test_node_agent_restarted(stack: Stack) -> None:
    """The node agent restarted (SIGTERM, then started again). The local cluster's agent
    is kubelet, kube-proxy and DNS in one process, and it stops its pods when it stops
    (a real kubelet would leave them running): every pod drains at once, the Service is
    gone until the new agent serves, then every pod starts again. Bound: every client
    resumes within the 30 s grace period that keeps its session (from the order to
    reconnect, or the lost connection, to ``joined``); nothing acked lost."""

    async def restart(clients: list[Signaler]) -> dict[str, Any]:
        took = await asyncio.to_thread(stack.cluster.restart_node_agent)
        t0 = time.monotonic()
        await asyncio.to_thread(stack.whole, 90)
        return {"agent_back_s": round(took, 2), "pods_ready_s": round(time.monotonic() - t0, 2)}

    out, _info, load = await run_scenario(stack, "node agent restarted", restart)
    assert_promises(out)
    assert out.resumed_clients == len(load.clients) and out.resume_max_s <= 30, out


@pytest.fixture(autouse=True)
async def _redis_answers(stack: Stack) -> AsyncIterator[None]:
    """Each test starts with Redis answering (a failed one may have left it stopped)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(stack.redis.proc.pid, signal.SIGCONT)
    if not stack.redis.ping():
        await asyncio.to_thread(stack.redis.start)
    yield
