"""Where sessions and rooms are registered, in three roles (``roles``): sessions,
routing and pod presence, each with an in-memory implementation (``memory``, the
embedded default) and a Redis one shared by every pod (``redis_*``, built by
``redis_backend.redis_registry``).

The hub delivers to sessions on its own process by itself and asks the registry only
for what crosses processes: membership of a room, frames for sessions that are not
attached here, replay offsets, and keeping frames for sessions in their grace period.
"""

from __future__ import annotations

from .memory import memory_registry
from .model import (
    InboxHandler,
    JoinOutcome,
    PeerInfo,
    PodStats,
    RegistryError,
    RelayDone,
    RelayResult,
    ResumeBusy,
    ResumeOutcome,
    RoomFull,
    SessionRecord,
    splice,
)
from .roles import Presence, Registry, Routing, Sessions

__all__ = [
    "InboxHandler",
    "JoinOutcome",
    "PeerInfo",
    "PodStats",
    "Presence",
    "Registry",
    "RegistryError",
    "RelayDone",
    "RelayResult",
    "ResumeBusy",
    "ResumeOutcome",
    "RoomFull",
    "Routing",
    "SessionRecord",
    "Sessions",
    "memory_registry",
    "splice",
]
