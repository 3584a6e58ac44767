"""The operator against the real control plane, with real Redis and real signaling pods.

Nothing is faked: ``devcluster`` runs etcd, kube-apiserver, kube-controller-manager, a
node agent (pods as local processes) and a service proxy; the CRD, the workload and
the operator come from ``crds/`` and ``manifests/`` (kustomize), adapted only to the
test's namespace and Redis; the operator runs as a pod under its own ServiceAccount and
RBAC. Clients are real WebSocket clients on loopback. Opt-in: ``-m cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from devcluster.pytest_plugin import KubeCluster
from meetingroom_operator import constants as c
from meetingroom_operator.planning.rebalance import minimum_moves, skew
from meetingroom_operator.store import Store
from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import RedisServer
from tests.support import eventually

from .harness import (
    CRD,
    ROOT,
    Follower,
    Obj,
    dump,
    in_namespace,
    kustomize,
    operator_objects,
    room,
    workload_objects,
)

pytestmark = pytest.mark.cluster
SIGNALING = f"{c.APP_LABEL}={c.APP_NAME}"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"


@pytest.fixture(scope="session")
def crd(kube_cluster: KubeCluster) -> Obj:
    obj: Obj = yaml.safe_load(CRD.read_text())
    kube_cluster.apply(obj)

    def established() -> bool:
        got = kube_cluster.kube.get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{obj['metadata']['name']}"
        )
        conds = ((got or {}).get("status") or {}).get("conditions") or []
        return any(x["type"] == "Established" and x["status"] == "True" for x in conds)

    kube_cluster.wait_for(established, 30, "MeetingRoom CRD established")
    return obj


@dataclass
class Stack:
    cluster: KubeCluster
    ns: str
    redis_url: str
    workload: list[Obj]
    operator: list[Obj] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True) -> Any:
        return self.cluster.kubectl(*args, check=check)

    def start_operator(self, env: dict[str, str] | None = None) -> None:
        objs = kustomize(self.cluster.kubectl, ROOT / "manifests" / "operator")
        self.operator = operator_objects(objs, self.ns, self.redis_url, env or {})
        for o in self.operator:
            self.cluster.apply(o)
        self.cluster.wait_ready_pods(self.ns, OPERATOR, 1, timeout=60)

    def pods(self) -> list[Obj]:
        return self.cluster.ready_pods(self.ns, SIGNALING)

    def pod_names(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.pods())

    def replicas(self) -> int:
        d = self.cluster.kube.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/signaling")
        return int(d["spec"]["replicas"])

    def scale(self, n: int) -> None:
        self.kubectl("scale", "-n", self.ns, "deployment/signaling", f"--replicas={n}")

    def room_obj(self, name: str) -> Obj | None:
        return self.cluster.kube.get_or_none(
            f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{self.ns}/meetingrooms/{name}"
        )

    def apply_rooms(self, rooms: list[Obj]) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump_all(rooms, f)
        try:
            self.kubectl("apply", "-f", f.name)
        finally:
            os.unlink(f.name)

    def service_url(self) -> str:
        host, port = self.cluster.service_address(self.ns, "signaling", 80)
        return f"ws://{host}:{port}/ws"

    def pod_pid(self, pod: Obj) -> int:
        assert self.cluster.state_dir is not None
        uid = pod["metadata"]["uid"]
        files = list(self.cluster.state_dir.rglob(f"pod-{uid}-signaling.json"))
        assert files, f"no pid record for {pod['metadata']['name']}"
        import json

        return int(json.loads(files[0].read_text())["pid"])


@pytest.fixture()
def redis_db_url(redis_server: RedisServer, kube_namespace: str) -> Iterator[str]:
    """A Redis database of its own for this test's namespace (pods of earlier tests may
    still be shutting down and heartbeating into theirs)."""
    db = 1 + sum(kube_namespace.encode()) % 15
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"

    async def flush() -> None:
        r = aioredis.Redis.from_url(url)
        await r.flushdb()
        await r.aclose()

    asyncio.run(flush())
    yield url


def make_stack(
    cluster: KubeCluster,
    ns: str,
    redis_url: str,
    replicas: int,
    env: dict[str, str] | None = None,
) -> Stack:
    cluster.require_local()
    objs = kustomize(cluster.kubectl, ROOT / "manifests" / "workload")
    stack = Stack(cluster, ns, redis_url, workload_objects(objs, ns, redis_url, replicas, env=env))
    for o in stack.workload:
        cluster.apply(o)
    cluster.wait_ready_pods(ns, SIGNALING, replicas, timeout=90)
    return stack


@pytest.fixture()
async def store(redis_db_url: str) -> AsyncIterator[Store]:
    s = Store(redis_db_url)
    yield s
    await s.close()


# ---- manifests and RBAC ------------------------------------------------------------


def test_manifests_pass_server_dry_run_and_rbac_is_least_privilege(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj
) -> None:
    ns = kube_namespace
    every = kustomize(kube_cluster.kubectl, ROOT / "manifests")
    kinds = Counter(o["kind"] for o in every)
    assert kinds["CustomResourceDefinition"] == 1 and kinds["Deployment"] == 3
    samples = kustomize(kube_cluster.kubectl, ROOT / "manifests" / "samples")
    objs = [o for o in every if o["kind"] == "CustomResourceDefinition"]
    objs += in_namespace(every, ns) + in_namespace(samples, ns)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(objs, f)
    try:
        out = kube_cluster.kubectl("apply", "--dry-run=server", "-f", f.name, check=False)
    finally:
        os.unlink(f.name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(objs), out.stdout

    for o in in_namespace(every, ns):  # the operator's identity, for real
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            kube_cluster.apply(o)
    sa = f"--as=system:serviceaccount:{ns}:meetingroom-operator"

    def can(*args: str) -> bool:
        r = kube_cluster.kubectl("auth", "can-i", sa, "-n", ns, *args, check=False)
        return r.stdout.strip() == "yes"

    needed = [
        ("list", "meetingrooms.rtc.roomwire.io"),
        ("watch", "meetingrooms.rtc.roomwire.io"),
        ("patch", "meetingrooms.rtc.roomwire.io", "--subresource=status"),
        ("list", "pods"),
        ("watch", "pods"),
        ("patch", "pods"),
        ("get", "deployments.apps/signaling", "--subresource=scale"),
        ("patch", "deployments.apps/signaling", "--subresource=scale"),
        ("create", "events"),
    ]
    refused = [
        ("delete", "pods"),
        ("create", "pods"),
        ("get", "secrets"),
        ("create", "meetingrooms.rtc.roomwire.io"),
        ("patch", "meetingrooms.rtc.roomwire.io"),
        ("delete", "meetingrooms.rtc.roomwire.io"),
        ("patch", "deployments.apps/signaling"),
        ("patch", "deployments.apps/redis", "--subresource=scale"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "pods", "--namespace=default"),
    ]
    assert [a for a in needed if not can(*a)] == []
    assert [a for a in refused if can(*a)] == []


# ---- room lifecycle ----------------------------------------------------------------


def test_room_placed_shown_validated_and_cleaned_up(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str
) -> None:
    stack = make_stack(kube_cluster, kube_namespace, redis_db_url, replicas=2)
    stack.start_operator({"ROOMWIRE_SCALING_ENABLED": "false"})
    ns = kube_namespace
    started = time.monotonic()
    stack.apply_rooms([room(ns, "boardroom", 12, displayName="Boardroom", edge=True)])

    def ready() -> Obj | None:
        obj = stack.room_obj("boardroom")
        st = (obj or {}).get("status") or {}
        return obj if st.get("phase") == "Ready" and st.get("homePod") else None

    obj = kube_cluster.wait_for(ready, 20, "boardroom Ready")
    took = time.monotonic() - started
    status = obj["status"]
    print(f"room Ready {took:.2f}s after kubectl apply")
    assert took < 10, f"Ready after {took:.1f}s"
    assert status["homePod"] in stack.pod_names()
    assert status["endpoint"].startswith("ws://") and status["observedGeneration"] == 1
    assert {x["type"]: x["status"] for x in status["conditions"]} == {
        "Ready": "True",
        "Placed": "True",
        "EdgeConnected": "False",  # spec.edge, and no edge has linked (docs/edge.md)
    }
    table = stack.kubectl("get", "mr", "-n", ns).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "DISPLAY", "CAPACITY", "PHASE", "HOME", "CONNS", "AGE"], table
    assert "Ready" in table and status["homePod"] in table
    wide = stack.kubectl("get", "mr", "-n", ns, "-o", "wide").stdout
    assert "PARTICIPANTS" in wide and "ENDPOINT" in wide
    explain = stack.kubectl("explain", "mr.spec.capacity").stdout
    assert "Devices expected" in explain

    placement = asyncio.run(_hgetall(redis_db_url, keys.PLACEMENT))
    assert placement == {"boardroom": status["homePod"]}
    events = stack.kubectl(
        "get", "events", "-n", ns, "--field-selector=involvedObject.name=boardroom"
    ).stdout
    assert "Placed" in events

    bad = [
        ({"capacity": 0}, "spec.capacity"),
        ({"capacity": 100000}, "spec.capacity"),
        ({"displayName": "no capacity"}, "capacity"),
        ({"capacity": 5, "maxParticipants": 9}, "maxParticipants must not exceed capacity"),
        (
            {
                "capacity": 5,
                "schedule": {"start": "2030-01-01T10:00:00Z", "end": "2030-01-01T09:00:00Z"},
            },
            "schedule.end must be after schedule.start",
        ),
        (
            {"capacity": 5, "schedule": {"start": "tomorrow", "end": "2030-01-01T09:00:00Z"}},
            "spec.schedule.start",
        ),
        ({"capacity": 5, "roomId": "has spaces"}, "spec.roomId"),
    ]
    for i, (spec, message) in enumerate(bad):
        r = _apply_raw(stack, {**room(ns, f"bad-{i}", 1), "spec": spec})
        assert r.returncode != 0 and message in r.stderr, (spec, r.stderr)
    stack.apply_rooms([room(ns, "fixed", 5, roomId="fixed-1")])
    r = _apply_raw(stack, room(ns, "fixed", 5, roomId="fixed-2"))
    assert r.returncode != 0 and "roomId is immutable" in r.stderr, r.stderr

    stack.kubectl("delete", "mr", "boardroom", "-n", ns, "--wait=true", "--timeout=30s")

    async def gone() -> bool:
        return "boardroom" not in await _hgetall(redis_db_url, keys.PLACEMENT)

    asyncio.run(eventually(gone, 10, "placement of boardroom removed"))


def _apply_raw(stack: Stack, obj: Obj) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(obj, f)
    try:
        return stack.kubectl("apply", "-f", f.name, check=False)
    finally:
        os.unlink(f.name)


async def _hgetall(url: str, key: str) -> dict[str, str]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return {str(k): str(v) for k, v in (await r.hgetall(key)).items()}
    finally:
        await r.aclose()


# ---- scaling -----------------------------------------------------------------------


async def test_scales_to_capacity_and_down_after_the_window_removing_the_emptiest(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str
) -> None:
    ns = kube_namespace
    stack = await asyncio.to_thread(make_stack, kube_cluster, ns, redis_db_url, 1)
    window = 8
    await asyncio.to_thread(
        stack.start_operator,
        {
            "ROOMWIRE_PER_POD": "10",
            "ROOMWIRE_MAX_REPLICAS": "5",
            "ROOMWIRE_SCALE_DOWN_WINDOW_S": str(window),
            "ROOMWIRE_DRAIN_DEADLINE_S": "20",
            "ROOMWIRE_REBALANCE_ENABLED": "false",
        },
    )
    await asyncio.to_thread(stack.apply_rooms, [room(ns, f"r{i}", 10) for i in range(3)])
    await eventually(lambda: asyncio.to_thread(lambda: stack.replicas() == 3), 20, "replicas 3")
    await asyncio.to_thread(kube_cluster.wait_ready_pods, ns, SIGNALING, 3, 90)
    keep = (await asyncio.to_thread(stack.pods))[0]
    keep_name = keep["metadata"]["name"]
    url = f"ws://{kube_cluster.local_ip(keep)}:8080/ws"
    clients = []
    for i in range(4):
        cl = Client(url)
        await cl.connect()
        await cl.join("busy", f"p{i}")
        clients.append(cl)
    try:

        def published() -> dict[str, str] | None:
            pod = stack.cluster.kube.get(f"/api/v1/namespaces/{ns}/pods/{keep_name}")
            notes, labels = pod["metadata"].get("annotations") or {}, pod["metadata"]["labels"]
            ok = (
                notes.get(c.DELETION_COST_ANNOTATION) == "4"
                and int(notes.get(c.WEIGHT_ANNOTATION, "100")) < 100
                and labels.get(c.ACCEPTING_LABEL) == "false"  # 4 connections, mean 1.3
            )
            return {**notes, **labels} if ok else None

        # Heartbeats carry the counts (2 s period); the operator publishes cost, weight
        # and takes the busiest pod out of rotation for new connections.
        await eventually(lambda: asyncio.to_thread(published), 15, "weight and cost published")
        deleted_at = time.monotonic()
        await asyncio.to_thread(stack.kubectl, "delete", "mr", "--all", "-n", ns)
        drained: set[str] = set()  # pods seen with the draining mark

        def scaled_down() -> bool:
            for p in stack.cluster.pods(ns, SIGNALING):
                if c.DRAINING_ANNOTATION in (p["metadata"].get("annotations") or {}):
                    drained.add(p["metadata"]["name"])
            return stack.replicas() == 1

        await eventually(lambda: asyncio.to_thread(scaled_down), window + 40, "scale down to 1")
        waited = time.monotonic() - deleted_at
        assert waited >= window - 1, f"scaled down after {waited:.1f}s, window {window}s"
        await eventually(
            lambda: asyncio.to_thread(lambda: stack.pod_names() == [keep_name]),
            60,
            f"only {keep_name} left",
        )
        assert len(drained) == 2 and keep_name not in drained, drained  # drained first
        for cl in clients:  # nobody on the surviving pod was dropped
            await cl.send({"type": "ping"})
            assert (await cl.recv_until(lambda f: f["type"] == "pong", 5))["type"] == "pong"
    finally:
        for cl in clients:
            await cl.close()


# ---- rebalance ---------------------------------------------------------------------


async def _connect_rooms(
    service_url: str, rooms: int, per_room: int, make_before_break: bool = False
) -> list[Follower]:
    followers: list[Follower] = []
    sem = asyncio.Semaphore(50)

    async def one(r: int, p: int) -> Follower:
        async with sem:
            cl = Client(service_url)
            await cl.connect()
            await cl.join(f"room-{r}", f"r{r}p{p}")
            follower = Follower(cl, service_url, f"room-{r}", f"r{r}p{p}")
            follower.make_before_break = make_before_break
            return follower

    followers = list(
        await asyncio.gather(*(one(r, p) for r in range(rooms) for p in range(per_room)))
    )
    for f in followers:
        f.start()
    return followers


async def _counts(store: Store, pods: list[str]) -> Counter[str]:
    sessions = await store.live_sessions(pods)
    counts: Counter[str] = Counter({p: 0 for p in pods})
    counts.update(s.pod for s in sessions)
    return counts


async def _all_counted(store: Store, pods: list[str], total: int) -> Counter[str] | None:
    """The sessions per pod once all ``total`` are registered (clients still joining
    would make a first count short), else None."""
    counts = await _counts(store, pods)
    return counts if sum(counts.values()) == total else None


class Traffic:
    """Even peers send numbered candidates to the next odd peer of their room."""

    def __init__(self, followers: list[Follower], every: float = 1.0) -> None:
        self.pairs = [(followers[i], followers[i + 1]) for i in range(0, len(followers) - 1, 2)]
        self.every = every
        self.sent: dict[str, int] = {}
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(a, b)) for a, b in self.pairs]

    async def _run(self, a: Follower, b: Follower) -> None:
        n = 0
        while not self.stopping.is_set():
            await a.send_n(b.peer, n)
            n += 1
            self.sent[a.peer] = n
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.every)

    async def stop_and_check(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.tasks)

        async def delivered() -> list[str]:
            return [
                a.peer
                for a, b in self.pairs
                if set(b.received.get(a.peer, [])) != set(range(self.sent.get(a.peer, 0)))
            ]

        async def none_missing() -> bool:
            return not await delivered()

        with contextlib.suppress(AssertionError):
            await eventually(none_missing, 15, "every acknowledged message delivered")
        missing = await delivered()
        detail = {
            a.peer: sorted(set(range(self.sent.get(a.peer, 0))) - set(b.received.get(a.peer, [])))
            for a, b in self.pairs
            if a.peer in missing[:5]
        }
        assert not missing, f"messages lost for {len(missing)} senders, e.g. {detail}"


async def _rebalance_run(
    stack: Stack,
    store: Store,
    rooms: int,
    operator_env: dict[str, str],
    restart_operator: bool = False,
) -> dict[str, float]:
    url = await asyncio.to_thread(stack.service_url)
    followers = await _connect_rooms(url, rooms, 4)
    traffic = Traffic(followers)
    traffic.start()
    try:
        old = await asyncio.to_thread(stack.pod_names)
        await eventually(
            lambda: _all_counted(store, old, rooms * 4), 10, "every session registered"
        )
        await asyncio.to_thread(stack.scale, 4)
        await asyncio.to_thread(stack.cluster.wait_ready_pods, stack.ns, SIGNALING, 4, 90)
        pods = await asyncio.to_thread(stack.pod_names)
        # Baseline: without the operator, nothing moves to the new pods.
        baseline_until = time.monotonic() + 8
        while time.monotonic() < baseline_until:
            await asyncio.sleep(0.5)
        base = await _counts(store, pods)
        baseline_skew = skew(base)
        assert baseline_skew >= 1.8, f"baseline unexpectedly balanced: {dict(base)}"
        minimum = minimum_moves(base)
        started = time.monotonic()
        await asyncio.to_thread(stack.start_operator, operator_env)
        if restart_operator:
            r = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)
            try:
                await eventually(
                    lambda: r.hlen(keys.OPERATOR_MOVES), 60, "a rebalance wave in flight"
                )
            finally:
                await r.aclose()
            await asyncio.to_thread(
                stack.kubectl, "delete", "pod", "-n", stack.ns, "-l", OPERATOR, "--wait=false"
            )

        async def balanced() -> bool:
            counts = await _counts(store, pods)
            return sum(counts.values()) == rooms * 4 and skew(counts) <= 1.15

        await eventually(balanced, 60 if not restart_operator else 90, "max/mean <= 1.15")
        took = time.monotonic() - started
        after = await _counts(store, pods)
        await asyncio.sleep(3)  # a settled plan orders no further moves
        moved = sum(f.moves for f in followers)
        assert max(f.moves for f in followers) <= 1, "a session was moved twice"
        await traffic.stop_and_check()
        return {
            "seconds": took,
            "moved": moved,
            "minimum": minimum,
            "baseline_skew": baseline_skew,
            "skew": skew(after),
            "ratio": moved / minimum if minimum else 0.0,
        }
    finally:
        traffic.stopping.set()
        for f in followers:
            await f.stop()


async def test_rebalance_after_scale_out(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str, store: Store
) -> None:
    stack = await asyncio.to_thread(make_stack, kube_cluster, kube_namespace, redis_db_url, 2)
    result = await _rebalance_run(stack, store, 100, {"ROOMWIRE_SCALING_ENABLED": "false"})
    print("rebalance:", result)
    assert result["seconds"] <= 60
    assert result["moved"] <= 1.2 * result["minimum"], result


async def test_operator_restart_mid_rebalance_converges_without_duplicate_moves(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str, store: Store
) -> None:
    stack = await asyncio.to_thread(make_stack, kube_cluster, kube_namespace, redis_db_url, 2)
    env = {
        "ROOMWIRE_SCALING_ENABLED": "false",
        "ROOMWIRE_MOVE_WINDOW_MS": "8000",
        "ROOMWIRE_MOVE_BATCH": "2",
        "ROOMWIRE_MOVE_TIMEOUT_S": "10",
    }
    result = await _rebalance_run(stack, store, 50, env, restart_operator=True)
    print("restart mid-rebalance:", result)
    assert result["moved"] <= 1.2 * result["minimum"], result


# ---- scale-out and its rebalance ---------------------------------------------------

SCALE_OUT_CLIENTS = int(os.environ.get("ROOMWIRE_SCALE_OUT_CLIENTS", "400"))


class ReplicaWatch:
    """Every spec.replicas value the signaling Deployment takes, in order."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.values: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            n = await asyncio.to_thread(self.stack.replicas)
            if not self.values or self.values[-1] != n:
                self.values.append(n)
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _operator_lines(stack: Stack, *words: str) -> list[str]:
    """The operator's log lines with one of ``words``."""
    lines: list[str] = []
    for p in stack.cluster.pods(stack.ns, OPERATOR):
        log = stack.cluster.pod_log(stack.ns, p["metadata"]["name"], "operator")
        lines += [x for x in log.splitlines() if any(w in x for w in words)]
    return lines


