"""The aiohttp adapter: WebSocket connections, local delivery, lifecycle, HTTP routes.

Decisions about frames are the protocol core's (``signaling.protocol``); what crosses
processes is the registry's (``signaling.registry``). This module owns the sockets:
bounded outbound queues, seq stamping, grace timers, drain, and the inbox handler
through which other pods and the operator reach this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from aiohttp import WSCloseCode, WSMsgType, web

from roomwire_contract import control

from .config import Settings
from .metrics import Metrics
from .protocol import (
    Close,
    CloseCode,
    Connection,
    ErrorCode,
    Frame,
    Join,
    Leave,
    Relay,
    ResumeClaim,
    Role,
    RoomEvent,
    Send,
    ack,
    encode_frame,
    error,
    make_resume_token,
    read_resume_token,
)
from .registry import (
    PodStats,
    Registry,
    RegistryError,
    RelayResult,
    RoomFull,
    SessionRecord,
    splice,
)
from .tokens import TokenError

log = logging.getLogger("signaling")

RECENT_FRAMES = 32
MAX_BACKLOG = 4096  # registry operations in flight before connections stop being read
NEGOTIATION_S = 10.0  # longest an offer waits for its answer before moves are allowed again
SWEEP_EVERY = 3  # heartbeats between sweeps of rooms for expired sessions
RETRY_MIN_S, RETRY_MAX_S = 0.5, 2.0  # back-off while the registry does not answer


@dataclass(eq=False)
class Attachment:
    """One open WebSocket and its bounded outbound queue."""

    ws: web.WebSocketResponse
    # The socket's transport. Typed as a write transport, not checked with isinstance:
    # uvloop's transports do not derive from asyncio's classes.
    transport: asyncio.WriteTransport | None = None
    queue: deque[str] = field(default_factory=deque)
    writer: asyncio.Task[None] | None = None
    closing: bool = False

    def emit(self, text: str) -> None:
        """Send now when nothing waits before it, else queue behind the writer task.

        The direct path writes one whole unmasked text frame to the transport: no task
        and no await per frame. Control frames aiohttp writes are whole frames as well,
        so the two never interleave inside a frame.
        """
        t = self.transport
        if (
            not self.queue
            and self.writer is None
            and not self.closing
            and t is not None
            and not t.is_closing()
            and not self.ws.closed
            and t.get_write_buffer_size() == 0
        ):
            t.write(text_frame(text.encode()))
            return
        self.queue.append(text)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(_write_queue(self))


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (server to client, RFC 6455)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


async def _write_queue(att: Attachment) -> None:
    """Drain the queue with aiohttp's writer, which waits while the socket is full."""
    try:
        while att.queue:
            await att.ws.send_str(att.queue.popleft())
    except (ConnectionError, RuntimeError):
        att.queue.clear()
    finally:
        att.writer = None


@dataclass(eq=False)
class LocalSession:
    sid: str
    room: str
    peer: str
    role: Role
    resume_token: str
    seq: int = 0
    attachment: Attachment | None = None
    # While joining or resuming, frames that arrive are held here as (n, arrival, text)
    # and merged by n with the frames kept elsewhere, so the peer sees them in order.
    resuming: list[tuple[float, int, str]] | None = None
    grace_timer: asyncio.TimerHandle | None = None
    # The last frames sent, stamped: a dropped connection may have lost them in flight,
    # so a resume re-sends those past the client's last_seq.
    recent: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    # Until when an offer/answer exchange is under way (monotonic clock); 0 when not.
    negotiating_until: float = 0.0
    last_rn: int = 0  # the highest cross-pod order number delivered here
    busy_published: float = 0.0

    def note_signal(self, text: str) -> None:
        """Track offer/answer: a session is not moved in the middle of a negotiation."""
        if text.startswith('{"type":"offer"'):
            self.negotiating_until = time.monotonic() + NEGOTIATION_S
        elif text.startswith('{"type":"answer"'):
            self.negotiating_until = 0.0

    @property
    def negotiating(self) -> bool:
        return self.negotiating_until > time.monotonic()

    @property
    def live(self) -> bool:
        return self.attachment is not None and self.resuming is None


