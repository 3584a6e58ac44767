"""The Redis registry's roles driven directly, in this process, against a real Redis.

No pods and no sockets: each test builds registries for two or three pod ids on the
session's Redis and calls their roles the way the hub does, to pin down what the Lua
scripts promise where the end-to-end tests cannot aim precisely: a room frame reaches a
member who joined after the sender last looked, a dead pod is claimed once however many
pods race for it, a sweep announces a member once, a frame for a replaced session never
lands in its successor's box, a pod thought dead takes back only what did not move.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from roomwire_contract import keys
from signaling.protocol import Role
from signaling.registry import PodStats, Registry, SessionRecord
from signaling.registry.redis_backend import redis_registry
from tests.support import eventually

Made = Callable[[str], Registry]


@pytest.fixture()
async def make(redis_url: str) -> AsyncIterator[Made]:
    """``make(pod_id)``: a started Redis registry whose inbox messages are collected in
    ``inboxes[pod_id]``; all closed at the end."""
    made: list[Registry] = []

    def build(pod_id: str) -> Registry:
        reg = redis_registry(redis_url, pod_id, grace_s=5)
        made.append(reg)
        return reg

    yield build
    for reg in made:
        await reg.presence.close()


async def started(reg: Registry, got: list[dict[str, Any]]) -> Registry:
    await reg.presence.start(lambda m: got.append(m))
    await reg.presence.heartbeat(_stats(), [])  # waits for the inbox subscription
    return reg


def _stats() -> PodStats:
    return PodStats("ws://127.0.0.1:1/ws", 0, 0, 0, False)


async def test_a_room_frame_reaches_a_member_who_joined_after_the_sender_last_looked(
    make: Made,
) -> None:
    got1: list[dict[str, Any]] = []
    got2: list[dict[str, Any]] = []
    p1 = await started(make("pod-1"), got1)
    p2 = await started(make("pod-2"), got2)
    await p1.sessions.join("s-alice", "r", "alice", Role.PARTICIPANT, 10)
    await p2.sessions.join("s-carol", "r", "carol", Role.PARTICIPANT, 10)
    await p1.routing.fan_out("r", '{"type":"broadcast"}', screens_only=False,
                             exclude_sid="s-alice", replay=True)  # fmt: skip
    # pod 1 now believes the room is {alice, carol}; bob joins on pod 2 behind its back
    await p2.sessions.join("s-bob", "r", "bob", Role.PARTICIPANT, 10)
    out = await p1.routing.fan_out("r", '{"type":"broadcast","n":2}', screens_only=False,
                                   exclude_sid="s-alice", replay=True)  # fmt: skip
    assert '"offset":2' in out

    def second() -> list[tuple[str, str, str, int, str]]:
        return [f for m in got2 if m.get("k") == "batch" for f in m["frames"] if '"n":2' in f[4]]

    async def both() -> bool:
        return {f[1] for f in second()} == {"carol", "bob"}

    await eventually(both, 5, "the second frame at carol and bob")
    assert all(f[0] == "r" for f in second())


async def test_a_dead_pod_is_claimed_once_however_many_pods_race_for_it(
    make: Made, redis_url: str
) -> None:
    dead = await started(make("pod-dead"), [])
    await dead.sessions.join("s-a", "r1", "a", Role.PARTICIPANT, 10)
    await dead.sessions.join("s-b", "r2", "b", Role.SCREEN, 10)
    records = [
        SessionRecord("s-a", "r1", "a", "participant", True, 0),
        SessionRecord("s-b", "r2", "b", "screen", True, 0),
    ]
    await dead.presence.heartbeat(_stats(), records)
    await dead.presence.close()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # its heartbeat stopped 11 s ago and its hash expired
        await r.delete(keys.pod("pod-dead"))
        await r.zadd(keys.PODS, {"pod-dead": time.time() - 11})
        reapers = [await started(make(f"pod-{i}"), []) for i in range(3)]
        results = await asyncio.gather(*(p.presence.reap_dead_pods() for p in reapers))
        print("reap results:", results)
        assert sorted(results, key=len) == [{}, {}, {"pod-dead": 2}]
        for room, peer in (("r1", "a"), ("r2", "b")):
            s = await r.hgetall(keys.session(room, peer))
            assert s["state"] == "grace" and s["pod"] == "", s
            # grace counted from the last heartbeat, 11 s ago, of a 5 s period: 1 s left
            assert 0 < await r.ttl(keys.session(room, peer)) <= 1
        assert await r.zscore(keys.PODS, "pod-dead") is None
        # the operator, coming late, finds nothing left to turn
        assert await reapers[0].presence.reap_dead_pods() == {}
    finally:
        await r.aclose()


async def test_a_sweep_announces_an_expired_member_once(make: Made, redis_url: str) -> None:
    p1 = await started(make("pod-1"), [])
    p2 = await started(make("pod-2"), [])
    await p1.sessions.join("s-gone", "r", "gone", Role.PARTICIPANT, 10)
    await p1.routing.keep("s-gone", "r", "gone", '{"type":"offer"}')
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.delete(keys.session("r", "gone"))  # its TTL ran out
        a, b = await asyncio.gather(p1.sessions.sweep("r"), p2.sessions.sweep("r"))
        assert sorted([len(a), len(b)]) == [0, 1]
        assert (a or b)[0].peer == "gone"
        assert await r.exists(keys.session_box("r", "gone")) == 0  # what was kept is freed
        assert await p1.sessions.members("r") == []
    finally:
        await r.aclose()


async def test_a_frame_for_a_replaced_session_never_lands_in_its_successors_box(
    make: Made, redis_url: str
) -> None:
    p1 = await started(make("pod-1"), [])
    await p1.sessions.join("s-old", "r", "alice", Role.PARTICIPANT, 10)
    await p1.sessions.detach("s-old", "r", "alice", 0, [])
    out = await p1.sessions.join("s-new", "r", "alice", Role.PARTICIPANT, 10)
    assert out.replaced_sid == "s-old"
    await p1.sessions.detach("s-new", "r", "alice", 0, [])
    assert await p1.routing.keep("s-old", "r", "alice", '{"type":"offer","n":1}') is False
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.xlen(keys.session_box("r", "alice")) == 0
        assert await p1.routing.keep("s-new", "r", "alice", '{"type":"offer","n":2}') is False
        assert await r.xlen(keys.session_box("r", "alice")) == 1
    finally:
        await r.aclose()
    resumed = await p1.sessions.resume("s-new", "r", "alice", Role.PARTICIPANT)
    assert resumed is not None and [t for _, t in resumed.kept] == ['{"type":"offer","n":2}']
    assert await p1.sessions.resume("s-old", "r", "alice", Role.PARTICIPANT) is None


async def test_a_pod_thought_dead_takes_back_only_the_sessions_that_did_not_move(
    make: Made, redis_url: str
) -> None:
    got: list[dict[str, Any]] = []
    stalled = await started(make("pod-1"), got)
    other = await started(make("pod-2"), [])
    await stalled.sessions.join("s-a", "r", "a", Role.PARTICIPANT, 10)
    await stalled.sessions.join("s-b", "r", "b", Role.PARTICIPANT, 10)
    records = [
        SessionRecord("s-a", "r", "a", "participant", True, 0),
        SessionRecord("s-b", "r", "b", "participant", True, 0),
    ]
    await stalled.presence.heartbeat(_stats(), records)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # pod 1 stalls past its TTL: pod 2 reaps it, and b resumes on pod 2
        await r.delete(keys.pod("pod-1"))
        await r.zadd(keys.PODS, {"pod-1": time.time() - 11})
        assert await other.presence.reap_dead_pods() == {"pod-1": 2}
        assert await other.sessions.resume("s-b", "r", "b", Role.PARTICIPANT) is not None
        # pod 1 wakes up: a is its own again, b is not
        moved = await stalled.presence.heartbeat(_stats(), records)
        assert moved == ["s-b"]
        assert await r.hget(keys.session("r", "a"), "pod") == "pod-1"
        assert await r.hget(keys.session("r", "a"), "state") == "live"
        assert await r.hget(keys.session("r", "b"), "pod") == "pod-2"
        # and it recovers what was kept for a meanwhile, through its inbox, in order
        assert any(m.get("k") == "resubscribed" for m in got)
    finally:
        await r.aclose()
