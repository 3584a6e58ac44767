"""Clients that keep signaling through a fault, and what they saw.

``Signaler`` is the operator tests' ``Follower`` (follows ``reconnect`` and ``migrate``,
resumes through the Service when its connection drops) that also records every ``seq``
it receives, the error codes it is answered, and how long each resume took; its Service
URL is looked up again before each attempt (a restarted node agent's service proxy
listens elsewhere). ``Load`` pairs them: in each room of two, each peer sends its partner
numbered candidates, each with an ``id``, one after the other, and resends a frame (same
``id``) only as docs/protocol.md allows: after ``unavailable``, or when the connection
was lost before the ``ack`` came.

``Load.outcome()`` checks the promises of docs/protocol.md ("What ``ack`` promises",
"What ``unavailable`` means", "Resume"): every acked frame delivered once and in order,
``seq`` gapless, every resume a resume (``resumed: true``).

Nothing is faked: real WebSocket clients on loopback against the signaling pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from signaling.client import Client, ClientError
from tests.operator.harness import Follower

# Short mode (make test) by default; the long mode (make chaos) sets more of both.
CLIENTS = int(os.environ.get("ROOMWIRE_CHAOS_CLIENTS", "12"))
STEADY_S = float(os.environ.get("ROOMWIRE_CHAOS_STEADY_S", "3"))
EVERY_S = 0.1  # one sender's pace: a frame every 100 ms, once the previous is acked
RESUME_GIVE_UP_S = 90.0  # a client that cannot resume within this fails the test
ACK_WAIT_S = 10.0  # silence on a live connection before a frame is resent


@dataclass
class Signaler(Follower):
    lookup: Callable[[], Awaitable[str]] | None = None
    seqs: list[int] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    answered: dict[str, str] = field(default_factory=dict)  # frame id -> error code
    outages: list[tuple[float, float]] = field(default_factory=list)  # (lost at, took)
    fresh_sessions: list[str] = field(default_factory=list)  # resumes that were not
    epoch: int = 0  # connections so far: a frame in flight when it changes was cut off
    drops: list[float] = field(default_factory=list)  # when a connection was lost unasked
    _moves_seen: int = 0

    def _take(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int):
            self.seqs.append(seq)
        if frame.get("type") == "error":
            code = str(frame.get("code"))
            self.codes[code] += 1
            if frame.get("id") is not None:
                self.answered[str(frame["id"])] = code
        super()._take(frame)

    async def _resume(self, url: str, after_ms: int) -> None:
        lost_at = time.monotonic()
        if self.moves == self._moves_seen:  # no reconnect or migrate order came first
            self.drops.append(lost_at)
        self._moves_seen = self.moves
        self.ready.clear()
        self.epoch += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.wait_closed(), after_ms / 1000 + 5)
        await asyncio.sleep(after_ms / 1000)
        by_service = url == self.service_url
        for attempt in range(1, 1000):
            self._drain()
            if by_service and self.lookup is not None:
                with contextlib.suppress(Exception):
                    self.service_url = url = await self.lookup()
            try:
                joined = await self.client.resume(url, timeout=5)
                break
            except (ClientError, OSError, TimeoutError, aiohttp.ClientError) as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                if time.monotonic() - lost_at > RESUME_GIVE_UP_S:
                    raise AssertionError(f"{self.peer} could not resume: {self.errors[-3:]}") from e
                await asyncio.sleep(min(0.1 * attempt, 1.0))
        if not joined.get("resumed"):
            self.fresh_sessions.append(str(joined.get("session")))
        self.epoch += 1
        self.resumes += 1
        self.outages.append((lost_at, time.monotonic() - lost_at))
        self.ready.set()

    async def send_frame(self, to: str, n: int) -> tuple[int, bool]:
        """Relay ``n`` to ``to`` until acked; return (sends, whether a send was cut off
        by a lost connection before its ack: the one case where a resend may deliver
        twice, since the pod answered nothing)."""
        fid = f"{self.peer}-{n}"
        sends, cut = 0, False
        deadline = time.monotonic() + RESUME_GIVE_UP_S + 30
        while time.monotonic() < deadline:
            await asyncio.wait_for(self.ready.wait(), max(deadline - time.monotonic(), 0.01))
            epoch = self.epoch
            self.answered.pop(fid, None)
            frame: dict[str, Any] = {"type": "candidate", "to": to, "data": {"n": n}, "id": fid}
            if sends:  # a resend, marked: the receiver gets it once (docs/protocol.md)
                frame["resend"] = True
            try:
                await self.client.send(frame)
            except (ClientError, ConnectionError, RuntimeError):
                await asyncio.sleep(0.05)
                continue
            sends += 1
            wait_until = time.monotonic() + ACK_WAIT_S
            while (
                fid not in self.acked
                and fid not in self.answered
                and self.epoch == epoch
                and time.monotonic() < wait_until
            ):
                await asyncio.sleep(0.01)
            if fid in self.acked:
                return sends, cut
            if fid in self.answered and self.answered[fid] != "unavailable":
                raise AssertionError(f"{fid} refused: {self.answered[fid]}")
            if self.epoch != epoch:
                cut = True
            elif fid in self.answered:  # unavailable: resend with the same id
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.peer} could not send {n}")


@dataclass
class Outcome:
    """What the clients saw over one scenario (times in seconds)."""

    clients: int
    acked: int  # frames acked
    lost: int  # acked, never delivered
    duplicates: int  # delivered twice though never cut off
    cut_duplicates: int  # delivered twice after a send cut off by a lost connection
    out_of_order: int
    seq_faults: int  # a step of seq other than +1
    not_resumed: int  # a resume answered with a new session
    failed_clients: int  # a client task that ended with an error
    resumed_clients: int  # clients that resumed at least once
    resumes: int
    dropped: int  # connections lost without an order to move (then resumed)
    resume_max_s: float  # the longest from losing a connection (or a move order) to joined
    stall_max_s: float  # the longest any sender waited between two acks
    unavailable: int  # frames answered unavailable (then resent)
    resent: int  # sends beyond the first, all frames

    def table_row(self) -> dict[str, Any]:
        return asdict(self)

    def promises_kept(self) -> bool:
        """What docs/protocol.md promises under every fault."""
        return not (
            self.lost
            or self.duplicates
            or self.out_of_order
            or self.seq_faults
            or self.not_resumed
            or self.failed_clients
        )


class Load:
    """Rooms of two, each peer relaying numbered frames to the other, until stopped."""

    def __init__(self, clients: list[Signaler], every: float = EVERY_S) -> None:
        self.clients = clients
        self.every = every
        self.sent: dict[str, int] = {}
        self.extra_sends = 0
        self.cut: dict[str, set[int]] = {}
        self.ack_times: dict[str, list[float]] = {}
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(0, len(self.clients) - 1, 2):
            a, b = self.clients[i], self.clients[i + 1]
            self.tasks += [loop.create_task(self._run(a, b)), loop.create_task(self._run(b, a))]

    async def _run(self, a: Signaler, b: Signaler) -> None:
        n = 0
        times = self.ack_times.setdefault(a.peer, [time.monotonic()])
        cut = self.cut.setdefault(a.peer, set())
        while not self.stopping.is_set():
            n += 1
            sends, was_cut = await a.send_frame(b.peer, n)
            self.extra_sends += sends - 1
            if was_cut:
                cut.add(n)
            self.sent[a.peer] = n
            times.append(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.every)

    def partner(self, c: Signaler) -> Signaler:
        i = self.clients.index(c)
        return self.clients[i + 1 if i % 2 == 0 else i - 1]

    def missing(self) -> dict[str, list[int]]:
        """Per sender, the acked frames its partner has not received (yet)."""
        out = {}
        for a in self.clients:
            got = set(self.partner(a).received.get(a.peer, []))
            lost = [n for n in range(1, self.sent.get(a.peer, 0) + 1) if n not in got]
            if lost:
                out[a.peer] = lost
        return out

    async def stop(self, settle_s: float = 20) -> None:
        """Stop sending, then wait (bounded) until every acked frame is delivered."""
        self.stopping.set()
        done = await asyncio.gather(*self.tasks, return_exceptions=True)
        errors = [d for d in done if isinstance(d, BaseException)]
        assert not errors, f"senders failed: {errors[:3]}"
        deadline = time.monotonic() + settle_s
        while self.missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def outcome(self, since: float = 0.0) -> Outcome:
        """Count what the promises forbid; ``since``: only gaps and resumes from then."""
        dup = cut_dup = disorder = 0
        for a in self.clients:
            got = self.partner(a).received.get(a.peer, [])
            seen: Counter[int] = Counter(got)
            for n, k in seen.items():
                if k > 1 and n in self.cut.get(a.peer, set()):
                    cut_dup += k - 1
                elif k > 1:
                    dup += k - 1
            firsts = list(dict.fromkeys(got))
            disorder += sum(1 for x, y in itertools.pairwise(firsts) if y < x)
        seq_faults = sum(
            1 for c in self.clients for x, y in zip(c.seqs, c.seqs[1:], strict=False) if y != x + 1
        )
        # resumes that ended after ``since`` (one may have begun just before it)
        outages = [took for c in self.clients for at, took in c.outages if at + took >= since]
        stalls = [
            y - x
            for times in self.ack_times.values()
            for x, y in itertools.pairwise(times)
            if y >= since
        ]
        return Outcome(
            clients=len(self.clients),
            acked=sum(self.sent.values()),
            lost=sum(len(v) for v in self.missing().values()),
            duplicates=dup,
            cut_duplicates=cut_dup,
            out_of_order=disorder,
            seq_faults=seq_faults,
            not_resumed=sum(len(c.fresh_sessions) for c in self.clients),
            failed_clients=sum(1 for c in self.clients if c.task is not None and c.task.done()),
            resumed_clients=sum(
                1 for c in self.clients if any(at + took >= since for at, took in c.outages)
            ),
            resumes=len(outages),
            dropped=sum(1 for c in self.clients for at in c.drops if at >= since),
            resume_max_s=round(max(outages, default=0.0), 2),
            stall_max_s=round(max(stalls, default=0.0), 2),
            unavailable=sum(c.codes["unavailable"] for c in self.clients),
            resent=self.extra_sends,
        )


async def connect(
    urls: list[str], service_url: str, lookup: Callable[[], Awaitable[str]], room_prefix: str
) -> list[Signaler]:
    """``CLIENTS`` clients in rooms of two, the two peers of a room joined straight to two
    different pods (``urls``, in turn), each then following orders and resuming through
    the Service."""
    out: list[Signaler] = []
    try:
        for i in range(CLIENTS - CLIENTS % 2):
            room, peer = f"{room_prefix}-{i // 2}", f"p{i}"
            cl = Client(urls[(i // 2 + i % 2) % len(urls)])
            try:
                await cl.connect()
                await cl.join(room, peer)
            except BaseException:
                await cl.close()
                raise
            s = Signaler(cl, service_url, room, peer, lookup=lookup)
            s.start()
            out.append(s)
    except BaseException:
        await disconnect(out)
        raise
    return out


async def disconnect(clients: list[Signaler]) -> None:
    """Each client leaves its room (its session ends, nothing lingers in grace for the
    next scenario) and closes."""
    for c in clients:
        if c.task is not None:
            c.task.cancel()
        with contextlib.suppress(Exception):
            await c.client.send({"type": "leave"})
            await c.client.wait_closed(2)
        await c.stop()
