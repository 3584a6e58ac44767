"""The in-memory registry: the embedded default, one process, nothing to install.

Every live session is on this process, so the hub delivers to all of them itself; what
is left for the registry is membership, replay offsets and the frames kept for
sessions in their grace period.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field

from ..protocol import Role
from .model import (
    InboxHandler,
    JoinOutcome,
    PeerInfo,
    PodStats,
    RelayDone,
    RelayResult,
    ResumeOutcome,
    RoomFull,
    SessionRecord,
    splice,
)
from .roles import Presence, Registry, Routing, Sessions


@dataclass
class _Member:
    sid: str
    role: str


@dataclass
class _Room:
    members: dict[str, _Member] = field(default_factory=dict)
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    offset: int = 0
    events: deque[str] = field(default_factory=deque)
    event_bytes: int = 0


@dataclass
class _State:
    """What the three roles share in one process."""

    pod_id: str
    keep_max: int
    rooms: dict[str, _Room] = field(default_factory=dict)
    kept: dict[str, deque[str]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    recent: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def forget(self, sid: str) -> None:
        for table in (self.kept, self.dropped, self.seq, self.recent):
            table.pop(sid, None)


class MemorySessions(Sessions):
    def __init__(self, state: _State) -> None:
        self._s = state

    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        r = self._s.rooms.setdefault(room, _Room())
        old = r.members.get(peer)
        if old is None and len(r.members) >= max_peers:
            raise RoomFull(f"room {room} has {max_peers} peers")
        peers = [PeerInfo(p, m.role) for p, m in r.members.items() if p != peer]
        r.members[peer] = _Member(sid, role.value)
        if old is not None:
            self._s.forget(old.sid)  # replaced: what was kept for it is obsolete
        pod = self._s.pod_id if old else None
        return JoinOutcome(peers, r.epoch, r.offset, old.sid if old else None, pod)

    async def members(self, room: str) -> list[PeerInfo]:
        r = self._s.rooms.get(room)
        return [PeerInfo(p, m.role) for p, m in r.members.items()] if r else []

    async def resume(
        self,
        sid: str,
        room: str,
        peer: str,
        role: Role,
        last_rn: int | None = None,
        attempt: str = "",
    ) -> ResumeOutcome | None:
        # One process: the hub's own check keeps two resumes of a session apart.
        r = self._s.rooms.get(room)
        m = r.members.get(peer) if r else None
        if m is None or m.sid != sid:
            return None
        kept = list(enumerate(self._s.kept.pop(sid, ())))
        return ResumeOutcome(
            self._s.seq.pop(sid, 0),
            kept,
            self._s.pod_id,
            self._s.dropped.pop(sid, 0),
            self._s.recent.pop(sid, []),
        )

    async def detach(
        self, sid: str, room: str, peer: str, seq: int, recent: list[tuple[int, str]]
    ) -> None:
        self._s.seq[sid] = seq
        self._s.recent[sid] = list(recent)

    async def take_kept(
        self, sid: str, room: str, peer: str, after_rn: int
    ) -> list[tuple[int, str]]:
        return list(enumerate(self._s.kept.pop(sid, ())))

    async def remove(self, sid: str, room: str, peer: str) -> bool:
        self._s.forget(sid)
        r = self._s.rooms.get(room)
        if r is None or peer not in r.members or r.members[peer].sid != sid:
            return False
        del r.members[peer]
        if not r.members:
            # Nothing else shares this room's state in one process.
            del self._s.rooms[room]
        return True


class MemoryRouting(Routing):
    def __init__(self, state: _State) -> None:
        self._s = state

    def relay(self, room: str, peer: str, text: str, done: RelayDone, resend: bool = False) -> None:
        # Every live peer is local in one process; the hub handled those already.
        done(RelayResult.NO_PEER)

    async def keep(self, sid: str, room: str, peer: str, text: str, n: int | None = None) -> bool:
        box = self._s.kept.setdefault(sid, deque(maxlen=self._s.keep_max))
        if len(box) == box.maxlen:
            self._s.dropped[sid] = self._s.dropped.get(sid, 0) + 1
        box.append(text)
        return False

    async def fan_out(
        self,
        room: str,
        text: str,
        *,
        screens_only: bool,
        exclude_sid: str,
        replay: bool,
        resend: bool = False,
    ) -> str:
        # In one process nothing is answered `unavailable`: a resend is a new frame.
        if not replay:
            return text
        r = self._s.rooms.setdefault(room, _Room())
        r.offset += 1
        out = splice(text, f',"offset":{r.offset},"epoch":"{r.epoch}"')
        r.events.append(out)
        r.event_bytes += len(out.encode())
        # The history's bounds, as in Redis: the oldest go until both hold.
        while r.events and (
            len(r.events) > self.budget.history or r.event_bytes > self.budget.history_bytes
        ):
            r.event_bytes -= len(r.events.popleft().encode())
            self.history_trimmed += 1
        return out

    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        return 0

    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        return None


class MemoryPresence(Presence):
    def __init__(self, state: _State) -> None:
        self.pod_id = state.pod_id
        self._secret = secrets.token_hex(32)

    async def start(self, on_inbox: InboxHandler) -> None:
        return None

    async def close(self) -> None:
        return None

    async def resume_secret(self) -> str:
        return self._secret

    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        return []

    async def deregister(self) -> None:
        return None


def memory_registry(pod_id: str, keep_max: int = 256) -> Registry:
    state = _State(pod_id, keep_max)
    return Registry(MemorySessions(state), MemoryRouting(state), MemoryPresence(state))