class Hub:
    """Sessions held by this process, and everything that happens to them."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.registry = registry
        self.pod_id = settings.pod_id
        self.sessions: dict[str, LocalSession] = {}
        self.by_peer: dict[tuple[str, str], LocalSession] = {}
        self.rooms: dict[str, set[str]] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.draining = False
        # False until the registry answered once, and whenever it stops answering:
        # /readyz follows it, /healthz never does (a Redis outage is no reason to restart).
        self.registry_ok = False
        self.resume_secret = ""
        self.metrics = Metrics(
            lambda: len(self.sockets), lambda: len(self.sessions), lambda: len(self.rooms)
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._takeover_waits: dict[str, asyncio.Future[list[tuple[int, str]]]] = {}

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Returns at once: the registry is reached in the background, with back-off, so
        the pod serves /healthz from its first second whether Redis is up or not."""
        await self.registry.start(self.on_inbox)
        self.spawn(self._heartbeat_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        with contextlib.suppress(Exception):
            await self.registry.deregister()
        await self.registry.close()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> PodStats:
        now, used = time.monotonic(), time.process_time()
        last_now, last_used = self._cpu_mark
        self._cpu_mark = (now, used)
        cpu = (used - last_used) / (now - last_now) if now > last_now else 0.0
        return PodStats(
            self.settings.advertise_url,
            len(self.sockets),
            len(self.sessions),
            len(self.rooms),
            self.draining,
            round(cpu, 3),
        )

    async def _heartbeat_loop(self) -> None:
        beats, retry_s, reported = 0, RETRY_MIN_S, False
        while True:
            beats += 1
            if self.registry_ok and beats % SWEEP_EVERY == 0:
                await self._sweep()
            records = await self._records()
            try:
                if not self.resume_secret:
                    self.resume_secret = await self.registry.resume_secret()
                moved = await self.registry.heartbeat(self.stats(), records)
                if not self.registry_ok:
                    log.info("registry reachable")
                self.registry_ok, retry_s, reported = True, RETRY_MIN_S, False
            except RegistryError as e:
                if self.registry_ok or not reported:
                    log.warning("registry unreachable: %s (retrying)", e)
                self.registry_ok, reported = False, True
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)
                continue
            for sid in moved:
                if (s := self.sessions.get(sid)) is not None:
                    await self._drop(s, CloseCode.REPLACED, "session resumed elsewhere")
            await self._reap_dead_pods()
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _reap_dead_pods(self) -> None:
        """Pods whose heartbeat expired died without cleaning up: their sessions go to
        grace (once, whoever notices first: any pod or the operator), so that they can
        resume anywhere and frames for them are kept, not refused."""
        try:
            reaped = await self.registry.reap_dead_pods()
        except RegistryError as e:
            log.warning("could not reap dead pods: %s", e)
            return
        for pod, n in reaped.items():
            log.info("pod %s stopped heartbeating: %d of its sessions now in grace", pod, n)

    async def _records(self) -> list[SessionRecord]:
        """Every session's record for the heartbeat, built a few hundred per loop turn: a
        pod holding thousands of sessions would otherwise stall them all at each beat."""
        records = []
        for i, s in enumerate(list(self.sessions.values())):
            records.append(
                SessionRecord(
                    s.sid, s.room, s.peer, s.role.value, s.live, s.seq, _busy_change(s), s.last_rn
                )
            )
            if i % 500 == 499:
                await asyncio.sleep(0)
        return records

    async def _sweep(self) -> None:
        """Tell local members about peers whose sessions expired with no pod to say so."""
        for room in list(self.rooms):
            try:
                gone = await self.registry.sweep(room)
            except RegistryError:
                return
            for peer in gone:
                await self.room_notice(
                    room, {"type": "peer-left", "peer": peer.peer, "role": peer.role}, ""
                )

    # ---- delivery -------------------------------------------------------------------

    def deliver(
        self, session: LocalSession, text: str, sent_at: float | None = None, n: int | None = None
    ) -> None:
        """Stamp seq and queue for the socket; frames for a detached session are kept."""
        if session.resuming is not None:
            order = float("inf") if n is None else float(n)
            session.resuming.append((order, len(session.resuming), text))
            return
        if n is not None and n <= session.last_rn:
            return  # a copy of one delivered already (recovered after an inbox outage)
        att = session.attachment
        if att is None or att.closing:
            self.spawn(self._keep(session.sid, text, n))
            return
        if len(att.queue) >= self.limits.outbound_queue:
            # A slow consumer never stalls anyone else: it is closed, and may resume.
            log.info("slow consumer %s/%s closed", session.room, session.peer)
            self.spawn(self.close_socket(att, CloseCode.TRY_AGAIN_LATER, "slow consumer"))
            self.spawn(self._keep(session.sid, text, n))
            return
        session.note_signal(text)
        session.seq += 1
        if n is not None:
            session.last_rn = n
        # rn: the frame's place in the session's cross-pod order (see last_rn on resume)
        stamped = splice(
            text, f',"seq":{session.seq}' if n is None else f',"rn":{n},"seq":{session.seq}'
        )
        session.recent.append((session.seq, stamped))
        att.emit(stamped)
        if sent_at is not None:
            self.metrics.relay_latency.observe(max(0.0, time.time() - sent_at))

    async def _keep(self, sid: str, text: str, n: int | None = None) -> None:
        self.metrics.kept.inc()
        try:
            mine = await self.registry.keep(sid, text, n)
        except RegistryError as e:
            log.warning("could not keep a frame for %s: %s", sid, e)
            return
        s = self.sessions.get(sid)
        if mine and s is not None and s.attachment is not None:
            self.deliver(s, text)

    def send_direct(self, att: Attachment, frame: Frame) -> None:
        """A frame for this connection only (errors, acks, joined): no seq."""
        att.emit(encode_frame(frame))
        if frame.get("type") == "error":
            self.metrics.errors.inc(str(frame.get("code")))

    async def close_socket(self, att: Attachment, code: int, reason: str) -> None:
        if att.closing:
            return
        att.closing = True
        self.metrics.closes.inc(str(code))
        if att.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(att.writer), 2.0)
        with contextlib.suppress(Exception):
            await att.ws.close(code=code, message=reason.encode()[:120])

    def local_room_members(self, room: str) -> list[LocalSession]:
        return [self.sessions[sid] for sid in self.rooms.get(room, ()) if sid in self.sessions]

    def deliver_room_locally(
        self, room: str, text: str, exclude_sid: str, screens_only: bool
    ) -> None:
        for s in self.local_room_members(room):
            if s.sid != exclude_sid and (not screens_only or s.role == Role.SCREEN):
                self.deliver(s, text)

    async def room_notice(self, room: str, frame: Frame, exclude_sid: str) -> None:
        text = encode_frame(frame)
        self.deliver_room_locally(room, text, exclude_sid, False)
        try:
            await self.registry.fan_out(
                room, text, screens_only=False, exclude_sid=exclude_sid, replay=False
            )
        except RegistryError as e:
            log.warning("room notice for %s not fanned out: %s", room, e)

    # ---- session index ------------------------------------------------------------

    def index(self, s: LocalSession) -> None:
        self.sessions[s.sid] = s
        self.by_peer[(s.room, s.peer)] = s
        self.rooms.setdefault(s.room, set()).add(s.sid)

    def unindex(self, s: LocalSession) -> None:
        if s.grace_timer is not None:
            s.grace_timer.cancel()
            s.grace_timer = None
        self.sessions.pop(s.sid, None)
        if self.by_peer.get((s.room, s.peer)) is s:
            del self.by_peer[(s.room, s.peer)]
        members = self.rooms.get(s.room)
        if members is not None:
            members.discard(s.sid)
            if not members:
                del self.rooms[s.room]

    # ---- inbox: other pods and the operator -------------------------------------------

    def on_inbox(self, msg: dict[str, Any]) -> Awaitable[None] | None:
        """A message from another pod or the operator. Frames for sessions live here are
        delivered at once; the rest is returned as a coroutine to await, in order."""
        if msg.get("k") == "batch":
            # The hot path: frames from other pods, each for one session here.
            frames, sent_at = msg["frames"], msg["t"]
            for i, (sid, n, text) in enumerate(frames):
                if (s := self._attached(sid)) is None:
                    return self._inbox_frames(frames[i:], sent_at)
                self.deliver(s, text, sent_at, n)
            return None
        return self._inbox_other(msg)

    def _attached(self, sid: str) -> LocalSession | None:
        """The session, if it is here with a connection (or one resuming onto it)."""
        s = self.sessions.get(sid)
        if s is not None and (s.attachment is not None or s.resuming is not None):
            return s
        return None

    async def _inbox_frames(self, frames: list[tuple[str, int, str]], sent_at: float) -> None:
        for sid, n, text in frames:
            if (s := self._attached(sid)) is not None:
                self.deliver(s, text, sent_at, n)
            else:
                # Detached, moved or gone: the registry forwards or keeps it. Awaited, so
                # that a takeover handled after this message finds it passed on.
                await self._keep(sid, text, n)

    async def _inbox_other(self, msg: dict[str, Any]) -> None:
        kind = msg.get("k")
        if kind == "takeover":
            sid, new_pod = str(msg.get("sid")), str(msg.get("pod"))
            s = self.sessions.get(sid)
            recent: list[tuple[int, str]] = []
            if s is not None and new_pod != self.pod_id:
                recent = list(s.recent)
                await self._drop(s, CloseCode.REPLACED, "session resumed elsewhere")
            if not msg.get("replaced"):
                # Inbox messages are handled in order, so everything this pod held for
                # the session has been passed on by now.
                with contextlib.suppress(RegistryError):
                    await self.registry.takeover_done(new_pod, sid, recent)
        elif kind == "resubscribed":
            # Awaited: the frames that arrive from now on wait behind the recovered ones.
            await self._recover_kept()
        elif kind == "takeover-done":
            waiter = self._takeover_waits.get(str(msg.get("sid")))
            if waiter is not None and not waiter.done():
                items = msg.get("recent") or []
                waiter.set_result([(int(q), str(t)) for q, t in items])
        elif kind == "cmd":
            cmd = control.verify(self.settings.control_secret, msg)
            if cmd is None:
                log.warning("ignored an operator command with a bad signature")
                return
            await self._command(cmd)

    async def _recover_kept(self) -> None:
        """After the inbox was down: deliver, in order, the frames kept for sessions live
        here meanwhile and those the lost connection swallowed (past each last rn)."""
        live = [s for s in self.sessions.values() if s.live]
        found = await asyncio.gather(
            *(self.registry.take_kept(s.sid, s.last_rn) for s in live), return_exceptions=True
        )
        for s, frames in zip(live, found, strict=True):
            if isinstance(frames, BaseException):
                log.warning("could not recover frames for %s: %s", s.sid, frames)
                continue
            for n, text in frames:
                self.deliver(s, text, None, n)

    async def _drop(self, s: LocalSession, code: int, reason: str) -> None:
        """Forget a session without telling the room: it lives on elsewhere."""
        self.unindex(s)
        att, s.attachment = s.attachment, None
        if att is not None:
            await self.close_socket(att, code, reason)

    async def _command(self, cmd: dict[str, Any]) -> None:
        op = cmd.get("op")
        log.info("operator command %s", op)
        if op == "reconnect":
            after = int(cmd.get("after_ms", 0))
            for sid in cmd.get("sids") or []:
                s = self.sessions.get(str(sid))
                if s is not None and s.attachment is not None:
                    self.spawn(self._send_reconnect(s, after, 0.0, wait_negotiation=True))
        elif op == "migrate-room":
            room, url = str(cmd.get("room")), str(cmd.get("url"))
            for s in self.local_room_members(room):
                if s.attachment is not None:
                    self.send_direct(
                        s.attachment, {"type": "migrate", "url": url, "resume": s.resume_token}
                    )
                    self.spawn(self._close_later(s, 2.0))
        elif op == "drain":
            self.spawn(self.drain())

    async def _send_reconnect(
        self, s: LocalSession, after_ms: int, delay_s: float, wait_negotiation: bool = False
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        # A rebalance waits (bounded) for an offer/answer exchange to finish.
        while wait_negotiation and s.negotiating:
            await asyncio.sleep(0.1)
        att = s.attachment
        if att is None or att.closing:
            return
        self.send_direct(att, {"type": "reconnect", "after_ms": after_ms, "resume": s.resume_token})
        await self.close_socket(att, CloseCode.SERVICE_RESTART, "reconnect")

    async def _close_later(self, s: LocalSession, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        att = s.attachment
        if att is not None:
            await self.close_socket(att, CloseCode.SERVICE_RESTART, "migrated")

    # ---- drain --------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop taking connections; ask clients to reconnect, spread over the window."""
        if self.draining:
            return
        self.draining = True
        log.info("draining %d sessions over %.1fs", len(self.sessions), self.limits.drain_s)
        with contextlib.suppress(RegistryError):
            await self.registry.heartbeat(self.stats(), [])
        window = self.limits.drain_s * 0.8
        jobs = []
        for s in list(self.sessions.values()):
            if s.attachment is not None:
                delay = random.uniform(0, window)
                jobs.append(self._send_reconnect(s, random.randint(0, 500), delay))
        if jobs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*jobs, return_exceptions=True), self.limits.drain_s
                )
        # Give the last closes a moment to reach their clients, bounded.
        deadline = time.monotonic() + 2.0
        while self.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # ---- one connection -----------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="draining\n")
        # No per-message compression: small JSON frames gain little and it costs more CPU
        # than the rest of a relay (measured in bench/workload_findings.md).
        ws = web.WebSocketResponse(
            heartbeat=self.settings.ws_heartbeat_s,
            max_msg_size=self.limits.max_frame_bytes,
            compress=False,
        )
        await ws.prepare(request)
        self.sockets.add(ws)
        att = Attachment(ws, cast(asyncio.WriteTransport | None, request.transport))
        conn = Connection(self.limits, self.settings.join_policy)
        session: LocalSession | None = None
        left = False
        try:
            async for msg in ws:
                now = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    intents = conn.receive_text(msg.data, now)
                elif msg.type == WSMsgType.BINARY:
                    intents = conn.receive_binary(now)
                else:
                    break
                received = time.time()
                for intent in intents:
                    if isinstance(intent, Send):
                        self.send_direct(att, intent.frame)
                    elif isinstance(intent, Close):
                        await self.close_socket(att, intent.code, intent.reason)
                    elif isinstance(intent, Join):
                        session = await self._join(conn, att, intent)
                    elif session is None:
                        continue
                    elif isinstance(intent, Relay):
                        self.metrics.messages.inc(str(intent.frame["type"]))
                        await self._relay(session, att, intent, received)
                    elif isinstance(intent, RoomEvent):
                        self.metrics.messages.inc(str(intent.frame["type"]))
                        await self._room_event(session, att, intent)
                    elif isinstance(intent, Leave):
                        left = True
                        await self._leave(session)
                        session = None
                if att.closing:
                    break
        finally:
            if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                self.metrics.closes.inc(str(CloseCode.TOO_BIG))
            self.sockets.discard(ws)
            if session is not None and not left and session.attachment is att:
                await self._detach(session)
        return ws

    async def _join(self, conn: Connection, att: Attachment, j: Join) -> LocalSession | None:
        try:
            if not self.resume_secret:
                raise RegistryError("registry not reached yet")
            if j.resume is not None:
                session = await self._resume(att, j)
            else:
                session = None
            if session is None:
                session = await self._fresh_join(att, j)
        except RoomFull as e:
            conn.join_refused()
            self.send_direct(att, error(ErrorCode.ROOM_FULL, str(e), j.id))
            await self.close_socket(att, CloseCode.TRY_AGAIN_LATER, "room full")
            return None
        except TokenError as e:
            conn.join_refused()
            self.send_direct(att, error(ErrorCode.UNAUTHORIZED, f"resume refused: {e}", j.id))
            await self.close_socket(att, CloseCode.POLICY, "unauthorized")
            return None
        except RegistryError as e:
            conn.join_refused()
            log.warning("join failed: %s", e)
            self.send_direct(att, error(ErrorCode.UNAVAILABLE, "registry unavailable, retry", j.id))
            await self.close_socket(att, CloseCode.TRY_AGAIN_LATER, "registry unavailable")
            return None
        conn.join_accepted(session.room, session.peer, session.role)
        return session

    async def _fresh_join(self, att: Attachment, j: Join) -> LocalSession:
        sid = secrets.token_hex(12)
        token = make_resume_token(self.resume_secret, ResumeClaim(sid, j.room, j.peer, j.role))
        # Indexed (holding frames) before it is registered, so that nothing sent to it
        # between registration and `joined` is lost.
        session = LocalSession(sid, j.room, j.peer, j.role, token, attachment=att, resuming=[])
        old_local = self.by_peer.get((j.room, j.peer))
        self.index(session)
        try:
            out = await self.registry.join(
                sid, j.room, j.peer, j.role, self.limits.max_peers_per_room
            )
        except BaseException:
            self.unindex(session)
            if old_local is not None and old_local.sid in self.sessions:
                self.by_peer[(j.room, j.peer)] = old_local
            raise
        if out.replaced_sid is not None:
            old = self.sessions.get(out.replaced_sid)
            if old is not None:
                await self._drop(old, CloseCode.REPLACED, "replaced by a new connection")
            elif out.replaced_pod:
                await self.registry.notify_takeover(out.replaced_pod, out.replaced_sid, True)
        # The room hears of the peer before the peer hears `joined`: whoever it then talks
        # to already knows it.
        await self.room_notice(
            j.room, {"type": "peer-joined", "peer": j.peer, "role": j.role.value}, sid
        )
        self.send_direct(
            att,
            {
                "type": "joined",
                "room": j.room,
                "peer": j.peer,
                "role": j.role.value,
                "session": sid,
                "resume": token,
                "peers": [{"peer": p.peer, "role": p.role} for p in out.peers],
                "epoch": out.epoch,
                "offset": out.offset,
                "pod": self.pod_id,
                "resumed": False,
                **({"id": j.id} if j.id is not None else {}),
            },
        )
        self._release(session, [])
        return session

    def _release(self, s: LocalSession, kept: list[tuple[int, str]]) -> None:
        """End holding: kept and held frames merged by their order n, then arrival."""
        held, s.resuming = s.resuming or [], None
        merged = [(float(n), -1, text) for n, text in kept] + held
        for order, _, text in sorted(merged, key=lambda h: (h[0], h[1])):
            self.deliver(s, text)
            if order != float("inf"):
                s.last_rn = max(s.last_rn, int(order))

    async def _resume(self, att: Attachment, j: Join) -> LocalSession | None:
        assert j.resume is not None
        claim = read_resume_token(self.resume_secret, j.resume, j.room, j.peer)
        s = self.sessions.get(claim.session)
        if s is not None:
            old_att = s.attachment
            s.attachment = att
            if s.grace_timer is not None:
                s.grace_timer.cancel()
                s.grace_timer = None
            if old_att is not None:
                await self.close_socket(old_att, CloseCode.REPLACED, "resumed on a new connection")
        else:
            s = LocalSession(
                claim.session, claim.room, claim.peer, claim.role, j.resume, attachment=att
            )
            self.index(s)
        s.resuming = []
        try:
            out = await self.registry.resume(
                claim.session, claim.room, claim.peer, claim.role, j.last_rn
            )
        except BaseException:
            s.resuming = None
            raise
        if out is None:
            # Too late: the grace period is over and the room saw the peer leave.
            s.resuming = None
            self.unindex(s)
            s.attachment = None
            return None
        recent = {q: t for q, t in [*out.recent, *s.recent]}
        if out.old_pod and out.old_pod != self.pod_id:
            # Wait (bounded) until the old pod has passed on what it held for the session.
            waiter: asyncio.Future[list[tuple[int, str]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._takeover_waits[s.sid] = waiter
            try:
                if await self.registry.notify_takeover(out.old_pod, s.sid, False) > 0:
                    with contextlib.suppress(TimeoutError):
                        recent.update(await asyncio.wait_for(waiter, 1.0))
            except RegistryError as e:
                log.warning("takeover notice for %s failed: %s", s.sid, e)
            finally:
                self._takeover_waits.pop(s.sid, None)
        # Frames sent on the lost connection that the client says it did not get.
        resend = (
            sorted((q, t) for q, t in recent.items() if q > j.last_seq)
            if j.last_seq is not None
            else []
        )
        s.seq = max(s.seq, out.seq, j.last_seq or 0, *(q for q in recent))
        # A frame re-sent from the lost connection keeps its seq; drop its routed copy.
        resent_rn = {rn for _, t in resend if (rn := _rn_of(t)) is not None}
        s.last_rn = max(s.last_rn, j.last_rn or 0, *resent_rn)
        kept = [(n, t) for n, t in out.kept if n not in resent_rn]
        held_n = len(s.resuming or [])
        self.send_direct(
            att,
            {
                "type": "joined",
                "room": s.room,
                "peer": s.peer,
                "role": s.role.value,
                "session": s.sid,
                "resume": s.resume_token,
                "peers": await self._peers(s),
                "epoch": "",
                "offset": 0,
                "pod": self.pod_id,
                "resumed": True,
                "kept": len(out.kept) + held_n,
                "dropped": out.dropped,
                **({"id": j.id} if j.id is not None else {}),
            },
        )
        s.recent.clear()
        for q, t in resend:
            s.recent.append((q, t))
            att.emit(t)
        self._release(s, kept)
        return s

    async def _peers(self, s: LocalSession) -> list[dict[str, str]]:
        return [
            {"peer": p.peer, "role": p.role}
            for p in await self.registry.members(s.room)
            if p.peer != s.peer
        ]

    async def _detach(self, s: LocalSession) -> None:
        s.attachment = None
        if self.draining or s.sid not in self.sessions:
            # Draining: the session waits for its peer in the registry, not here.
            with contextlib.suppress(RegistryError):
                await self.registry.detach(s.sid, s.seq, self.limits.grace_s, list(s.recent))
            self.unindex(s)
            return
        try:
            await self.registry.detach(s.sid, s.seq, self.limits.grace_s, list(s.recent))
        except RegistryError as e:
            log.warning("detach of %s not registered: %s", s.sid, e)
        loop = asyncio.get_running_loop()
        s.grace_timer = loop.call_later(
            self.limits.grace_s, lambda: self.spawn(self._grace_over(s))
        )

    async def _grace_over(self, s: LocalSession) -> None:
        if self.sessions.get(s.sid) is not s or s.attachment is not None:
            return
        self.unindex(s)
        try:
            removed = await self.registry.remove(s.sid, s.room, s.peer)
        except RegistryError:
            removed = True
        if removed:
            await self.room_notice(
                s.room, {"type": "peer-left", "peer": s.peer, "role": s.role.value}, s.sid
            )

    async def _leave(self, s: LocalSession) -> None:
        self.unindex(s)
        s.attachment = None
        try:
            await self.registry.remove(s.sid, s.room, s.peer)
        except RegistryError as e:
            log.warning("leave of %s not registered: %s", s.sid, e)
        await self.room_notice(
            s.room, {"type": "peer-left", "peer": s.peer, "role": s.role.value}, s.sid
        )

    async def _relay(self, s: LocalSession, att: Attachment, r: Relay, received: float) -> None:
        target = self.by_peer.get((s.room, r.to))
        text = r.text
        s.note_signal(text)
        if target is not None and target.sid in self.sessions:
            # Same pod: straight to the socket, no registry.
            self.deliver(target, text)
            self.metrics.relay_latency.observe(time.time() - received)
            self.metrics.delivered.inc("local")
            if r.id is not None:
                self.send_direct(att, ack(r.id))
            return
        # Another pod: the registry routes it in call order; this connection reads its
        # next frame meanwhile, and the answer (ack or error) follows when it is known.
        self.registry.relay(s.room, r.to, text, partial(self._relayed, att, s.room, r))
        self.metrics.delivered.inc("remote")
        if self.registry.backlog() > MAX_BACKLOG:
            await self.registry.caught_up()  # back-pressure: stop reading this socket a while

    def _relayed(self, att: Attachment, room: str, r: Relay, result: RelayResult) -> None:
        if result == RelayResult.HERE:
            # The peer resumed on this pod while the frame was on its way to Redis.
            target = self.by_peer.get((room, r.to))
            if target is not None:
                self.deliver(target, r.text)
        if att.closing:
            return
        if result == RelayResult.FAILED:
            self.send_direct(att, error(ErrorCode.UNAVAILABLE, "relay unavailable, retry", r.id))
        elif result == RelayResult.NO_PEER:
            self.send_direct(
                att, error(ErrorCode.UNKNOWN_PEER, f"no peer '{r.to}' in this room", r.id)
            )
        elif r.id is not None:
            self.send_direct(att, ack(r.id))

    async def _room_event(self, s: LocalSession, att: Attachment, e: RoomEvent) -> None:
        try:
            text = await self.registry.fan_out(
                s.room,
                e.text,
                screens_only=e.screens_only,
                exclude_sid=s.sid,
                replay=True,
            )
        except RegistryError as err:
            log.warning("room event failed: %s", err)
            self.send_direct(att, error(ErrorCode.UNAVAILABLE, "room unavailable, retry", e.id))
            return
        self.deliver_room_locally(s.room, text, s.sid, e.screens_only)
        if e.id is not None:
            self.send_direct(att, ack(e.id))


def _busy_change(s: LocalSession) -> float | None:
    """The busy mark to publish for ``s`` if it changed since the last heartbeat."""
    if s.negotiating:
        if s.busy_published:
            return None
        s.busy_published = time.time() + (s.negotiating_until - time.monotonic())
        return s.busy_published
    if s.busy_published:
        s.busy_published = 0.0
        return 0.0
    return None


_RN = re.compile(r',"rn":(\d+),"seq":\d+}$')


def _rn_of(stamped: str) -> int | None:
    m = _RN.search(stamped)
    return int(m.group(1)) if m else None


STATIC_DIR = Path(__file__).resolve().parent / "static"


def static_page() -> bytes:
    try:
        return (STATIC_DIR / "index.html").read_bytes()
    except OSError:
        return b"<!doctype html><title>Roomwire</title><p>Roomwire signaling: connect to /ws</p>"


HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if hub.draining:
        return web.Response(status=503, text="draining\n")
    if not hub.registry_ok:
        return web.Response(status=503, text="registry unreachable\n")
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[HUB].metrics.render(), content_type="text/plain", charset="utf-8"
    )


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=static_page(), content_type="text/html")


def build_app(hub: Hub) -> web.Application:
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/ws", hub.handle_ws)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