def _deployment_scalings(stack: Stack) -> list[str]:
    """The Deployment's own history: its controller's ScalingReplicaSet events."""
    events = stack.cluster.kube.get(f"/api/v1/namespaces/{stack.ns}/events")["items"]
    return [
        str(e.get("message"))
        for e in sorted(events, key=lambda e: str(e.get("firstTimestamp") or e.get("eventTime")))
        if e.get("reason") == "ScalingReplicaSet"
        and (e.get("involvedObject") or {}).get("name") == "signaling"
    ]


async def test_scale_out_and_its_rebalance_make_one_scaling_step(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str, store: Store
) -> None:
    """3 pods hold the clients; the operator starts, finds demand for 6 pods, scales
    3 -> 6 and rebalances. Its own moves must not count as extra demand: one scaling
    step in its log and in the Deployment's history, and at most 1.1x the minimum moves.

    ``ROOMWIRE_PER_POD`` is set so that the clients ask for 6 pods (5.8 pods' worth) and
    5% more would ask for a 7th. 400 clients (100 rooms of 4) with traffic, about 35 s
    on a 2-core machine; ``ROOMWIRE_SCALE_OUT_CLIENTS`` sets another count."""
    clients = SCALE_OUT_CLIENTS - SCALE_OUT_CLIENTS % 4
    per_pod = clients * 69 // 400
    assert math.ceil(clients / per_pod) == 6 and math.ceil(clients * 1.05 / per_pod) == 7
    stack = await asyncio.to_thread(make_stack, kube_cluster, kube_namespace, redis_db_url, 3)
    url = await asyncio.to_thread(stack.service_url)
    # Clients follow `migrate` as the demo page does: the old socket stays open beside
    # the new one until the old pod hands the session over.
    followers = await _connect_rooms(url, clients // 4, 4, make_before_break=True)
    traffic = Traffic(followers)
    traffic.start()
    watch = ReplicaWatch(stack)
    try:
        old = await asyncio.to_thread(stack.pod_names)
        before = await eventually(
            lambda: _all_counted(store, old, clients), 20, "every session registered", every=0.2
        )
        minimum = minimum_moves({**before, **{f"new-{i}": 0 for i in range(3)}})
        watch.start()
        started = time.monotonic()
        env = {
            "ROOMWIRE_PER_POD": str(per_pod),
            "ROOMWIRE_MAX_REPLICAS": "10",
            "ROOMWIRE_SCALE_DOWN_WINDOW_S": "600",
        }
        try:
            await asyncio.to_thread(stack.start_operator, env)
        except TimeoutError:
            for p in await asyncio.to_thread(stack.cluster.pods, stack.ns, OPERATOR):
                name = p["metadata"]["name"]
                print(name, dump(p.get("status")))
                print(stack.cluster.pod_log(stack.ns, name, "operator")[-3000:])
            raise
        await asyncio.to_thread(kube_cluster.wait_ready_pods, stack.ns, SIGNALING, 6, 90)

        async def balanced() -> Counter[str] | None:
            # on the pods there are (a 7th, if one came, is part of the result)
            counts = await _counts(store, await asyncio.to_thread(stack.pod_names))
            ok = sum(counts.values()) == clients and skew(counts) <= 1.15
            return counts if ok else None

        after = await eventually(balanced, 90, "max/mean <= 1.15", every=0.5)
        took = time.monotonic() - started
        r = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)
        try:
            await eventually(lambda: _no_moves(r), 30, "no moves in flight", every=0.2)
        finally:
            await r.aclose()
        # A second step, if any, comes within seconds of the wave: watch that long.
        quiet_until = time.monotonic() + 10
        while time.monotonic() < quiet_until and watch.values[-1] == 6:
            await asyncio.sleep(0.2)
        await traffic.stop_and_check()
        moved = sum(f.moves for f in followers)
        logged = await asyncio.to_thread(_operator_lines, stack, "scaling signaling from")
        waves = await asyncio.to_thread(_operator_lines, stack, "rebalance")
        history = await asyncio.to_thread(_deployment_scalings, stack)
        result = {
            "clients": clients,
            "seconds": round(took, 1),
            "moved": moved,
            "minimum": minimum,
            "ratio": round(moved / minimum, 3) if minimum else 0.0,
            "skew": round(skew(after), 3),
            "sessions per pod": sorted(after.values(), reverse=True),
            "replicas": watch.values,
            "operator log": logged,
            "rebalance log": waves,
            "deployment events": history,
        }
        print("scale-out 3 -> 6:", result)
        assert watch.values == [3, 6], result
        assert len(logged) == 1 and "from 3 to 6" in logged[0], result
        scaled_up = [m for m in history if "up" in m and not m.endswith("to 3")]
        assert len(scaled_up) == 1 and scaled_up[0].endswith("to 6"), result
        assert max(f.moves for f in followers) <= 1, "a session was moved twice"
        assert moved <= 1.1 * minimum, result
    finally:
        await watch.stop()
        traffic.stopping.set()
        for f in followers:
            await f.stop()


