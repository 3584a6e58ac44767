"""Where sessions and rooms are registered: the interface, and the in-memory registry.

The server's hub delivers to sessions on this process by itself and asks the registry
only for what crosses processes: membership of a room, frames for sessions that are not
attached here, replay offsets, and keeping frames for sessions in their grace period.
``MemoryRegistry`` is the embedded default (one process, nothing to install);
``signaling.redis_registry.RedisRegistry`` shares all of it between pods.
"""

from __future__ import annotations

import asyncio
import secrets
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .protocol import Role

# Handles one inbox message: returns None when done with it, or an awaitable to finish
# it, which messages after it then wait for (inbox messages are handled in order).
InboxHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


class RelayResult(IntEnum):
    """What became of a relayed frame (codes of the Redis relay script)."""

    FAILED = -1  # the registry could not be reached: nothing was routed
    NO_PEER = 0
    ROUTED = 1  # published to the pod the peer is live on
    KEPT = 2  # the peer is in its grace period (or its pod is gone): kept for its resume
    HERE = 3  # the peer is live on the calling pod after all (a resume raced the frame)


RelayDone = Callable[[RelayResult], None]


class RegistryError(Exception):
    """The registry cannot be reached or refused an operation."""


class RoomFull(RegistryError):
    pass


@dataclass(frozen=True)
class PeerInfo:
    peer: str
    role: str


@dataclass(frozen=True)
class JoinOutcome:
    peers: list[PeerInfo]
    epoch: str
    offset: int
    replaced_sid: str | None = None
    replaced_pod: str | None = None


@dataclass(frozen=True)
class ResumeOutcome:
    seq: int
    kept: list[tuple[int, str]]  # (order n, encoded frame), in the order they were sent
    old_pod: str
    dropped: int = 0
    # Frames sent just before the connection dropped, already stamped: (seq, text).
    recent: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class SessionRecord:
    """What a pod re-registers after the registry lost its data (Redis restart)."""

    sid: str
    room: str
    peer: str
    role: str
    live: bool
    seq: int
    # Set when the negotiation state changed since the last heartbeat: the unix time
    # until which the session is busy (0: no longer busy).
    busy: float | None = None
    # The last cross-pod order number delivered: numbering resumes after it.
    rn: int = 0


@dataclass(frozen=True)
class PodStats:
    url: str
    connections: int
    sessions: int
    rooms: int
    draining: bool
    cpu: float = 0.0  # share of one core this process used since the last heartbeat


class Registry(ABC):
    pod_id: str

    @abstractmethod
    async def start(self, on_inbox: InboxHandler) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def resume_secret(self) -> str:
        """The secret resume tokens are signed with; the same on every pod."""

    @abstractmethod
    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        """Register a new session as a member of the room; raises RoomFull."""

    @abstractmethod
    async def members(self, room: str) -> list[PeerInfo]: ...

    @abstractmethod
    async def resume(
        self, sid: str, room: str, peer: str, role: Role, last_rn: int | None = None
    ) -> ResumeOutcome | None:
        """Attach the session to this pod and hand over what was kept; None if it is gone.

        ``last_rn`` is the highest route number the client received: frames routed to
        the session's old pod after it are handed over too (the pod may have died with
        them in flight).
        """

    @abstractmethod
    async def detach(
        self, sid: str, seq: int, grace_s: float, recent: list[tuple[int, str]]
    ) -> None:
        """The session's connection is gone: keep the session for the grace period.

        ``recent`` are the last frames sent on the lost connection; the client may not
        have received them, so a resume re-sends those past the client's ``last_seq``.
        """

    @abstractmethod
    async def take_kept(self, sid: str, after_rn: int) -> list[tuple[int, str]]:
        """Frames for a session live here that its inbox may have missed while it was
        down: those kept meanwhile, and those routed here past ``after_rn`` (the last
        delivered), as (rn, frame) in order."""

    @abstractmethod
    async def remove(self, sid: str, room: str, peer: str) -> bool:
        """Remove the session and its membership; False if another pod owns it now."""

    @abstractmethod
    async def keep(self, sid: str, text: str, n: int | None = None) -> bool:
        """Keep (or forward, if it moved) a frame for a session this pod does not attach;
        the registry bounds how many it keeps per session.

        True means the session is live on this very pod (a resume raced the frame): the
        caller delivers it.
        """

    @abstractmethod
    def relay(self, room: str, peer: str, text: str, done: RelayDone) -> None:
        """Route a frame to a peer that is not live on this pod, without waiting.

        Relays and the other operations of one pod are carried out in call order;
        ``done`` is called once with the outcome (for the sender's ack or error).
        """

    def backlog(self) -> int:
        """Operations started and not yet carried out (for back-pressure)."""
        return 0

    def caught_up(self) -> asyncio.Future[None]:
        """Done when the operations started so far have been carried out."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    @abstractmethod
    async def fan_out(
        self, room: str, text: str, *, screens_only: bool, exclude_sid: str, replay: bool
    ) -> str:
        """Send a room frame to the room's members on other pods.

        With ``replay`` the frame (an encoded object) is appended to the room's stream
        first and returned with its ``offset`` and ``epoch``; local delivery is the
        caller's.
        """

    async def sweep(self, room: str) -> list[PeerInfo]:
        """Remove members whose sessions expired; each is returned to exactly one caller."""
        return []

    @abstractmethod
    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        """Tell the session's previous pod to let it go; how many pods listened."""

    @abstractmethod
    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        """Tell the session's new pod that every frame this pod held for it was passed on.

        ``recent`` are the last frames this pod sent the session (see ``detach``).
        """

    @abstractmethod
    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        """Publish load; refresh this pod's sessions, and restore them if the registry lost
        them (Redis restart) or turned them to grace (this pod was thought dead).

        Returns the ids of sessions that resumed on another pod meanwhile: the caller
        lets them go.
        """

    async def reap_dead_pods(self) -> dict[str, int]:
        """Turn the sessions of pods whose heartbeat expired into grace, so they can
        resume anywhere; pod -> sessions turned, for the pods this call handled."""
        return {}

    @abstractmethod
    async def deregister(self) -> None: ...


