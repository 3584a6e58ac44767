"""The live view's data, pure: a snapshot of the namespace, the Prometheus text parsed,
the decisions read from the difference between two snapshots, and a bounded history.
No I/O."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from roomwire_contract import keys

HISTORY_POINTS = 600  # one a second: ten minutes
DECISIONS_KEPT = 50


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of the Prometheus text format by their full name with labels, e.g.
    ``roomwire_sessions`` or ``roomwire_operator_moves_total{kind="room"}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.rpartition("}") if "}" in line else ("", "", line)
        if name:
            sample, value = name + "}", rest.strip().split()[0]
        else:
            parts = line.split()
            if len(parts) < 2:
                continue
            sample, value = parts[0], parts[1]
        try:
            out[sample] = float(value)
        except ValueError:
            continue
    return out


def metric_sum(samples: Mapping[str, float], name: str) -> float:
    """The sum of every sample of ``name`` whatever its labels (0 when absent)."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@dataclass(frozen=True)
class PodView:
    name: str
    ready: bool
    accepting: bool
    draining: bool
    weight: int | None  # the operator's weight annotation, 0..100
    connections: int | None  # from the pod's /metrics (None: not scraped)
    sessions: int | None
    rooms: int | None
    address: str = ""
    moving_out: int = 0  # moves in flight from this pod
    # Sessions on this pod per room, from its session set in Redis (None: not read).
    room_sessions: dict[str, int] | None = None


@dataclass(frozen=True)
class RoomView:
    name: str
    home: str
    phase: str
    capacity: int
    connections: int


@dataclass(frozen=True)
class OperatorView:
    up: bool
    desired_replicas: int | None
    skew: float | None
    moves_room: int
    moves_session: int


@dataclass(frozen=True)
class Snapshot:
    at: float
    namespace: str
    replicas: int | None  # the signaling Deployment's spec.replicas
    pods: tuple[PodView, ...]
    rooms: tuple[RoomView, ...]
    operator: OperatorView
    moves_in_flight: int | None  # None: Redis not read (no URL, or it did not answer)


@dataclass(frozen=True)
class Decision:
    at: float
    kind: str  # scale | rebalance | accepting | draining | rehome | pod
    text: str


def decisions(before: Snapshot | None, after: Snapshot) -> list[Decision]:
    """What the operator (or the Deployment) decided between two snapshots."""
    if before is None:
        return []
    at, out = after.at, []
    if before.replicas is not None and after.replicas is not None:
        if after.replicas != before.replicas:
            want = after.operator.desired_replicas
            why = f" (the operator wants {want})" if want is not None else ""
            out.append(Decision(at, "scale", f"scale {before.replicas} → {after.replicas}{why}"))
    moved_rooms = after.operator.moves_room - before.operator.moves_room
    moved_single = after.operator.moves_session - before.operator.moves_session
    if before.operator.up and (moved_rooms > 0 or moved_single > 0):
        skew = f", skew was {before.operator.skew:.2f}" if before.operator.skew else ""
        out.append(
            Decision(
                at,
                "rebalance",
                f"rebalance: {moved_rooms + moved_single} sessions ordered to move "
                f"({moved_rooms} with their rooms, {moved_single} single){skew}",
            )
        )
    old = {p.name: p for p in before.pods}
    for p in after.pods:
        q = old.get(p.name)
        if q is None:
            out.append(Decision(at, "pod", f"pod {p.name} appeared"))
            continue
        if q.accepting != p.accepting:
            verb = "accepts new connections again" if p.accepting else "stops accepting"
            out.append(Decision(at, "accepting", f"{p.name} {verb}"))
        if p.draining and not q.draining:
            out.append(Decision(at, "draining", f"{p.name} drains"))
    for name in sorted(set(old) - {p.name for p in after.pods}):
        out.append(Decision(at, "pod", f"pod {name} gone"))
    homes = {r.name: r.home for r in before.rooms}
    for r in after.rooms:
        prev = homes.get(r.name)
        if prev and r.home and prev != r.home:
            out.append(Decision(at, "rehome", f"room {r.name} re-homed {prev} → {r.home}"))
    return out


@dataclass
class LiveState:
    """The latest snapshot, connections per pod over time, the recent decisions."""

    history: deque[tuple[float, dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS)
    )
    recent: deque[Decision] = field(default_factory=lambda: deque(maxlen=DECISIONS_KEPT))
    latest: Snapshot | None = None

    def add(self, snap: Snapshot) -> list[Decision]:
        new = decisions(self.latest, snap)
        self.recent.extend(new)
        self.history.append(
            (snap.at, {p.name: p.connections for p in snap.pods if p.connections is not None})
        )
        self.latest = snap
        return new

    def to_json(self, since: float = -math.inf) -> dict[str, Any]:
        """What ``/api/state`` serves: the snapshot, the history after ``since``, and the
        decisions newest first."""
        snap = self.latest
        return {
            "snapshot": asdict(snap) if snap is not None else None,
            "history": [{"at": at, "pods": pods} for at, pods in self.history if at > since],
            "decisions": [asdict(d) for d in reversed(self.recent)],
        }


def sessions_by_room(members: Iterable[str]) -> dict[str, int]:
    """A pod's session set (``keys.session_member`` strings) counted per room."""
    out: dict[str, int] = {}
    for member in members:
        parsed = keys.parse_session_member(member)
        if parsed is not None:
            out[parsed[0]] = out.get(parsed[0], 0) + 1
    return dict(sorted(out.items()))


def moving_out(sources: Iterable[str]) -> dict[str, int]:
    """Moves in flight per source pod."""
    out: dict[str, int] = {}
    for pod in sources:
        out[pod] = out.get(pod, 0) + 1
    return out
