"""The cloud side of an edge link: one WebSocket from a room's edge carrying many devices
of that room (framing in ``signaling.edge.framing``, the story in ``docs/edge.md``).

Each attached device becomes a session of the room exactly like a direct client's: the
same protocol core checks its frames, the same join, resume, relay, grace and seq; only
its attachment differs, wrapping what it is sent for the device on the edge's socket.
The link itself is no session: it counts as one WebSocket, its devices as sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from roomwire_contract.edges import EdgeRecord

from ..edge import framing
from ..protocol import (
    Close,
    CloseCode,
    Connection,
    ErrorCode,
    Join,
    Leave,
    Relay,
    Role,
    RoomEvent,
    Send,
    error,
    joined,
)
from ..registry import RegistryError
from .attachment import Attachment, DeviceAttachment
from .delivery import Delivery
from .grace import Grace
from .join import Joins
from .relay import Relays
from .sessions import LocalSession
from .state import PodState

log = logging.getLogger("signaling")


@dataclasses.dataclass(eq=False)
class EdgeDevice:
    conn: Connection
    att: DeviceAttachment
    session: LocalSession | None = None


class EdgeLink:
    """One edge's connection to this pod: its devices, and what goes back to it."""

    def __init__(
        self,
        pod: PodState,
        delivery: Delivery,
        att: Attachment,
        room: str,
        edge: str,
    ) -> None:
        self.pod = pod
        self.delivery = delivery
        self.att = att
        self.room = room
        self.edge = edge
        self.key = f"{room}/{edge}"
        self.devices: dict[str, EdgeDevice] = {}
        self.since = time.time()
        self.attached = 0  # devices attached over the link, ever
        self._pending: list[str] = []
        self._flush_at: asyncio.Handle | None = None
        # A device's frames are checked by the edge first: the link does not rate-limit
        # them again (the edge may send what it queued while the link was down at once).
        limits = pod.limits
        self.device_limits = dataclasses.replace(
            limits, rate_per_s=limits.rate_per_s * 1000, rate_burst=limits.rate_burst * 1000
        )
        self.cap = limits.max_frame_bytes

    # ---- what goes to the edge ---------------------------------------------------------

    def push(self, message: str) -> None:
        if self.att.closing:
            return
        self._pending.append(message)
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_at = None
        pending, self._pending = self._pending, []
        if not pending or self.att.closing:
            return
        for text in framing.batches(pending, self.cap):
            self.att.emit(text)
        # An edge that does not read is closed (it resumes its devices); never a queue
        # without bound.
        if len(self.att.queue) > self.pod.limits.outbound_queue * max(16, len(self.devices)):
            log.info("edge %s does not keep up: closed", self.key)
            self.pod.spawn(
                self.delivery.close_socket(self.att, CloseCode.TRY_AGAIN_LATER, "slow edge")
            )

    def device_closed(self, att: DeviceAttachment, code: int, reason: str) -> None:
        d = self.devices.get(att.dev)
        if d is None or d.att is not att:
            return  # replaced on this link already: the edge knows the newer one
        del self.devices[att.dev]
        self.push(framing.detached(att.dev, code, reason))

    async def move(self, message: str, close_after_s: float) -> None:
        """Send the edge ``migrate`` or ``reconnect`` (for all its devices), then close."""
        self.push(message)
        self.flush()
        if close_after_s > 0:
            await asyncio.sleep(close_after_s)
        await self.delivery.close_socket(self.att, CloseCode.SERVICE_RESTART, "edge moved")


