"""The room as its edge holds it: the devices connected here, each with its own ``seq``,
resume token and grace period; the remote peers the cloud told of; the local fast path.

A device's frame for another device of the room is delivered here and never goes up; a
room event goes to the devices here and up (the cloud sends it to the remote peers
only); a frame for a remote peer goes up. What the cloud sends a device's session is
numbered again with the device's ``seq`` (the cloud's ``seq`` numbers the link, and the
edge keeps it to resume after losing the upstream). No I/O here: devices' sockets and
the upstream are handed in as small ports.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .. import tokens
from ..protocol import (
    CloseCode,
    ErrorCode,
    Frame,
    Handover,
    Join,
    Limits,
    Relay,
    Role,
    RoomEvent,
    ack,
    error,
    joined,
    peer_joined,
    peer_left,
)

RECENT_FRAMES = 64


class DeviceOut(Protocol):
    """A device's open socket."""

    def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class UpstreamPort(Protocol):
    """The one connection to the cloud (``upstream.Upstream``)."""

    enabled: bool

    def attach(self, d: Device) -> None:
        """Make ``d`` a session of the room upstream (now, or once the link is up)."""

    def send(self, d: Device, frame_text: str) -> bool:
        """Send a frame of ``d`` up, in order; False when the bounded queue is full."""


@dataclass(eq=False)
class Device:
    peer: str
    role: Role
    sid: str
    resume: str
    out: DeviceOut | None = None
    seq: int = 0
    recent: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    kept: deque[str] = field(default_factory=deque)
    dropped: int = 0
    grace_timer: asyncio.TimerHandle | None = None
    gone: bool = False
    # The device's session in the cloud: its resume token, the last seq and rn the
    # cloud sent it, the number of its last frame sent up, the remote peers it knows.
    cloud_resume: str | None = None
    cloud_seq: int = 0
    cloud_rn: int = 0
    u: int = 0
    known_remote: set[str] = field(default_factory=set)


class JoinRefused(Exception):
    def __init__(self, code: ErrorCode, message: str, close: int) -> None:
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


