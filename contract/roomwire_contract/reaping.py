"""Reaping a dead pod, the part pods and operator share: what its claimed session set
asks for, as pure data (the scripts are ``lua/claim_pod.lua`` and
``lua/grace_sessions.lua``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from . import keys

# What lua/claim_pod.lua answers first.
ALIVE, NOTHING_LEFT, CLAIMED = 0, 1, 2


def grace_left(last_heartbeat: float | None, grace_s: float, now: float) -> int:
    """Whole seconds left of a grace period that started at the pod's last heartbeat
    (now, when unknown); at least 1, so that a session is never deleted by the turn."""
    start = now if last_heartbeat is None else last_heartbeat
    return max(1, math.floor(start + grace_s - now))


def grace_calls(members: Iterable[str]) -> list[list[str]]:
    """The ``KEYS`` of one ``grace_sessions`` call per room of the claimed members."""
    return [
        [k for peer in peers for k in keys.session_keys(room, peer)]
        for room, peers in keys.by_room(members).items()
    ]
