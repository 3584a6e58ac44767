"""MeetingRoom specs as typed values, and whether a room needs capacity now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Schedule:
    start: datetime
    end: datetime
    prewarm_s: int = 300


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """The parts of ``MeetingRoom.spec`` the operator decides on."""

    room: str
    """Room id clients join with (``spec.roomId``, else the resource name)."""
    capacity: int
    display_name: str = ""
    edge: bool = False
    schedule: Schedule | None = None
    paused: bool = False


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def room_spec(name: str, spec: Mapping[str, Any]) -> RoomSpec:
    """A typed ``RoomSpec`` from a MeetingRoom's name and spec (already validated by the
    API server's schema; a value out of shape raises ``ValueError``)."""
    capacity = spec.get("capacity")
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError("spec.capacity must be a positive integer")
    sched = spec.get("schedule")
    schedule = None
    if isinstance(sched, Mapping) and sched.get("start") and sched.get("end"):
        schedule = Schedule(
            _ts(str(sched["start"])),
            _ts(str(sched["end"])),
            int(sched.get("prewarmSeconds", 300)),
        )
    return RoomSpec(
        room=str(spec.get("roomId") or name),
        capacity=capacity,
        display_name=str(spec.get("displayName", "")),
        edge=bool(spec.get("edge", False)),
        schedule=schedule,
        paused=bool(spec.get("paused", False)),
    )


def is_active(spec: RoomSpec, now: datetime) -> bool:
    """A room counts towards capacity unless paused or outside its (pre-warmed) window."""
    if spec.paused:
        return False
    if spec.schedule is None:
        return True
    start = spec.schedule.start - timedelta(seconds=spec.schedule.prewarm_s)
    return start <= now < spec.schedule.end