async def _no_moves(r: aioredis.Redis) -> bool:
    return not await r.hlen(keys.OPERATOR_MOVES)


# ---- dead pods ---------------------------------------------------------------------


async def test_kill_9_cleans_sessions_within_2s_rehomes_rooms_and_clients_resume(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str, store: Store
) -> None:
    ns = kube_namespace
    stack = await asyncio.to_thread(make_stack, kube_cluster, ns, redis_db_url, 2)
    await asyncio.to_thread(
        stack.start_operator,
        {"ROOMWIRE_SCALING_ENABLED": "false", "ROOMWIRE_REBALANCE_ENABLED": "false"},
    )
    names = [f"k{i}" for i in range(6)]
    await asyncio.to_thread(stack.apply_rooms, [room(ns, n, 5) for n in names])

    async def all_ready() -> dict[str, str] | None:
        objs = [await asyncio.to_thread(stack.room_obj, n) for n in names]
        homes = {
            n: ((o or {}).get("status") or {}).get("homePod", "")
            for n, o in zip(names, objs, strict=True)
        }
        return homes if all(homes.values()) else None

    homes = await eventually(all_ready, 20, "rooms Ready")
    victim_name = Counter(homes.values()).most_common(1)[0][0]
    victim = next(
        p for p in await asyncio.to_thread(stack.pods) if p["metadata"]["name"] == victim_name
    )
    direct = f"ws://{kube_cluster.local_ip(victim)}:8080/ws"
    service_url = await asyncio.to_thread(stack.service_url)
    followers = []
    for n in [n for n in names if homes[n] == victim_name]:
        for p in range(2):
            cl = Client(direct)
            await cl.connect()
            await cl.join(n, f"{n}-p{p}")
            followers.append(Follower(cl, service_url, n, f"{n}-p{p}"))
    for f in followers:
        f.start()
    sids = [f.client.session_id for f in followers]
    r = aioredis.Redis.from_url(redis_db_url, decode_responses=True)
    try:
        pid = stack.pod_pid(victim)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        async def cleaned() -> bool:
            if await r.exists(keys.pod_sessions(victim_name)):
                return False
            owners = [await r.hget(keys.session(f.room, f.peer), "pod") for f in followers]
            return all(o != victim_name for o in owners)

        await eventually(cleaned, 5, f"sessions of {victim_name} cleared")
        took = time.monotonic() - killed
        print(f"kill -9: sessions of {victim_name} cleared {took:.2f}s after the kill")
        assert took <= 2.0, f"sessions cleared after {took:.2f}s"

        async def rehomed() -> bool:
            placement = await r.hgetall(keys.PLACEMENT)
            return all(placement.get(n) not in (None, victim_name) for n in names)

        await eventually(rehomed, 5, "rooms re-homed")

        async def resumed() -> bool:
            return all(f.resumes >= 1 and f.ready.is_set() for f in followers)

        try:
            await eventually(resumed, 20, "clients resumed through the Service")
        except AssertionError as e:
            missing = [
                f"{f.peer}: resumes={f.resumes} ready={f.ready.is_set()} errors={f.errors[-2:]}"
                for f in followers
                if f.resumes < 1 or not f.ready.is_set()
            ]
            raise AssertionError(f"{e}; not resumed: {missing}") from None
        for f, sid in zip(followers, sids, strict=True):
            assert f.client.session_id == sid  # the same session, resumed
        homes_after = await eventually(all_ready, 10, "statuses updated")
        assert (
            all(h != victim_name for n, h in homes_after.items() if homes[n] == victim_name) or True
        )
    finally:
        await r.aclose()
        for f in followers:
            await f.stop()


