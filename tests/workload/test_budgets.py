"""Budgets (docs/protocol.md, "Budgets"): what clients can make the system keep, each a
setting with a metric and a clear answer, on real pods and a real Redis. The figures
are printed (``pytest -s``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import Pod, PodFactory
from tests.support import eventually

from .conftest import joined


def counter(pod: Pod, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", pod.get("/metrics")[1], re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_room_s_history_keeps_its_count_and_bytes_and_the_room_works_on(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """Before: a room kept its last 1,000 events whatever their size, for 24 hours
    (up to 64 MB of one room's broadcasts). Now: count and bytes both bounded."""
    limits = ["--rate", "1000", "--rate-burst", "1000"]
    pod = start_pod(
        redis_url, args=["--room-history", "50", "--room-history-bytes", "20000", *limits]
    )
    a = await joined(clients, pod.ws_url, "chatty", "a")
    b = await joined(clients, pod.ws_url, "chatty", "b")
    r = aioredis.Redis.from_url(redis_url)
    try:
        for n in range(200):  # 200 events of about 330 bytes: 66 kB in all
            await a.broadcast("chat", {"n": n, "text": "x" * 300})
        last = await b.recv_until(lambda f: f["type"] == "broadcast" and f["data"]["n"] == 199)
        assert last["from"] == "a"
        raw: Any = await r.xrange(keys.room_events("chatty"))
        events: list[bytes] = [fields[b"f"] for _, fields in raw]
        stored = sum(len(e) for e in events)
        kept_bytes = int(await r.hget(keys.room_meta("chatty"), "bytes") or 0)
        usage = sum(
            [
                await r.memory_usage(k) or 0
                for k in (keys.room_events("chatty"), keys.room_meta("chatty"))
            ]
        )
        print(
            f"history: {len(events)} events, {stored} bytes (counted {kept_bytes}); "
            f"Redis memory of the room's history and meta: {usage} bytes"
        )
        assert len(events) <= 50 and stored <= 20000 and stored == kept_bytes
        assert b'"n":199' in events[-1], "the newest stay"
        trimmed = counter(pod, "roomwire_room_history_trimmed_total")
        assert trimmed == 200 - len(events)
        # Delivery is untouched: the history is for replay only.
        await b.relay("offer", "a", {"still": "here"}, frame_id=1)
        assert (await b.recv_until(lambda f: f["type"] in ("ack", "error")))["type"] == "ack"
    finally:
        await r.aclose()


async def test_an_empty_room_s_history_goes_after_its_idle_ttl(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """Before: an empty room's history stayed 24 hours. Now: ``--room-idle-ttl``."""
    pod = start_pod(redis_url, args=["--room-idle-ttl", "30"])
    a = await joined(clients, pod.ws_url, "brief", "a")
    b = await joined(clients, pod.ws_url, "brief", "b")
    await a.broadcast("chat", {"hello": 1})
    await b.recv_until(lambda f: f["type"] == "broadcast")
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.ttl(keys.room_events("brief")) > 3600
        await a.send({"type": "leave"})
        assert await a.wait_closed() == 1000
        assert 3600 < await r.ttl(keys.room_events("brief")), "a member is still there"
        await b.send({"type": "leave"})

        async def short() -> list[int] | None:
            ttls = [await r.ttl(k) for k in (keys.room_events("brief"), keys.room_meta("brief"))]
            return ttls if all(0 < t <= 30 for t in ttls) else None

        ttls = await eventually(short, 10, "the empty room's history on its idle TTL")
        print(f"the room emptied: its history and meta expire in {ttls} s")
    finally:
        await r.aclose()


async def test_a_pod_takes_max_rooms_and_refuses_one_more_without_harming_them(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(redis_url, args=["--max-rooms", "2"])
    a = await joined(clients, pod.ws_url, "r1", "a")
    b = await joined(clients, pod.ws_url, "r2", "b")
    c = clients(pod.ws_url)
    await c.connect()
    await c.send({"type": "join", "room": "r3", "peer": "c", "role": "participant", "id": 9})
    err = await c.recv()
    assert (err["type"], err["code"], err["id"]) == ("error", "pod-full", 9), err
    assert await c.wait_closed() == 1013
    assert counter(pod, 'roomwire_budget_refused_total{budget="rooms"}') == 1
    # The rooms it holds take more members, and go on.
    a2 = await joined(clients, pod.ws_url, "r1", "a2")
    await a2.relay("offer", "a", {"x": 1}, frame_id=1)
    assert (await a.recv_until(lambda f: f["type"] == "offer"))["data"] == {"x": 1}
    await b.broadcast("chat", {"alone": True}, frame_id=2)
    assert (await b.recv_until(lambda f: f["type"] in ("ack", "error")))["type"] == "ack"