class EdgeLinks:
    """Serves edge links: the link's join, then its messages until it closes."""

    def __init__(
        self, pod: PodState, delivery: Delivery, joins: Joins, grace: Grace, relays: Relays
    ) -> None:
        self.pod = pod
        self.delivery = delivery
        self.joins = joins
        self.grace = grace
        self.relays = relays
        self.metrics = pod.metrics
        self.links: dict[str, EdgeLink] = {}  # the latest link of each edge here

    def _record(self, link: EdgeLink, connected: bool) -> EdgeRecord:
        now = time.time()
        return EdgeRecord(
            link.room,
            link.edge,
            self.pod.pod_id,
            connected,
            link.since if connected else now,
            len(link.devices),
            now,
        )

    async def _publish(self, records: list[EdgeRecord]) -> None:
        try:
            await self.pod.registry.presence.edges(records)
        except RegistryError as e:
            log.debug("edge records not published: %s", e)

    async def _home(self, link: EdgeLink) -> None:
        """An edge that linked here (through the Service, say) while its room's home is
        another pod is moved there, the way an operator's migrate-room would."""
        try:
            home = await self.pod.registry.presence.home_url(link.room)
        except RegistryError:
            return
        if home is not None and home[0] != self.pod.pod_id and not link.att.closing:
            log.info("edge %s moved to its room's home pod %s", link.key, home[0])
            await link.move(framing.migrate(home[1]), 10.0)

    async def run(self) -> None:
        """The links' records for the operator, refreshed with the pod's heartbeat."""
        while True:
            await asyncio.sleep(self.pod.settings.heartbeat_s)
            if self.links:
                await self._publish([self._record(k, True) for k in self.links.values()])

    async def serve(
        self, ws: web.WebSocketResponse, att: Attachment, conn: Connection, j: Join
    ) -> None:
        """The rest of the connection, once it joined with role ``edge``."""
        send = self.delivery.send_direct
        try:
            if not self.pod.resume_secret:
                raise RegistryError("registry not reached yet")
            members = await self.pod.registry.sessions.members(j.room)
        except RegistryError as e:
            conn.join_refused()
            log.warning("edge join failed: %s", e)
            send(att, error(ErrorCode.UNAVAILABLE, "registry unavailable, retry", j.id))
            await self.delivery.close_socket(att, CloseCode.TRY_AGAIN_LATER, "unavailable")
            return
        conn.join_accepted(j.room, j.peer, Role.EDGE)
        link = EdgeLink(self.pod, self.delivery, att, j.room, j.peer)
        att.edge = link.key
        send(
            att,
            joined(
                room=j.room,
                peer=j.peer,
                role=Role.EDGE,
                session="",
                resume="",
                peers=((p.peer, p.role) for p in members),
                epoch="",
                offset=0,
                pod=self.pod.pod_id,
                frame_id=j.id,
            ),
        )
        log.info("edge %s linked", link.key)
        self.links[link.key] = link
        self.pod.spawn(self._publish([self._record(link, True)]))
        self.pod.spawn(self._home(link))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    messages = framing.decode(msg.data)
                except framing.FramingError as e:
                    send(att, error(ErrorCode.BAD_FRAME, f"edge link: {e}"))
                    continue
                progress: dict[str, int] = {}
                for m in messages:
                    if isinstance(m, framing.DevFrame):
                        await self._dev_frame(link, m, progress)
                    elif isinstance(m, framing.Attach):
                        await self._attach(link, m)
                if progress:
                    link.push(framing.got(progress))
                if att.closing:
                    break
        finally:
            link.flush()
            held = 0  # devices whose sessions were still on this link: not moved on
            for d in list(link.devices.values()):
                d.att.closing = True
                s = d.session
                if s is not None and s.attachment is d.att:
                    held += 1
                    await self.grace.detach(s)
            if self.links.get(link.key) is link:
                del self.links[link.key]
                if held or not link.attached:
                    # Lost, not moved (a move takes every device over elsewhere first).
                    self.pod.spawn(self._publish([self._record(link, False)]))
            link.devices.clear()
            log.info("edge %s unlinked", link.key)

    async def _attach(self, link: EdgeLink, a: framing.Attach) -> None:
        """Device ``a.dev`` becomes a session of the room (or resumes its session)."""
        old = link.devices.get(a.dev)
        if old is not None:
            old.att.closing = True
        att = DeviceAttachment(
            link.att.ws, link=link, dev=a.dev, dev_json=orjson.dumps(a.dev).decode()
        )
        att.edge = link.key
        conn = Connection(link.device_limits)
        d = EdgeDevice(conn, att)
        link.devices[a.dev] = d
        frame: dict[str, Any] = {"type": "join", "room": link.room, "peer": a.dev, "role": a.role}
        if a.resume is not None:
            frame.update(resume=a.resume, last_seq=a.last_seq, last_rn=a.last_rn)
        for intent in conn.receive_frame(frame, time.monotonic()):
            if isinstance(intent, Send):
                self.delivery.send_direct(att, intent.frame)
            elif isinstance(intent, Join):
                if intent.role == Role.EDGE:
                    self.delivery.send_direct(
                        att, error(ErrorCode.FORBIDDEN, "a device behind an edge is no edge")
                    )
                    break
                d.session = await self.joins.join(conn, att, intent)
        if d.session is None:
            log.info("edge %s: device %s refused", link.key, a.dev)
            await self.delivery.close_socket(att, CloseCode.POLICY, "attach refused")
            return
        log.debug("edge %s: device %s attached (resume: %s)", link.key, a.dev, bool(a.resume))
        link.attached += 1
        link.push(framing.attached(a.dev, d.session.edge_u))

    async def _dev_frame(
        self, link: EdgeLink, m: framing.DevFrame, progress: dict[str, int]
    ) -> None:
        d = link.devices.get(m.dev)
        s = d.session if d is not None else None
        if m.u is not None:
            progress[m.dev] = m.u
        if d is None or s is None or d.att.closing:
            link.push(framing.detached(m.dev, CloseCode.INTERNAL, "not attached"))
            return
        if m.u is not None:
            if m.u <= s.edge_u:
                return  # taken before the link was lost: resent by the edge
            s.edge_u = m.u
        received = time.time()
        for intent in d.conn.receive_frame(m.frame, time.monotonic()):
            if isinstance(intent, Send):
                self.delivery.send_direct(d.att, intent.frame)
            elif isinstance(intent, Close):
                await self.delivery.close_socket(d.att, intent.code, intent.reason)
            elif isinstance(intent, Relay):
                self.metrics.messages.inc(str(intent.frame["type"]))
                await self.relays.relay(s, d.att, intent, received)
            elif isinstance(intent, RoomEvent):
                self.metrics.messages.inc(str(intent.frame["type"]))
                await self.relays.room_event(s, d.att, intent)
            elif isinstance(intent, Leave):
                d.att.closing = True
                link.devices.pop(m.dev, None)
                await self.grace.leave(s)