def splice(text: str, extra: str) -> str:
    """Add pre-encoded members (``,"k":v``) to an encoded JSON object."""
    return text[:-1] + extra + "}"


@dataclass
class _Member:
    sid: str
    role: str


@dataclass
class _Room:
    members: dict[str, _Member] = field(default_factory=dict)
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    offset: int = 0
    events: deque[str] = field(default_factory=lambda: deque(maxlen=1000))


class MemoryRegistry(Registry):
    """Everything in this process: the embedded default."""

    def __init__(self, pod_id: str, keep_max: int = 256) -> None:
        self.pod_id = pod_id
        self.keep_max = keep_max
        self._rooms: dict[str, _Room] = {}
        self._kept: dict[str, deque[str]] = {}
        self._dropped: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._recent: dict[str, list[tuple[int, str]]] = {}
        self._secret = secrets.token_hex(32)

    async def start(self, on_inbox: InboxHandler) -> None:
        return None

    async def close(self) -> None:
        return None

    async def resume_secret(self) -> str:
        return self._secret

    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        r = self._rooms.setdefault(room, _Room())
        old = r.members.get(peer)
        if old is None and len(r.members) >= max_peers:
            raise RoomFull(f"room {room} has {max_peers} peers")
        peers = [PeerInfo(p, m.role) for p, m in r.members.items() if p != peer]
        r.members[peer] = _Member(sid, role.value)
        return JoinOutcome(
            peers, r.epoch, r.offset, old.sid if old else None, self.pod_id if old else None
        )

    async def members(self, room: str) -> list[PeerInfo]:
        r = self._rooms.get(room)
        return [PeerInfo(p, m.role) for p, m in r.members.items()] if r else []

    async def resume(
        self, sid: str, room: str, peer: str, role: Role, last_rn: int | None = None
    ) -> ResumeOutcome | None:
        r = self._rooms.get(room)
        m = r.members.get(peer) if r else None
        if m is None or m.sid != sid:
            return None
        kept = list(enumerate(self._kept.pop(sid, ())))
        return ResumeOutcome(
            self._seq.pop(sid, 0),
            kept,
            self.pod_id,
            self._dropped.pop(sid, 0),
            self._recent.pop(sid, []),
        )

    async def detach(
        self, sid: str, seq: int, grace_s: float, recent: list[tuple[int, str]]
    ) -> None:
        self._seq[sid] = seq
        self._recent[sid] = list(recent)

    async def take_kept(self, sid: str, after_rn: int) -> list[tuple[int, str]]:
        return list(enumerate(self._kept.pop(sid, ())))

    async def remove(self, sid: str, room: str, peer: str) -> bool:
        self._kept.pop(sid, None)
        self._seq.pop(sid, None)
        self._dropped.pop(sid, None)
        self._recent.pop(sid, None)
        r = self._rooms.get(room)
        if r is None or peer not in r.members or r.members[peer].sid != sid:
            return False
        del r.members[peer]
        if not r.members:
            # Nothing else shares this room's state in one process.
            del self._rooms[room]
        return True

    async def keep(self, sid: str, text: str, n: int | None = None) -> bool:
        box = self._kept.setdefault(sid, deque(maxlen=self.keep_max))
        if len(box) == box.maxlen:
            self._dropped[sid] = self._dropped.get(sid, 0) + 1
        box.append(text)
        return False

    def relay(self, room: str, peer: str, text: str, done: RelayDone) -> None:
        # Every live peer is local in one process; the hub handled those already.
        done(RelayResult.NO_PEER)

    async def fan_out(
        self, room: str, text: str, *, screens_only: bool, exclude_sid: str, replay: bool
    ) -> str:
        if not replay:
            return text
        r = self._rooms.setdefault(room, _Room())
        r.offset += 1
        out = splice(text, f',"offset":{r.offset},"epoch":"{r.epoch}"')
        r.events.append(out)
        return out

    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        return 0

    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        return None

    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        return []

    async def deregister(self) -> None:
        return None
