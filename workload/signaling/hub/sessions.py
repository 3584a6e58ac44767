"""Session index: the sessions this pod holds, by id, by room and peer, and by room."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from ..protocol import Role
from .attachment import Attachment

RECENT_FRAMES = 32
UNAVAILABLE_IDS = 64  # per session: resends come soon after the answer
NEGOTIATION_S = 10.0  # longest an offer waits for its answer before moves are allowed again


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
    # Ids of frames answered `unavailable` (the registry may have taken them anyway): a
    # resend with one of these ids is checked against what the receiver already has.
    unavailable_ids: deque[str | int] = field(default_factory=lambda: deque(maxlen=UNAVAILABLE_IDS))
    busy_published: float = 0.0
    # A device behind an edge: the edge's link key (room and edge peer), and the number
    # of the last frame of the device taken from the link (see docs/edge.md).
    edge: str = ""
    edge_u: int = 0

    def got(self, text: str) -> bool:
        """Whether ``text`` is among the last frames stamped for this session (a resend
        whose first try reached it: docs/protocol.md, "What `unavailable` means")."""
        head = text[:-1] + ","
        return any(stamped.startswith(head) for _, stamped in self.recent)

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


class SessionIndex:
    """Every session held here. The three maps are created once and never rebound, so a
    part of the hub may hold on to one of them for its hot path."""

    def __init__(self) -> None:
        self.sessions: dict[str, LocalSession] = {}
        self.by_peer: dict[tuple[str, str], LocalSession] = {}
        self.rooms: dict[str, set[str]] = {}

    def add(self, s: LocalSession) -> None:
        self.sessions[s.sid] = s
        self.by_peer[(s.room, s.peer)] = s
        self.rooms.setdefault(s.room, set()).add(s.sid)

    def remove(self, s: LocalSession) -> None:
        """Forget ``s`` (its grace timer too); another session of the same peer stays."""
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

    def attached(self, sid: str) -> LocalSession | None:
        """The session, if it is here with a connection (or one resuming onto it)."""
        s = self.sessions.get(sid)
        if s is not None and (s.attachment is not None or s.resuming is not None):
            return s
        return None

    def room_members(self, room: str) -> list[LocalSession]:
        return [self.sessions[sid] for sid in self.rooms.get(room, ()) if sid in self.sessions]


def busy_change(s: LocalSession) -> float | None:
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
