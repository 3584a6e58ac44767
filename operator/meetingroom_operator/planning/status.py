"""MeetingRoom status and standard conditions, built from what was observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from meetingroom_operator import constants as c
from meetingroom_operator.planning.edges import EdgeView


class Condition(TypedDict):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


@dataclass(frozen=True, slots=True)
class RoomObservation:
    home: str | None
    endpoint: str | None
    connections: int
    participants: int
    active: bool
    generation: int
    # The room's edge (None: it has none, or none ever linked); ``expect_edge`` when the
    # room's spec says it has one.
    edge: EdgeView | None = None
    expect_edge: bool = False


def condition(
    previous: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now_iso: str,
) -> Condition:
    """A condition; ``lastTransitionTime`` is kept while the status does not change."""
    value = "True" if status else "False"
    last = now_iso
    for old in previous:
        if old.get("type") == type_ and old.get("status") == value:
            last = str(old.get("lastTransitionTime") or now_iso)
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        lastTransitionTime=last,
        observedGeneration=generation,
    )


def build_status(
    obs: RoomObservation, previous: Sequence[Mapping[str, Any]], now_iso: str
) -> dict[str, Any]:
    """The full status of one MeetingRoom."""
    placed = obs.home is not None
    if not placed:
        phase = c.PHASE_PENDING
        ready = condition(
            previous,
            c.COND_READY,
            False,
            "NoPods",
            "no signaling pod can take rooms yet",
            obs.generation,
            now_iso,
        )
    elif not obs.active:
        phase = c.PHASE_IDLE
        ready = condition(
            previous,
            c.COND_READY,
            True,
            "Idle",
            f"placed on {obs.home}; outside its schedule",
            obs.generation,
            now_iso,
        )
    else:
        phase = c.PHASE_READY
        ready = condition(
            previous, c.COND_READY, True, "Placed", f"home pod {obs.home}", obs.generation, now_iso
        )
    placed_cond = condition(
        previous,
        c.COND_PLACED,
        placed,
        "HomePodAssigned" if placed else "NoPods",
        f"home pod {obs.home}" if placed else "waiting for a signaling pod",
        obs.generation,
        now_iso,
    )
    out: dict[str, Any] = {
        "phase": phase,
        "homePod": obs.home or "",
        "endpoint": obs.endpoint or "",
        "connections": obs.connections,
        "participants": obs.participants,
        "observedGeneration": obs.generation,
        "conditions": [ready, placed_cond],
    }
    if obs.edge is not None or obs.expect_edge:
        e = obs.edge
        if e is not None:
            out["edge"] = e.status()
        out["conditions"].append(
            condition(
                previous,
                c.COND_EDGE,
                e is not None and e.connected,
                "NeverLinked" if e is None else "Linked" if e.connected else "Lost",
                "no edge has linked yet"
                if e is None
                else f"edge {e.edge} on pod {e.pod} with {e.devices} devices"
                if e.connected
                else f"edge {e.edge} not linked (last on pod {e.pod})",
                obs.generation,
                now_iso,
            )
        )
    return out


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal but for the conditions' ``lastTransitionTime`` (nothing to write)."""

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        conds = [
            {k: v for k, v in x.items() if k != "lastTransitionTime"}
            for x in s.get("conditions") or []
        ]
        return {**s, "conditions": conds}

    return strip(a) == strip(b)


def invalid_status(
    reason: str, message: str, previous: Sequence[Mapping[str, Any]], generation: int, now_iso: str
) -> dict[str, Any]:
    """Status of a room the operator refuses (e.g. its room id is taken)."""
    ready = condition(previous, c.COND_READY, False, reason, message, generation, now_iso)
    placed = condition(previous, c.COND_PLACED, False, reason, message, generation, now_iso)
    return {
        "phase": c.PHASE_PENDING,
        "homePod": "",
        "endpoint": "",
        "observedGeneration": generation,
        "conditions": [ready, placed],
    }
