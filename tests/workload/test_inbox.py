"""The pod inbox on its pipelined connection: it stays subscribed while idle, and it hands
the hub every message from the first one on, in order.

These drive the pod inbox (``signaling.registry.redis_inbox``) in this process against
the real Redis, with the idle-PING period shortened, so that many silent periods pass in
a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from roomwire_contract import keys
from signaling.client import Client
from signaling.registry import redis_inbox
from signaling.registry.redis_inbox import Inbox
from signaling.registry.redis_link import RedisAddress
from tests.conftest import PodFactory, wait_ready
from tests.support import eventually

from .test_resume import Sender, check_exactly_once, collect


async def test_an_idle_inbox_pings_and_stays_subscribed(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_inbox, "INBOX_PING_S", 0.1)
    caplog.set_level(logging.WARNING, "signaling.redis")
    got: list[dict[str, Any]] = []
    reg = Inbox(RedisAddress.parse(redis_url), "idle-pod")
    reg.start(lambda m: got.append(m))
    admin = aioredis.Redis.from_url(redis_url)
    try:

        async def pings() -> int:
            stats = await admin.info("commandstats")
            return int(stats.get("cmdstat_ping", {}).get("calls", 0))

        before = await pings()

        async def answered() -> bool:
            return await pings() >= before + 8

        # Many silent periods, each answered by a PING; none may end the subscription.
        await eventually(answered, 10, "8 idle PINGs")
        assert "subscription lost" not in caplog.text
        assert reg.subscribed.is_set()
        assert await admin.publish(keys.inbox("idle-pod"), b'{"k": "hello"}') == 1
        await eventually(lambda: _now(got == [{"k": "hello"}]), 5, "the message")
        assert not any(m.get("k") == "resubscribed" for m in got)
    finally:
        await admin.aclose()
        await reg.close()


async def test_the_inbox_loses_nothing_from_its_first_message(redis_url: str) -> None:
    """A publisher is already sending when the pod subscribes: the confirmation and the
    first messages may come in one read, and none of them may be dropped."""
    got: list[int] = []
    reg = Inbox(RedisAddress.parse(redis_url), "busy-pod")
    publisher = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()

    async def publish() -> None:
        n = 0
        while not stop.is_set() and n < 200_000:
            n += 1
            frame = b'{"type":"offer","from":"a","data":{"n":%d}}' % n
            await publisher.publish(
                keys.inbox("busy-pod"), b"b\x1f1.0\x1eroom\x1fpeer\x1fs1\x1f%d\x1f" % n + frame
            )

    def on_inbox(msg: dict[str, Any]) -> None:
        got.extend(n for _, _, _, n, _ in msg["frames"])

    task = asyncio.create_task(publish())
    try:
        reg.start(on_inbox)
        await eventually(lambda: _now(len(got) >= 500), 20, "500 messages")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        await publisher.aclose()
        await reg.close()
    first = got[0]
    assert got[:500] == list(range(first, first + 500))


async def _now(value: bool) -> bool:
    return value


async def test_frames_survive_a_lost_inbox_connection_in_order(
    redis_url: str, start_pod: PodFactory
) -> None:
    """Redis drops pod 1's inbox connection while B (pod 2) keeps sending to A (pod 1).
    Frames routed while nobody listened were kept, frames in the lost connection's
    buffers are in the routed record; after it resubscribes A gets them all, once, in
    order, before anything newer."""
    fast = ["--rate", "5000", "--rate-burst", "5000"]  # ~1,000 frames/s from one sender
    pod1 = start_pod(redis_url, "pod-1", args=fast, wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", args=fast, wait_ready=False)
    wait_ready(pod1, pod2)
    a, b = Client(pod1.ws_url), Client(pod2.ws_url)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await a.connect()
        await a.join("blip", "alice")
        await b.connect()
        await b.join("blip", "bob")
        total = 1000
        sender = Sender(b, "alice", limit=total, every=0.001)
        sender.start()
        await sender.wait_sent(300)
        inbox = [c for c in await admin.client_list() if c.get("name") == "rw-inbox:pod-1"]
        assert len(inbox) == 1, inbox
        await admin.client_kill_filter(_id=inbox[0]["id"])
        await sender.wait_sent(total, timeout=30)
        frames: list[dict[str, Any]] = []
        await collect(a, frames, total, timeout=20)
        check_exactly_once(frames, total)
        rns = [f["rn"] for f in frames]
        assert rns == sorted(rns), "frames out of their cross-pod order"
        assert "inbox subscription lost" in pod1.log.read_text()
    finally:
        await admin.aclose()
        await a.close()
        await b.close()