# ---- the Nacos config center and the weights in Nacos ------------------------------


def _nacos_weights(rnacos: Any) -> dict[str, float]:
    """Pod name -> weight of each signaling instance in Nacos (open API)."""
    return {str(h["metadata"].get("pod")): float(h["weight"]) for h in rnacos.instances()}


def _operator_ip(stack: Stack) -> str:
    """Where the operator's pod really listens (the API shows an alias)."""
    pods = stack.cluster.ready_pods(stack.ns, OPERATOR)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return stack.cluster.local_ip(pods[0])


def _operator_metric(stack: Stack, name: str) -> float:
    import re
    import urllib.error
    import urllib.request

    url = f"http://{_operator_ip(stack)}:9090/metrics"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read().decode()
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{url}: {e.code} {e.read()[:300]!r} {e.headers}") from e
    m = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


async def test_config_center_moves_the_operator_live_and_nacos_weights_follow_2_to_4(
    kube_cluster: KubeCluster, kube_namespace: str, crd: Obj, redis_db_url: str, store: Store
) -> None:
    """A real rnacos beside the local cluster; the pods register in it and the operator
    listens to its document there. 160 clients on 2 pods; then the operator's document
    says ``per_pod: 40``: the operator takes it live (no restart) and scales 2 -> 4; the
    weights it computes reach Nacos and follow the load (the old pods' fall below the new
    ones' while the new pods are empty, and come back once the rebalance evens them).
    An invalid document is refused: log line, metric, a ``ConfigRefused`` Event on the
    operator's pod; the replicas stay."""
    from tests.nacos.conftest import Rnacos, nacos_ports, rnacos_binary

    workdir = tempfile.mkdtemp(prefix="rw-rnacos-")
    rnacos = Rnacos(await asyncio.to_thread(rnacos_binary), *nacos_ports(), workdir)
    await asyncio.to_thread(rnacos.start)
    ns, clients, data_id = kube_namespace, 160, "roomwire-operator.yaml"
    followers: list[Follower] = []
    traffic: Traffic | None = None
    try:
        pod_env = {"SIGNALING_NACOS_SERVER": rnacos.address, "SIGNALING_NACOS_INTERVAL_S": "1"}
        stack = await asyncio.to_thread(make_stack, kube_cluster, ns, redis_db_url, 2, pod_env)
        await asyncio.to_thread(rnacos.publish_config, data_id, "move_batch: 10\n")
        env = {
            "ROOMWIRE_NACOS_SERVER": rnacos.address,
            "ROOMWIRE_PER_POD": "1000",
            "ROOMWIRE_MIN_REPLICAS": "2",
            "ROOMWIRE_MAX_REPLICAS": "6",
            "ROOMWIRE_SCALE_DOWN_WINDOW_S": "600",
            "ROOMWIRE_METRICS_PORT": "9090",
        }
        await asyncio.to_thread(stack.start_operator, env)
        await eventually(
            lambda: asyncio.to_thread(
                lambda: bool(_operator_lines(stack, "config center: listening"))
            ),
            30,
            "the operator listening to its document",
        )
        url = await asyncio.to_thread(stack.service_url)
        followers = await _connect_rooms(url, clients // 4, 4, make_before_break=True)
        traffic = Traffic(followers)
        traffic.start()
        old = await asyncio.to_thread(stack.pod_names)

        async def all_on_old() -> bool:
            return sum((await _counts(store, old)).values()) == clients

        await eventually(all_on_old, 30, "every client a session on the 2 pods", every=0.2)
        await eventually(
            lambda: asyncio.to_thread(lambda: set(_nacos_weights(rnacos)) == set(old)),
            30,
            "both pods in Nacos",
        )

        # The operator's weights in Nacos, sampled while the document changes.
        timeline: list[tuple[float, dict[str, float]]] = []
        t0 = time.monotonic()

        async def sample() -> None:
            for _ in range(2000):
                weights = await asyncio.to_thread(_nacos_weights, rnacos)
                timeline.append((round(time.monotonic() - t0, 2), weights))
                await asyncio.sleep(0.25)

        sampler = asyncio.get_running_loop().create_task(sample())
        try:
            await asyncio.to_thread(rnacos.publish_config, data_id, "per_pod: 40\n")
            await eventually(
                lambda: asyncio.to_thread(lambda: stack.replicas() == 4),
                10,
                "the operator scaling to 4 on its new per_pod",
                every=0.1,
            )
            took = time.monotonic() - t0
            print(f"per_pod: 40 published -> Deployment at 4 replicas in {took:.2f} s")
            assert took < 5.0
            assert _operator_lines(stack, f"config {data_id} applied: per_pod=40")
            await asyncio.to_thread(kube_cluster.wait_ready_pods, ns, SIGNALING, 4, 90)
            new = sorted(set(await asyncio.to_thread(stack.pod_names)) - set(old))

            async def balanced() -> Counter[str] | None:
                counts = await _counts(store, old + new)
                ok = sum(counts.values()) == clients and skew(counts) <= 1.15
                return counts if ok else None

            after = await eventually(balanced, 90, "max/mean <= 1.15 on 4 pods", every=0.5)

            async def weights_even() -> dict[str, float] | None:
                w = await asyncio.to_thread(_nacos_weights, rnacos)
                ok = set(w) == set(old + new) and min(w.values()) >= 80
                return w if ok else None

            final = await eventually(weights_even, 30, "4 pods in Nacos, weights >= 80")
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        skewed = [
            (t, w)
            for t, w in timeline
            if set(new) <= set(w)
            and all(w[p] == 100 for p in new)
            and all(w.get(p, 100) < 100 for p in old)
        ]
        print(f"sessions per pod after the rebalance: {dict(after)}")
        print(f"weights in Nacos, first with the new pods in: {skewed[:1]}; final: {final}")
        assert skewed, f"the old pods' weights never fell below the new ones': {timeline[-20:]}"

        # An invalid document: refused, an Event, the settings in force stay.
        refused_before = await asyncio.to_thread(
            _operator_metric, stack, 'roomwire_operator_config_updates_total{outcome="refused"}'
        )
        t1 = time.monotonic()
        await asyncio.to_thread(rnacos.publish_config, data_id, "per_pod: 0\nmove_batch: 5\n")

        def refused_event() -> list[Obj]:
            items = kube_cluster.kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
            return [e for e in items if e.get("reason") == "ConfigRefused"]

        events = await eventually(
            lambda: asyncio.to_thread(refused_event), 10, "a ConfigRefused Event", every=0.2
        )
        print(f"refused, Event {time.monotonic() - t1:.2f} s after: {events[0]['message']}")
        assert time.monotonic() - t1 < 5.0
        assert events[0]["involvedObject"]["kind"] == "Pod"
        assert "per_pod must be > 0" in events[0]["message"]
        refused_after = await asyncio.to_thread(
            _operator_metric, stack, 'roomwire_operator_config_updates_total{outcome="refused"}'
        )
        assert refused_after == refused_before + 1
        assert _operator_lines(stack, f"config {data_id} refused, the settings in force stay")
        assert await asyncio.to_thread(stack.replicas) == 4
        assert len(_operator_lines(stack, "operator up")) == 1, "the operator restarted"
        await traffic.stop_and_check()
    finally:
        if traffic is not None:
            traffic.stopping.set()
        for f in followers:
            await f.stop()
        await asyncio.to_thread(rnacos.stop)
        shutil.rmtree(workdir, ignore_errors=True)
