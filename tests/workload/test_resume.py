"""Resume: a dropped peer comes back as the same session and loses nothing.

Real pods and Redis. B keeps sending numbered frames to A while A's connection is cut
(or A's pod is killed with SIGKILL); A resumes with its token — on the OTHER pod when
there are two — and must receive every frame exactly once, in order, with seq
continuing without gaps. The room must not see A leave during the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from signaling.client import Client, Closed
from tests.conftest import PodFactory, wait_ready

from .conftest import Pods, joined


class Sender:
    """Sends numbered offers from ``c`` to ``to`` until stopped; bounded in count."""

    def __init__(self, c: Client, to: str, limit: int = 2000, every: float = 0.025) -> None:
        self.c, self.to, self.limit, self.every = c, to, limit, every
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while self.sent < self.limit:
            await self.c.relay("candidate", self.to, {"n": self.sent})
            self.sent += 1
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.sent

    async def wait_sent(self, n: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while self.sent < n:
                await asyncio.sleep(0.01)


def drain(c: Client, frames: list[dict[str, Any]]) -> None:
    """Move what the client already received into ``frames``."""
    while not c.inbox.empty():
        f = c.inbox.get_nowait()
        if f["type"] == "candidate":
            frames.append(f)


async def collect(c: Client, frames: list[dict[str, Any]], upto: int, timeout: float = 15) -> None:
    """Read until the frame numbered ``upto - 1`` arrived, or the connection closed."""
    async with asyncio.timeout(timeout):
        while not frames or frames[-1].get("data", {}).get("n") != upto - 1:
            try:
                f = await c.recv(timeout)
            except Closed:
                return
            if f["type"] == "candidate":
                frames.append(f)


def check_exactly_once(frames: list[dict[str, Any]], total: int) -> None:
    numbers = [f["data"]["n"] for f in frames]
    missing = sorted(set(range(total)) - set(numbers))[:10]
    disorder = [i for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1]][:10]
    assert numbers == list(range(total)), f"missing {missing}, repeated/out of order at {disorder}"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq has a gap or a repeat"


async def test_resume_after_a_cut_on_the_other_pod(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    a = await joined(clients, pods.url_a, "resume-1", "alice")
    b = await joined(clients, pods.url_b, "resume-1", "bob")
    frames: list[dict[str, Any]] = []
    sender = Sender(b, "alice")
    sender.start()
    await sender.wait_sent(30)
    await a.abort()  # the network goes away: no close handshake
    drain(a, frames)
    await sender.wait_sent(sender.sent + 30)
    resumed = await a.resume(pods.url_b)  # the OTHER pod (the same one in embedded mode)
    assert resumed["resumed"] is True and resumed["session"] == a.session_id
    await sender.wait_sent(sender.sent + 30)
    total = await sender.stop()
    await collect(a, frames, total)
    check_exactly_once(frames, total)
    # Nobody saw alice leave.
    await b.send({"type": "ping"})
    pong_or_other = await b.recv_until(lambda f: f["type"] in ("pong", "peer-left"))
    assert pong_or_other["type"] == "pong"


async def test_resume_right_away_before_the_server_noticed(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    """A client that reconnects while its old connection still looks alive to the pod."""
    a = await joined(clients, pods.url_a, "resume-2", "alice")
    b = await joined(clients, pods.url_b, "resume-2", "bob")
    sender = Sender(b, "alice")
    sender.start()
    await sender.wait_sent(30)
    # The client stops reading the old socket (it still looks open to the pod) ...
    assert a._reader is not None
    a._reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await a._reader
    frames: list[dict[str, Any]] = []
    drain(a, frames)
    old_ws, a.ws = a.ws, None
    # ... and resumes on a new connection, saying what it got.
    await a.resume(pods.url_b)
    await sender.wait_sent(sender.sent + 30)
    total = await sender.stop()
    await collect(a, frames, total)
    check_exactly_once(frames, total)
    assert old_ws is not None
    await old_ws.close()


@pytest.mark.parametrize("grace", ["1"])
async def test_peer_left_only_when_grace_ends(
    start_pod: PodFactory, clients: Callable[..., Client], grace: str
) -> None:
    pod = start_pod(args=["--grace", grace])
    a = await joined(clients, pod.ws_url, "grace", "alice")
    b = await joined(clients, pod.ws_url, "grace", "bob")
    await a.abort()
    left = await b.recv_until(lambda f: f["type"] == "peer-left", timeout=10)
    assert left["peer"] == "alice"
    # Too late to resume: a fresh session is made instead, and the room hears of it.
    reply = await a.resume()
    assert reply["resumed"] is False and reply["session"] != ""
    assert (await b.recv_until(lambda f: f["type"] == "peer-joined"))["peer"] == "alice"


async def test_resume_after_kill_9_of_the_pod(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod1 = start_pod(redis_url, "pod-1", wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(pod1, pod2)
    a = await joined(clients, pod1.ws_url, "kill", "alice")
    b = await joined(clients, pod2.ws_url, "kill", "bob")
    frames: list[dict[str, Any]] = []
    sender = Sender(b, "alice")
    sender.start()
    await sender.wait_sent(30)
    pod1.kill9()
    await collect(a, frames, 10**9, timeout=5)  # until the connection is gone
    drain(a, frames)
    await sender.wait_sent(sender.sent + 30)
    resumed = await a.resume(pod2.ws_url)
    assert resumed["resumed"] is True
    await sender.wait_sent(sender.sent + 30)
    total = await sender.stop()
    await collect(a, frames, total)
    check_exactly_once(frames, total)


async def test_peer_of_a_killed_pod_is_announced_gone_after_grace(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """Nobody resumes after the pod died: a surviving pod tells the room, once."""
    pod1 = start_pod(redis_url, "pod-1", args=["--grace", "1"], wait_ready=False)
    pod2 = start_pod(
        redis_url, "pod-2", args=["--grace", "1", "--heartbeat", "0.5"], wait_ready=False
    )
    wait_ready(pod1, pod2)
    await joined(clients, pod1.ws_url, "sweep", "alice")
    b = await joined(clients, pod2.ws_url, "sweep", "bob")
    pod1.kill9()
    # The session expires with the dead pod's heartbeat TTL; then the sweep announces it.
    left = await b.recv_until(lambda f: f["type"] == "peer-left", timeout=30)
    assert left["peer"] == "alice" and left["role"] == "participant"
    await b.relay("offer", "alice", {"x": 1}, frame_id=1)
    err = await b.recv_until(lambda f: f["type"] == "error")
    assert err["code"] == "unknown-peer"


async def test_one_resume_token_on_two_connections_at_once_has_one_winner(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """A client retries a resume on a second connection while the first is still under
    way (both to the same pod, the resume waiting on Redis): one wins, atomically. The
    winner gets `joined` before any frame, then every frame once, in order, seq without
    a gap; the other is refused (`already-joined`) and closed with 4001 without
    touching the session. (In one process without Redis a resume completes before the
    next connection's frame is read: the two cannot overlap.)"""
    pod1 = start_pod(redis_url, "pod-1", wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(pod1, pod2)
    pods = Pods("redis", pod1, pod2, redis_url)
    a = await joined(clients, pods.url_a, "race", "alice")
    b = await joined(clients, pods.url_b, "race", "bob")
    frames: list[dict[str, Any]] = []
    sender = Sender(b, "alice", every=0.005)
    sender.start()
    await sender.wait_sent(30)
    await a.abort()
    drain(a, frames)
    await sender.wait_sent(sender.sent + 30)
    frame = {"type": "join", "room": "race", "peer": "alice", "role": "participant",
             "resume": a.resume_token, "last_seq": a.last_seq, "last_rn": a.last_rn}  # fmt: skip
    x, y = clients(pods.url_b), clients(pods.url_b)
    await asyncio.gather(x.connect(), y.connect())
    await asyncio.gather(x.send_raw(json.dumps(frame)), y.send_raw(json.dumps(frame)))
    firsts = {"x": (await x.recv(10))["type"], "y": (await y.recv(10))["type"]}
    print("first frames:", firsts)
    assert sorted(firsts.values()) == ["error", "joined"], firsts  # never a frame before
    winner, loser = (x, y) if firsts["x"] == "joined" else (y, x)
    assert await loser.wait_closed(5) == 4001
    await sender.wait_sent(sender.sent + 30)
    total = await sender.stop()
    received: list[dict[str, Any]] = []
    await collect(winner, received, total)
    check_exactly_once(frames + received, total)


async def test_one_resume_token_on_two_pods_at_once_has_one_winner(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """The same race across pods: the client's two resumes reach two different pods at
    once (through the Service, say), the session's old pod a third. When the two
    overlap (the second reaches Redis before the first sent `joined`), one wins,
    atomically in Redis: it gets `joined` before any frame; the other is refused
    (`already-joined`, close 4001) without touching the session. When the first was done
    before the second arrived, the second takes the session over and the first is
    closed with 4001 after its `joined` (a resume, as always). Either way, one
    connection holds the session at the end, and every frame arrives once, in order,
    seq without a gap. Before, an overlapping loser could be closed 4001 before any
    frame, after the session had been handed to it. Five rounds, each a fresh race."""
    pod1 = start_pod(redis_url, "pod-1", wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    pod3 = start_pod(redis_url, "pod-3", wait_ready=False)
    wait_ready(pod1, pod2, pod3)
    b = await joined(clients, pod1.ws_url, "race2", "bob")
    a = await joined(clients, pod1.ws_url, "race2", "alice")
    frames: list[dict[str, Any]] = []
    sender = Sender(b, "alice", every=0.025)  # under the rate limit (50/s) throughout
    sender.start()
    await sender.wait_sent(20)
    outcomes: list[str] = []
    for round_ in range(5):
        await a.abort()
        drain(a, frames)
        await sender.wait_sent(sender.sent + 20)
        frame = {"type": "join", "room": "race2", "peer": "alice", "role": "participant",
                 "resume": a.resume_token, "last_seq": a.last_seq,
                 "last_rn": a.last_rn}  # fmt: skip
        urls = (pod2.ws_url, pod3.ws_url) if round_ % 2 == 0 else (pod3.ws_url, pod1.ws_url)
        x, y = clients(urls[0]), clients(urls[1])
        await asyncio.gather(x.connect(), y.connect())
        await asyncio.gather(x.send_raw(json.dumps(frame)), y.send_raw(json.dumps(frame)))
        got = [await c.recv(10) for c in (x, y)]  # Closed here: the old bug
        firsts = [f["type"] for f in got]
        for c, f in zip((x, y), got, strict=True):
            if f["type"] == "joined":  # raw joins: the client learns its token here
                c.room, c.peer, c.role, c.resume_token = (
                    "race2",
                    "alice",
                    "participant",
                    f["resume"],
                )
        if sorted(firsts) == ["error", "joined"]:
            outcomes.append("overlapped: one joined, the other refused")
            winner, loser = (x, y) if firsts[0] == "joined" else (y, x)
            assert await loser.wait_closed(5) == 4001
        else:
            assert firsts == ["joined", "joined"], firsts
            outcomes.append("one after the other: the second took over")
            closed = await asyncio.wait(
                [asyncio.create_task(c.wait_closed(5)) for c in (x, y)],
                return_when=asyncio.FIRST_COMPLETED,
            )
            assert [t.result() for t in closed[0]] == [4001]
            winner = y if x.ws is None or x.ws.closed else x
            drain(x if winner is y else y, frames)
        await sender.wait_sent(sender.sent + 20)
        a = winner  # the next round races from the winner's connection
    print("rounds:", outcomes)
    assert any(o.startswith("overlapped") for o in outcomes), outcomes
    total = await sender.stop()
    received: list[dict[str, Any]] = []
    await collect(a, received, total)
    check_exactly_once(frames + received, total)
