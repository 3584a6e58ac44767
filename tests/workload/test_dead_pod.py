"""A pod killed with -9 while no operator runs: the surviving pods turn its sessions to
grace, once, and every frame acked for them is delivered on resume or announced lost.

Real pods (separate processes) and a real Redis; no operator. Pod 1 is killed with
SIGKILL: it never deregisters, its heartbeat hash expires after the pod TTL, and one of
the surviving pods notices and turns its sessions to grace (the other finds nothing
left to do).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready
from tests.support import eventually

from .conftest import joined

REAPED = re.compile(r"pod (\S+) stopped heartbeating: (\d+) of its sessions now in grace")


def reaped(*pods: Pod) -> list[tuple[str, str, int]]:
    """(reaping pod, dead pod, sessions turned) from the pods' logs."""
    return [
        (p.pod_id, m.group(1), int(m.group(2)))
        for p in pods
        for m in REAPED.finditer(p.log.read_text(errors="replace"))
    ]


async def at(start: float, offset: float) -> None:
    """Until ``offset`` seconds after ``start`` (the scenario's own schedule)."""
    await asyncio.sleep(max(0.0, start + offset - time.monotonic()))


async def acked(c: Client, frame_id: int) -> dict[str, Any]:
    return await c.recv_until(lambda f: f.get("id") == frame_id, timeout=10)


async def test_offers_to_a_killed_pods_peer_are_kept_and_delivered_once_on_resume(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pods = [start_pod(redis_url, f"pod-{i}", wait_ready=False) for i in (1, 2, 3)]
    wait_ready(*pods)
    pod1, pod2, pod3 = pods
    a = await joined(clients, pod1.ws_url, "dead", "alice")
    b = await joined(clients, pod2.ws_url, "dead", "bob")
    pod1.kill9()
    killed = time.monotonic()
    answers = []
    for i, offset in enumerate((3, 8, 13, 20)):
        await at(killed, offset)
        await b.relay("offer", "alice", {"n": i}, frame_id=i)
        answers.append(await acked(b, i))
    print("answers:", [f["type"] for f in answers])
    assert [f["type"] for f in answers] == ["ack"] * 4, answers

    await at(killed, 25)
    reply = await a.resume(pod2.ws_url)
    assert reply["resumed"] is True, reply
    got = []
    for _ in range(4):
        got.append(await a.recv_until(lambda f: f["type"] == "offer", timeout=5))
    assert [f["data"]["n"] for f in got] == [0, 1, 2, 3]
    assert all(f["from"] == "bob" for f in got)
    seqs = [f["seq"] for f in got]
    assert seqs == list(range(seqs[0], seqs[0] + 4)), seqs
    # Exactly once: nothing more arrives (a copy would come right behind the kept ones).
    extra = await a.recv_within(1.0, lambda f: f["type"] == "offer")
    assert extra == [], extra
    # Bob never saw alice leave: she was in grace, not gone.
    assert not [f for f in _drain(b) if f["type"] == "peer-left"]
    # One surviving pod turned the session, the other found nothing to do.
    reapers = reaped(pod2, pod3)
    print("reaped:", reapers)
    assert reapers == [(reapers[0][0], "pod-1", 1)], reapers


async def test_after_grace_without_resume_peer_left_once_everywhere_and_kept_frames_freed(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    args = ["--grace", "4", "--heartbeat", "0.5"]
    pods = [start_pod(redis_url, f"pod-{i}", args=args, wait_ready=False) for i in (1, 2, 3)]
    wait_ready(*pods)
    pod1, pod2, pod3 = pods
    await joined(clients, pod1.ws_url, "gone", "alice")
    b = await joined(clients, pod2.ws_url, "gone", "bob")
    c = await joined(clients, pod3.ws_url, "gone", "carol")
    pod1.kill9()
    r = aioredis.Redis.from_url(redis_url)
    try:
        # Frames for alice while her pod is dead: acked and kept for her resume.
        await b.relay("offer", "alice", {"n": 0}, frame_id=1)
        assert (await acked(b, 1))["type"] == "ack"

        async def in_grace() -> bool:
            return bool(await r.hget(keys.session("gone", "alice"), "state") == b"grace")

        await eventually(in_grace, 20, "alice's session turned to grace")
        await c.relay("offer", "alice", {"n": 1}, frame_id=2)
        assert (await acked(c, 2))["type"] == "ack"
        assert await r.xlen(keys.session_box("gone", "alice")) == 2

        # The grace period ends: both surviving pods' peers hear it once.
        left_b = await b.recv_until(lambda f: f["type"] == "peer-left", timeout=20)
        left_c = await c.recv_until(lambda f: f["type"] == "peer-left", timeout=20)
        assert left_b["peer"] == left_c["peer"] == "alice"

        async def freed() -> bool:
            names = [*keys.session_keys("gone", "alice")]
            return int(await r.exists(*names)) == 0

        await eventually(freed, 10, "alice's session and kept frames freed")
        # Once: two sweeps of each pod later, nobody has heard it a second time.
        again = await b.recv_within(3.0, lambda f: f["type"] == "peer-left") + await c.recv_within(
            0.1, lambda f: f["type"] == "peer-left"
        )
        assert again == [], again
        # And a frame for her now is refused, not acked.
        await b.relay("offer", "alice", {"n": 2}, frame_id=3)
        err = await acked(b, 3)
        assert err["type"] == "error" and err["code"] == "unknown-peer", err
    finally:
        await r.aclose()


def _drain(c: Client) -> list[dict[str, Any]]:
    out = []
    while not c.inbox.empty():
        out.append(c.inbox.get_nowait())
    return out


async def test_a_pod_restarted_in_place_turns_its_previous_runs_sessions_to_grace(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """A container restarted under the same pod name, within the heartbeat TTL (what a
    kubelet does after kill -9): its heartbeat never lapses, so no other pod reaps it.
    The new run itself turns what the old one left to grace before it takes anything,
    and a frame acked for such a session is delivered on resume, not lost."""
    pod1 = start_pod(redis_url, "pod-1", wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(pod1, pod2)
    a = await joined(clients, pod1.ws_url, "again", "alice")
    b = await joined(clients, pod2.ws_url, "again", "bob")
    pod1.kill9()
    again = start_pod(redis_url, "pod-1")  # the same name, at once
    await b.relay("offer", "alice", {"n": 0}, frame_id=1)
    assert (await acked(b, 1))["type"] == "ack"
    reply = await a.resume(pod2.ws_url)
    assert reply["resumed"] is True, reply
    got = await a.recv_until(lambda f: f["type"] == "offer", timeout=5)
    assert got["data"] == {"n": 0} and got["from"] == "bob"
    assert reaped(again) == [("pod-1", "pod-1", 1)]
    assert not [f for f in _drain(b) if f["type"] == "peer-left"]
