"""The operator's Redis I/O against a real Redis and real signaling pod processes.

Nothing is faked: ``Store`` talks to a real ``redis-server``; the pods are real
``python -m signaling serve`` processes that verify the HMAC-signed commands; clients
speak WebSocket on loopback. No Kubernetes here (see ``test_operator_cluster.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from meetingroom_operator.store import Store
from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.support import eventually

SECRET = "test-control-secret-0123456789"
ENV = {"SIGNALING_CONTROL_SECRET": SECRET, "SIGNALING_GRACE_S": "30"}


@pytest.fixture()
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store(redis_url)
    yield s
    await s.close()


@pytest.fixture()
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        await c.close()


async def join(made: list[Client], url: str, room: str, peer: str) -> Client:
    c = Client(url)
    made.append(c)
    await c.connect()
    await c.join(room, peer)
    return c


async def test_observes_heartbeats_and_sessions(
    redis_url: str, start_pod: PodFactory, store: Store, clients: list[Client]
) -> None:
    p1 = start_pod(redis_url, "pod-1", env=ENV)
    a = await join(clients, p1.ws_url, "room-a", "alice")
    await join(clients, p1.ws_url, "room-a", "bob")

    async def seen() -> bool:
        hb = await store.heartbeats()
        return "pod-1" in hb and hb["pod-1"].connections == 2

    await eventually(seen, 10, "pod-1 heartbeat with 2 connections")
    hb = (await store.heartbeats())["pod-1"]
    assert hb.url.startswith("ws://") and not hb.draining
    sessions = await store.live_sessions(["pod-1"])
    assert {s.sid for s in sessions} >= {a.session_id}
    assert {s.room for s in sessions} == {"room-a"}
    assert (await store.participants(["room-a", "nobody"])) == {"room-a": 2, "nobody": 0}


async def test_placement_and_inflight_round_trip(store: Store) -> None:
    await store.write_placement({"r1": "pod-1", "r2": "pod-2"})
    await store.write_placement({"r2": "pod-3"}, removed=["r1"])
    assert await store.placement() == {"r2": "pod-3"}
    await store.add_inflight({"s1": "pod-1", "s2": "pod-1"}, until=123.0)
    moves = await store.inflight()
    assert moves["s1"].source == "pod-1" and moves["s1"].deadline == 123.0
    await store.drop_inflight(["s1"])
    assert set(await store.inflight()) == {"s2"}


async def test_dead_pod_cleanup_lets_clients_resume_elsewhere(
    redis_url: str, start_pod: PodFactory, store: Store, clients: list[Client]
) -> None:
    p1 = start_pod(redis_url, "pod-1", env=ENV, wait_ready=False)
    p2 = start_pod(redis_url, "pod-2", env=ENV, wait_ready=False)
    wait_ready(p1, p2)
    a = await join(clients, p1.ws_url, "kill", "alice")
    await join(clients, p2.ws_url, "kill", "bob")
    p1.kill9()
    started = time.perf_counter()
    graced = await store.clean_dead_pod("pod-1", 30)
    took = time.perf_counter() - started
    assert graced == 1 and took < 2.0
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert not await r.exists(keys.pod("pod-1"), keys.pod_sessions("pod-1"))
        assert await r.zscore(keys.PODS, "pod-1") is None
        sess = await r.hgetall(keys.session("kill", "alice"))
        assert sess["state"] == "grace" and sess["pod"] == ""
        assert 0 < await r.ttl(keys.session("kill", "alice")) <= 30
        # bob's session on the live pod is untouched
        assert (await r.hget(keys.session("kill", "bob"), "pod")) == "pod-2"
    finally:
        await r.aclose()
    resumed = await a.resume(p2.ws_url)
    assert resumed["resumed"] is True and resumed["session"] == a.session_id


async def test_signed_commands_reach_the_pod(
    redis_url: str, start_pod: PodFactory, store: Store, clients: list[Client]
) -> None:
    p1 = start_pod(redis_url, "pod-1", env=ENV)
    a = await join(clients, p1.ws_url, "cmd", "alice")
    m = await join(clients, p1.ws_url, "cmd-2", "mallory")
    # A command signed with the wrong secret is ignored.
    await Store.command(store, "wrong-secret-0123456789", "pod-1",
                        {"op": "reconnect", "sids": [a.session_id], "after_ms": 0})  # fmt: skip
    assert await store.command(SECRET, "pod-1", {"op": "migrate-room", "room": "cmd-2",
                                                 "url": "ws://127.0.0.1:9/ws"}) == 1  # fmt: skip
    frame = await m.recv_until(lambda f: f["type"] == "migrate", timeout=5)
    assert frame["url"] == "ws://127.0.0.1:9/ws" and frame["resume"]
    await store.command(SECRET, "pod-1", {"op": "reconnect", "sids": [a.session_id],
                                          "after_ms": 50})  # fmt: skip
    frame = await a.recv_until(lambda f: f["type"] == "reconnect", timeout=5)
    assert frame["after_ms"] == 50 and frame["resume"] == a.resume_token
    assert await a.wait_closed(5) == 1012
