"""Redis restarted empty: until every pod has put its sessions back, a relay to a peer
the registry does not know yet is answered ``unavailable``, not ``unknown-peer``.

Found by the chaos suite (tests/chaos, Redis restarted under load): a pod that had
restored its own sessions relayed to a peer whose pod had not yet (it does at its next
heartbeat), and the sender was told ``unknown-peer``, which docs/protocol.md reserves
for a peer that left (the room hears ``peer-left``). The peer never left.

Real processes: two pods on a real Redis, which the test stops and starts again empty;
pod-2 heartbeats every 4 s, so that its sessions come back well after pod-1's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import redis

from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import PodFactory, RedisServer, wait_ready
from tests.support import wait_until

from .conftest import joined


async def test_a_peer_not_restored_yet_is_unavailable_then_gets_the_frame_once(
    redis_server: RedisServer,
    redis_url: str,
    start_pod: PodFactory,
    clients: Callable[..., Client],
) -> None:
    p1 = start_pod(redis_url, "pod-1", args=["--heartbeat", "0.3"], wait_ready=False)
    p2 = start_pod(redis_url, "pod-2", args=["--heartbeat", "4"], wait_ready=False)
    wait_ready(p1, p2)
    a = await joined(clients, p1.ws_url, "rebuild", "alice")
    b = await joined(clients, p2.ws_url, "rebuild", "bob")
    await a.recv_until(lambda f: f["type"] == "peer-joined")

    redis_server.stop()  # no persistence: Redis comes back empty
    redis_server.start()
    r = redis.Redis.from_url(redis_url)
    try:
        wait_until(
            lambda: bool(r.exists(keys.session("rebuild", "alice"))), 10, "pod-1 restored alice"
        )
        bob_back_early = bool(r.exists(keys.session("rebuild", "bob")))
        # Alice sends one offer with an id, resent with that id after `unavailable`.
        answers: Counter[str] = Counter()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await a.relay("offer", "bob", {"x": 1}, frame_id="after-restart")
            reply = await a.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=10)
            answers[str(reply.get("code", reply["type"]))] += 1
            if reply["type"] == "ack" or reply.get("code") != "unavailable":
                break
            await asyncio.sleep(0.2)  # a client backing off before its resend
    finally:
        r.close()
    print("answers to one offer after Redis restarted empty:", dict(answers))
    assert not bob_back_early, "pod-2 restored bob before the offer: no window tested"
    assert answers["unknown-peer"] == 0, answers
    assert answers["ack"] == 1 and answers["unavailable"] >= 1, answers
    offers = await b.recv_within(1.0, lambda f: f["type"] == "offer")
    assert [f["data"] for f in offers] == [{"x": 1}], offers
