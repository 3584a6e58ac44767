"""What the registry's roles take and give: outcomes, records, errors. Pure data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

# Handles one inbox message: returns None when done with it, or an awaitable to finish
# it, which messages after it then wait for (inbox messages are handled in order).
InboxHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


class RelayResult(IntEnum):
    """What became of a relayed frame (codes of the relay and keep scripts)."""

    FAILED = -1  # the registry could not be reached: nothing was routed
    NO_PEER = 0
    ROUTED = 1  # published to the pod the peer is live on
    KEPT = 2  # the peer is in its grace period (or its pod is gone): kept for its resume
    HERE = 3  # the peer is live on the calling pod after all (a resume raced the frame)


RelayDone = Callable[[RelayResult], None]


@dataclass(frozen=True)
class RoomBudget:
    """What a room may keep in the registry besides its members' own frames: its event
    history, bounded in count and bytes (the oldest go first), and how long that
    history and the room's metadata stay once the room is empty."""

    history: int = 1000
    history_bytes: int = 1 << 20
    idle_s: int = 600


class RegistryError(Exception):
    """The registry cannot be reached or refused an operation."""


class RoomFull(RegistryError):
    pass


class ResumeBusy(RegistryError):
    """Another resume of the session is under way (on this pod or another): one wins."""


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
    """A session as its pod knows it: refreshed with each heartbeat, and re-registered
    after the registry lost it (Redis restart, or the pod was thought dead)."""

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


def splice(text: str, extra: str) -> str:
    """Add pre-encoded members (``,"k":v``) to an encoded JSON object."""
    return text[:-1] + extra + "}"
