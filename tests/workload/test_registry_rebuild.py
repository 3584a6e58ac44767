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
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import redis

from roomwire_contract import keys, reaping
from roomwire_contract.lua import script as shared_script
from signaling.client import Client
from tests.conftest import PodFactory, RedisServer, wait_ready
from tests.support import eventually, wait_until

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


async def test_pods_thought_dead_while_redis_paused_lose_no_acked_frame(
    redis_server: RedisServer,
    redis_url: str,
    start_pod: PodFactory,
    clients: Callable[..., Client],
) -> None:
    """Redis paused past the pods' heartbeat TTL: when it answers again each pod's
    record has expired, whoever runs first turns the other's sessions to grace, and
    each pod puts its own back. Frames sent meanwhile, once acked, arrive once, in
    order."""
    p1 = start_pod(redis_url, "pod-1", args=["--heartbeat", "0.5"], wait_ready=False)
    p2 = start_pod(redis_url, "pod-2", args=["--heartbeat", "3"], wait_ready=False)
    wait_ready(p1, p2)
    a = await joined(clients, p1.ws_url, "paused", "alice")
    b = await joined(clients, p2.ws_url, "paused", "bob")
    await a.recv_until(lambda f: f["type"] == "peer-joined")
    acked: list[int] = []
    got: list[int] = []
    answers: Counter[str] = Counter()
    stop = asyncio.Event()

    async def send() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            while True:
                await a.relay("candidate", "bob", {"n": n}, frame_id=f"c{n}")
                reply = await a.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=20)
                answers[str(reply.get("code", reply["type"]))] += 1
                if reply["type"] == "ack":
                    acked.append(n)
                    break
                assert reply.get("code") == "unavailable", reply
                await asyncio.sleep(0.2)  # a client backing off before its resend
            await asyncio.sleep(0.05)

    async def receive() -> None:
        while True:
            f = await b.recv_until(lambda f: f["type"] == "candidate", timeout=60)
            got.append(int(f["data"]["n"]))

    sender = asyncio.create_task(send())
    receiver = asyncio.create_task(receive())
    try:
        await eventually(lambda: _at_least(acked, 10), 10, "10 frames acked")
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(keys.POD_TTL_S + 2)  # the fault's own length
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        resumed_at = len(acked)
        await eventually(lambda: _at_least(acked, resumed_at + 40), 40, "40 more acked")
        stop.set()
        await sender
        await eventually(lambda: _at_least(got, len(acked)), 10, "every acked frame delivered")
    finally:
        stop.set()
        sender.cancel()
        receiver.cancel()
    print("answers:", dict(answers), "acked", len(acked), "delivered", len(got))
    missing = sorted(set(acked) - set(got))
    assert not missing, f"acked, never delivered: {missing}"
    assert got == sorted(set(got)), "delivered twice or out of order"


async def _at_least(items: list[int], n: int) -> bool:
    return len(items) >= n


async def test_live_sessions_turned_to_grace_by_a_late_claim_are_taken_back(
    redis_url: str,
    start_pod: PodFactory,
    clients: Callable[..., Client],
) -> None:
    """The race the chaos suite found (Redis paused past the heartbeat TTL, three pods):
    pod-1 finds pod-2's record expired and claims it, and pod-2's heartbeat, in flight
    at that moment, writes the record back right after. Pod-2 is alive and registered,
    its sessions in grace with no pod: frames for them were acked and kept, and nothing
    delivered them (4 clients lost 28 frames each). Now pod-2's next heartbeat finds its
    live sessions turned to grace, takes them back and delivers what was kept, in order.

    The test plays the claimer's side in the losing order with the scripts pods and the
    operator run (``claim_pod``, ``grace_sessions``), then writes back the record pod-2
    had, as its heartbeat does."""
    p1 = start_pod(redis_url, "pod-1", wait_ready=False)
    p2 = start_pod(redis_url, "pod-2", args=["--heartbeat", "0.5"], wait_ready=False)
    wait_ready(p1, p2)
    a = await joined(clients, p1.ws_url, "late-claim", "alice")
    b = await joined(clients, p2.ws_url, "late-claim", "bob")
    await a.recv_until(lambda f: f["type"] == "peer-joined")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        record = r.hgetall(keys.pod("pod-2"))
        claim = r.register_script(shared_script("claim_pod"))
        to_grace = r.register_script(shared_script("grace_sessions"))
        got = claim(keys=[keys.pod("pod-2"), keys.pod_sessions("pod-2")], args=["1"])
        assert int(got[0]) == reaping.CLAIMED, got
        for keys_ in reaping.grace_calls(got[1]):
            assert to_grace(keys=keys_, args=["pod-2", 30]) == 1
        r.hset(keys.pod("pod-2"), mapping=record)  # pod-2's heartbeat, a moment late
        assert r.hget(keys.session("late-claim", "bob"), "state") == "grace"
        for n in range(10):
            await a.relay("candidate", "bob", {"n": n}, frame_id=f"k{n}")
            reply = await a.recv_until(lambda f: f["type"] in ("ack", "error"))
            assert reply["type"] == "ack", reply
        t0 = time.monotonic()
        frames = [
            await b.recv_until(lambda f: f["type"] == "candidate", timeout=10) for _ in range(10)
        ]
        took = time.monotonic() - t0
        assert r.hget(keys.session("late-claim", "bob"), "state") == "live"
    finally:
        r.close()
    print(f"10 frames kept while bob's session was wrongly in grace: delivered in {took:.1f} s")
    assert [f["data"]["n"] for f in frames] == list(range(10))
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 10)), seqs
