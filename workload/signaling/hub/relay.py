"""Frames from a peer here to one peer of its room (relay) or to the room (room events):
same pod straight to delivery, another pod through the registry, then ack or error."""

from __future__ import annotations

import logging
import time
from functools import partial

from ..protocol import Close, ErrorCode, Relay, RoomEvent, ack, error
from ..registry import RegistryError, RelayResult
from .attachment import Attachment
from .delivery import Delivery
from .sessions import LocalSession
from .state import PodState

log = logging.getLogger("signaling")

MAX_BACKLOG = 4096  # registry operations in flight before connections stop being read


class Relays:
    """Carries out the protocol core's Relay and RoomEvent intents."""

    def __init__(self, pod: PodState, delivery: Delivery) -> None:
        self.routing = pod.registry.routing
        self.metrics = pod.metrics
        self.sessions = pod.index.sessions
        self.by_peer = pod.index.by_peer
        self.deliver = delivery.deliver
        self.close_socket = delivery.close_socket
        self.spawn = pod.spawn
        self.send_direct = delivery.send_direct
        self.deliver_room_locally = delivery.deliver_room_locally

    async def relay(self, s: LocalSession, att: Attachment, r: Relay, received: float) -> None:
        target = self.by_peer.get((s.room, r.to))
        text = r.text
        s.note_signal(text)
        resend = _resend(s, r.id) or r.resend
        if target is not None and target.sid in self.sessions:
            # Same pod: straight to the socket, no registry.
            if resend and target.got(text):
                if r.id is not None:
                    self.send_direct(att, ack(r.id))
                return
            self.deliver(target, text)
            self.metrics.relay_latency.observe(time.time() - received)
            self.metrics.delivered.inc("local")
            if r.id is not None:
                self.send_direct(att, ack(r.id))
            return
        # Another pod: the registry routes it in call order; this connection reads its
        # next frame meanwhile, and the answer (ack or error) follows when it is known.
        self.routing.relay(s.room, r.to, text, partial(self.relayed, s, att, r), resend)
        self.metrics.delivered.inc("remote")
        if self.routing.backlog() > MAX_BACKLOG:
            await self.routing.caught_up()  # back-pressure: stop reading this socket a while

    def relayed(self, s: LocalSession, att: Attachment, r: Relay, result: RelayResult) -> None:
        """The registry's answer for a frame sent to another pod."""
        if result == RelayResult.HERE:
            # The peer resumed on this pod while the frame was on its way to Redis.
            target = self.by_peer.get((s.room, r.to))
            if target is not None:
                self.deliver(target, r.text)
        if att.closing:
            return
        if result == RelayResult.FAILED:
            if r.id is not None:
                s.unavailable_ids.append(r.id)
            self.send_direct(att, error(ErrorCode.UNAVAILABLE, "relay unavailable, retry", r.id))
        elif result == RelayResult.NO_PEER:
            self.send_direct(
                att, error(ErrorCode.UNKNOWN_PEER, f"no peer '{r.to}' in this room", r.id)
            )
            # Counted toward the abuse limit like any error (docs/protocol.md, 4003):
            # each costs a registry lookup.
            if att.conn is not None:
                for intent in att.conn.refused_later(time.monotonic()):
                    if isinstance(intent, Close):
                        self.spawn(self.close_socket(att, intent.code, intent.reason))
        elif r.id is not None:
            self.send_direct(att, ack(r.id))

    async def room_event(self, s: LocalSession, att: Attachment, e: RoomEvent) -> None:
        resend = _resend(s, e.id) or e.resend
        try:
            text = await self.routing.fan_out(
                s.room,
                e.text,
                screens_only=e.screens_only,
                exclude_sid=s.sid,
                replay=True,
                resend=resend,
            )
        except RegistryError as err:
            log.warning("room event failed: %s", err)
            if e.id is not None:
                s.unavailable_ids.append(e.id)
            self.send_direct(att, error(ErrorCode.UNAVAILABLE, "room unavailable, retry", e.id))
            return
        self.deliver_room_locally(s.room, text, s.sid, e.screens_only, s.edge, once=resend)
        if e.id is not None:
            self.send_direct(att, ack(e.id))


def _resend(s: LocalSession, frame_id: str | int | None) -> bool:
    """Whether this frame resends one answered `unavailable` (docs/protocol.md): the
    registry then checks what the receiver already has before routing it again."""
    if frame_id is None or not s.unavailable_ids or frame_id not in s.unavailable_ids:
        return False
    s.unavailable_ids.remove(frame_id)
    return True