class EdgeRoom:
    """One room's devices on this edge."""

    def __init__(self, room: str, edge_id: str, limits: Limits, secret: str = "") -> None:
        self.room = room
        self.edge_id = edge_id
        self.limits = limits
        self.secret = secret or secrets.token_hex(32)
        self.devices: dict[str, Device] = {}
        self.remote: dict[str, str] = {}  # remote peer -> role
        self.upstream: UpstreamPort | None = None
        self.local_relays = 0
        self.frames_up = 0

    # ---- delivery to devices ----------------------------------------------------------

    def _stamp(self, d: Device, text: str) -> None:
        """Number ``text`` (an encoded frame without seq) for ``d`` and send or keep it."""
        d.seq += 1
        stamped = f'{text[:-1]},"seq":{d.seq}}}'
        d.recent.append((d.seq, stamped))
        if d.out is not None:
            d.out.send(stamped)
            return
        if len(d.kept) >= self.limits.grace_keep:
            d.kept.popleft()
            d.dropped += 1
        d.kept.append(stamped)

    def _direct(self, d: Device, frame: Frame) -> None:
        """A frame for the device's connection only (ack, error): no seq."""
        if d.out is not None:
            d.out.send(orjson.dumps(frame).decode())

    def _notice(self, frame: Frame, exclude: str) -> None:
        text = orjson.dumps(frame).decode()
        for d in list(self.devices.values()):
            if d.peer != exclude:
                self._stamp(d, text)

    # ---- devices ----------------------------------------------------------------------

    def join(self, out: DeviceOut, j: Join) -> Device:
        """The device joined (or resumed); raises JoinRefused."""
        if j.room != self.room:
            raise JoinRefused(
                ErrorCode.UNAUTHORIZED, f"this edge serves room '{self.room}'", CloseCode.POLICY
            )
        if j.role == Role.EDGE:
            raise JoinRefused(ErrorCode.FORBIDDEN, "an edge is no device", CloseCode.POLICY)
        if j.resume is not None:
            d = self._resume(out, j)
            if d is not None:
                return d
            if not j.authorized:
                raise JoinRefused(
                    ErrorCode.UNAUTHORIZED,
                    "resume refused: the session ended; a join token is required",
                    CloseCode.POLICY,
                )
        old = self.devices.get(j.peer)
        if old is None and len(self.devices) + len(self.remote) >= self.limits.max_peers_per_room:
            raise JoinRefused(
                ErrorCode.ROOM_FULL,
                f"room has {self.limits.max_peers_per_room} peers",
                CloseCode.TRY_AGAIN_LATER,
            )
        if old is not None:
            self._forget(old)
            if old.out is not None:
                old.out.close(CloseCode.REPLACED, "replaced by a new connection")
        sid = secrets.token_hex(12)
        token = tokens.encode(
            {"use": "edge-resume", "sid": sid, "room": self.room, "peer": j.peer}, self.secret
        )
        d = Device(j.peer, j.role, sid, token, out)
        if self.remote.pop(j.peer, None) is not None:
            # The peer was in the cloud and comes into the room: its session there is
            # replaced by this one (as a second join replaces the first on a pod).
            for other in self.devices.values():
                other.known_remote.discard(j.peer)
        d.known_remote = set(self.remote)
        peers = [(p.peer, p.role.value) for p in self.devices.values()]
        peers += list(self.remote.items())
        self._notice(peer_joined(j.peer, j.role.value), j.peer)
        self.devices[j.peer] = d
        self._direct(d, self._joined(d, peers, None, j.id))
        if self.upstream is not None and self.upstream.enabled:
            self.upstream.attach(d)
        return d

    def _joined(
        self,
        d: Device,
        peers: list[tuple[str, str]],
        handover: tuple[int, int] | None,
        frame_id: str | int | None,
    ) -> Frame:
        return joined(
            room=self.room,
            peer=d.peer,
            role=d.role,
            session=d.sid,
            resume=d.resume,
            peers=peers,
            epoch="",
            offset=0,
            pod=self.edge_id,
            handover=Handover(*handover) if handover is not None else None,
            frame_id=frame_id,
        )

    def _resume(self, out: DeviceOut, j: Join) -> Device | None:
        assert j.resume is not None
        try:
            claims = tokens.decode(j.resume, self.secret)
        except tokens.TokenError:
            return None
        d = self.devices.get(j.peer)
        if (
            claims.get("use") != "edge-resume"
            or claims.get("peer") != j.peer
            or claims.get("room") != self.room
            or d is None
            or d.sid != claims.get("sid")
        ):
            return None
        if d.grace_timer is not None:
            d.grace_timer.cancel()
            d.grace_timer = None
        if d.out is not None and d.out is not out:
            d.out.close(CloseCode.REPLACED, "resumed on a new connection")
        d.out = out
        kept, dropped = list(d.kept), d.dropped
        d.kept.clear()
        d.dropped = 0
        peers = [(p.peer, p.role.value) for p in self.devices.values() if p is not d]
        peers += list(self.remote.items())
        self._direct(d, self._joined(d, peers, (len(kept), dropped), j.id))
        last = j.last_seq if j.last_seq is not None else d.seq
        kept_set = set(kept)
        for q, t in list(d.recent):
            if q > last and t not in kept_set:
                out.send(t)
        for t in kept:
            out.send(t)
        return d

    def frames(self, d: Device, intents: list[Any]) -> None:
        """A device's Relay and RoomEvent intents (the rest is the adapter's)."""
        for intent in intents:
            if isinstance(intent, Relay):
                self._relay(d, intent)
            elif isinstance(intent, RoomEvent):
                self._room_event(d, intent)

    def _relay(self, d: Device, r: Relay) -> None:
        target = self.devices.get(r.to)
        if target is not None:
            self._stamp(target, r.text)
            self.local_relays += 1
            if r.id is not None:
                self._direct(d, ack(r.id))
            return
        up = self.upstream
        if up is None or not up.enabled:
            self._direct(d, error(ErrorCode.UNKNOWN_PEER, f"no peer '{r.to}' in this room", r.id))
            return
        frame = {k: v for k, v in r.frame.items() if k != "from"}
        frame["to"] = r.to
        self._up(d, orjson.dumps(frame).decode(), r.id)

    def _room_event(self, d: Device, e: RoomEvent) -> None:
        for other in list(self.devices.values()):
            if other is not d and (not e.screens_only or other.role == Role.SCREEN):
                self._stamp(other, e.text)
        up = self.upstream
        if up is None or not up.enabled:
            if e.id is not None:
                self._direct(d, ack(e.id))
            return
        frame = {k: v for k, v in e.frame.items() if k != "from"}
        self._up(d, orjson.dumps(frame).decode(), e.id)

    def _up(self, d: Device, text: str, frame_id: str | int | None) -> None:
        """Up to the cloud, which acks it (or says why not) to the device."""
        assert self.upstream is not None
        if not self.upstream.send(d, text):
            self._direct(
                d,
                error(ErrorCode.UNAVAILABLE, "the edge's upstream queue is full; retry", frame_id),
            )
        else:
            self.frames_up += 1

    def leave(self, d: Device) -> None:
        """The device sent ``leave``, or its grace period ended: the room hears it."""
        if self.devices.get(d.peer) is not d:
            return
        self._forget(d)
        self._notice(peer_left(d.peer, d.role.value), d.peer)
        if self.upstream is not None and self.upstream.enabled and d.cloud_resume is not None:
            self.upstream.send(d, '{"type":"leave"}')

    def _forget(self, d: Device) -> None:
        d.gone = True
        if d.grace_timer is not None:
            d.grace_timer.cancel()
            d.grace_timer = None
        if self.devices.get(d.peer) is d:
            del self.devices[d.peer]

    def dropped_connection(self, d: Device, out: DeviceOut) -> None:
        """The device's socket closed without ``leave``: it waits for its resume."""
        if d.out is not out or d.gone:
            return
        d.out = None
        loop = asyncio.get_running_loop()
        d.grace_timer = loop.call_later(self.limits.grace_s, self.leave, d)

    # ---- from the cloud ---------------------------------------------------------------

    def from_cloud(self, peer: str, frame: dict[str, Any]) -> None:
        """A frame the cloud sent device ``peer``'s session."""
        d = self.devices.get(peer)
        if d is None:
            return
        kind = frame.get("type")
        seq = frame.pop("seq", None)
        rn = frame.pop("rn", None)
        if isinstance(seq, int):
            if seq <= d.cloud_seq:
                return  # a copy, re-sent on a resume of the link
            d.cloud_seq = seq
        if isinstance(rn, int) and rn > d.cloud_rn:
            d.cloud_rn = rn
        if kind == "joined":
            self._attached(d, frame)
            return
        if kind in ("ack", "error"):
            self._direct(d, frame)
            return
        if kind in ("peer-joined", "peer-left"):
            other, role = frame.get("peer"), frame.get("role")
            if not isinstance(other, str) or other in self.devices:
                return  # devices here are announced by the edge itself
            if kind == "peer-joined":
                self.remote[other] = str(role)
                if other in d.known_remote:
                    return
                d.known_remote.add(other)
            else:
                self.remote.pop(other, None)
                if other not in d.known_remote:
                    return
                d.known_remote.discard(other)
            self._stamp(d, orjson.dumps(frame).decode())
            return
        if frame.get("from") in self.devices:
            return  # from a device here: the edge delivered it already
        if kind in ("pong", "migrate", "reconnect"):
            return
        self._stamp(d, orjson.dumps(frame).decode())

    def _attached(self, d: Device, frame: dict[str, Any]) -> None:
        """The cloud's ``joined`` for the device's session: its resume token, and the
        remote peers the device has not been told of (or was told of and are gone)."""
        resume = frame.get("resume")
        if isinstance(resume, str):
            d.cloud_resume = resume
        if not frame.get("resumed"):
            d.cloud_seq = d.cloud_rn = 0
        remote: dict[str, str] = {}
        for p in frame.get("peers") or []:
            if isinstance(p, dict) and isinstance(p.get("peer"), str):
                if p["peer"] not in self.devices:
                    remote[p["peer"]] = str(p.get("role"))
        if frame.get("resumed"):
            # Whatever changed meanwhile follows as the frames kept for the session.
            for peer, role in remote.items():
                self.remote.setdefault(peer, role)
            return
        for peer, role in remote.items():
            self.remote[peer] = role
            if peer not in d.known_remote:
                d.known_remote.add(peer)
                self._stamp(d, orjson.dumps(peer_joined(peer, role)).decode())
        for peer in list(d.known_remote - set(remote)):
            d.known_remote.discard(peer)
            self.remote.pop(peer, None)
            self._stamp(d, orjson.dumps(peer_left(peer, "participant")).decode())

    def detached(self, peer: str, code: int, reason: str) -> None:
        """The cloud let the device's session go (replaced elsewhere, refused...)."""
        d = self.devices.get(peer)
        if d is None:
            return
        if code == CloseCode.INTERNAL and self.upstream is not None:
            d.cloud_resume = None
            self.upstream.attach(d)  # the link had lost it: attach again
            return
        self._forget(d)
        self._notice(peer_left(d.peer, d.role.value), d.peer)
        if code == CloseCode.REPLACED:
            # The peer joined again elsewhere (directly, or on another edge): remote now.
            self.remote[d.peer] = d.role.value
            self._notice(peer_joined(d.peer, d.role.value), "")
            for other in self.devices.values():
                other.known_remote.add(d.peer)
        if d.out is not None:
            d.out.close(code, reason or "detached")
