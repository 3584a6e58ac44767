"""Delivery to this pod's sockets: seq stamping, the outbound bound, frames kept for a
session without a connection, room notices, and closing a socket with a code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time

from ..protocol import CloseCode, Frame, Role, encode_frame
from ..registry import RegistryError, splice
from .attachment import Attachment, DeviceAttachment
from .sessions import LocalSession
from .state import PodPart, PodState

log = logging.getLogger("signaling")

# Close code when no join arrived within --join-deadline of the upgrade (docs/protocol.md).
JOIN_DEADLINE = 4008
# Closes that end abuse: the transport is closed after the close frame, never read
# until aiohttp's close timeout (a flooder kept the pod busy for those 10 s).
ABORTED_CLOSES = frozenset((CloseCode.POLICY, CloseCode.TOO_BIG, CloseCode.ABUSE, JOIN_DEADLINE))
ABORT_AFTER_S = 1.0
# Any other close: the transport is aborted if the closing handshake is not over by then.
CLOSE_AFTER_S = 5.0


class Delivery(PodPart):
    """Frames onto this pod's sockets, or into the registry for sessions not attached."""

    def __init__(self, pod: PodState) -> None:
        self.pod = pod
        self.routing = pod.registry.routing
        self.metrics = pod.metrics
        self.index = pod.index
        self.sessions = pod.index.sessions
        self.spawn = pod.spawn

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
            self.spawn(self.keep(session.sid, session.room, session.peer, text, n))
            return
        if len(att.queue) >= self.limits.outbound_queue:
            # A slow consumer never stalls anyone else: it is closed, and may resume.
            log.info("slow consumer %s/%s closed", session.room, session.peer)
            self.spawn(self.close_socket(att, CloseCode.TRY_AGAIN_LATER, "slow consumer"))
            self.spawn(self.keep(session.sid, session.room, session.peer, text, n))
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

    async def keep(self, sid: str, room: str, peer: str, text: str, n: int | None = None) -> None:
        """Hand a frame to the registry, which keeps it for the session (or forwards it
        to the pod the session moved to); delivered here if it came back meanwhile."""
        self.metrics.kept.inc()
        try:
            mine = await self.routing.keep(sid, room, peer, text, n)
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
        """Close with ``code``. A well-behaved close (leave, drain, replaced, slow
        consumer) waits for the queued frames and does the closing handshake; a close
        that ends abuse (``ABORTED_CLOSES``) writes the close frame after what is already
        on the socket and closes the transport: nothing more is read from it, and it is
        aborted if the close frame cannot leave within ``ABORT_AFTER_S``. A handshake not
        over within ``CLOSE_AFTER_S`` is aborted too."""
        if att.closing:
            return
        att.closing = True
        if isinstance(att, DeviceAttachment):
            # A device behind an edge: the edge is told; its link stays open.
            if att.link is not None:
                att.link.device_closed(att, code, reason)
            return
        self.metrics.closes.inc(str(code))
        t = att.transport
        if code in ABORTED_CLOSES and t is not None:
            att.queue.clear()
            if not t.is_closing():
                body = struct.pack("!H", code) + reason.encode()[:120]
                t.write(bytes((0x88, len(body))) + body)
                t.close()
                asyncio.get_running_loop().call_later(ABORT_AFTER_S, t.abort)
            return
        if att.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(att.writer), 2.0)
        try:
            # Bounded: aiohttp waits for the close frame to leave, and a client that
            # never reads (a slow consumer) would hold the socket and its buffers for
            # ever.
            await asyncio.wait_for(
                att.ws.close(code=code, message=reason.encode()[:120]), CLOSE_AFTER_S
            )
        except TimeoutError:
            if t is not None:
                t.abort()
        except Exception:
            pass

    async def drop(self, s: LocalSession, code: int, reason: str) -> None:
        """Forget a session without telling the room: it lives on elsewhere."""
        self.index.remove(s)
        att, s.attachment = s.attachment, None
        if att is not None:
            await self.close_socket(att, code, reason)

    def deliver_room_locally(
        self,
        room: str,
        text: str,
        exclude_sid: str,
        screens_only: bool,
        exclude_edge: str = "",
        once: bool = False,
    ) -> None:
        """To the room's sessions here but the sender; with ``exclude_edge`` not to the
        devices behind the sender's edge either: that edge delivered it to them itself.
        With ``once`` (a resend) not to a session that got it already."""
        for s in self.index.room_members(room):
            if (
                s.sid != exclude_sid
                and (not screens_only or s.role == Role.SCREEN)
                and (not exclude_edge or s.edge != exclude_edge)
                and not (once and s.got(text))
            ):
                self.deliver(s, text)

    async def room_notice(
        self, room: str, frame: Frame, exclude_sid: str, exclude_edge: str = ""
    ) -> None:
        """A room event from the server (peer-joined, peer-left): here and to the room."""
        text = encode_frame(frame)
        self.deliver_room_locally(room, text, exclude_sid, False, exclude_edge)
        try:
            await self.routing.fan_out(
                room, text, screens_only=False, exclude_sid=exclude_sid, replay=False
            )
        except RegistryError as e:
            log.warning("room notice for %s not fanned out: %s", room, e)
