"""Replica planning: demand plus a spare buffer, clamped, stabilised on the way down;
and the scale-down steps that drain the emptiest pods before the Deployment shrinks.

Like Agones' FleetAutoscaler buffer policy, capacity is kept ahead of demand by a
spare buffer (absolute pods or a percentage of demand, whichever is larger). Like the
HPA, scale-down is stabilised: the replica count is the largest recommendation of the
last ``window_s`` seconds, so a short dip never removes pods; scale-up is immediate.

Demand is ``max(capacity of the active rooms, sessions to serve)``, and sessions to
serve are counted from the registry's session records, each session once
(``session_demand``): the live sessions (one record names one owner pod) plus the
operator's own moves still in transit (a session between its old socket's close and its
resume elsewhere is in grace, live nowhere, and still someone's device). It is not the
sum of the pods' heartbeat ``connections``: each pod's heartbeat is a snapshot taken at
its own moment (every 2 s), and a session that moves between two of them is counted by
its old pod's last heartbeat and its new pod's first, and its old socket may still be
open beside the new one; during a rebalance wave that double count is a large share of
the moved sessions, enough to ask for an extra pod that then stays for the whole
scale-down window and costs a second wave of moves. A socket that has not joined yet is
no session and is not counted: it becomes one within a round trip, or goes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DELETION_COST_DRAINED = -1_000_000
"""Deletion cost of a drained pod: the ReplicaSet removes it before any other."""
DELETION_COST_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    per_pod: int
    """Sessions (devices: one direct client is one session on one WebSocket) one
    signaling pod is sized for."""
    min_replicas: int = 1
    max_replicas: int = 20
    buffer_pods: int = 0
    buffer_percent: int = 0
    window_s: float = 60.0
    """Scale-down stabilisation window."""

    def __post_init__(self) -> None:
        if self.per_pod <= 0:
            raise ValueError("per_pod must be > 0")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.buffer_pods < 0 or self.buffer_percent < 0 or self.window_s < 0:
            raise ValueError("buffers and window must be >= 0")


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class ReplicaDecision:
    replicas: int
    """What to run now (stabilised)."""
    raw: int
    """What the demand alone asks for."""
    demand: int
    history: tuple[Recommendation, ...]


def session_demand(live: Iterable[str], in_transit: Iterable[str] = ()) -> int:
    """Sessions to serve, each counted once: the ids of the live sessions (from their
    registry records, each under the one pod it names) united with the ids of the
    operator's moves not yet observed complete (in grace between two pods, or live on
    one: counted once either way)."""
    return len(set(live).union(in_transit))


def raw_replicas(active_capacity: int, sessions: int, policy: ScalingPolicy) -> int:
    """Pods needed for ``max(active capacity, sessions)`` plus the buffer."""
    demand = max(active_capacity, sessions, 0)
    spare = max(
        policy.buffer_pods * policy.per_pod, math.ceil(demand * policy.buffer_percent / 100)
    )
    wanted = math.ceil((demand + spare) / policy.per_pod)
    return min(max(wanted, policy.min_replicas), policy.max_replicas)


def plan_replicas(
    active_capacity: int,
    sessions: int,
    policy: ScalingPolicy,
    history: Sequence[Recommendation],
    now: float,
) -> ReplicaDecision:
    """The stabilised replica count: the largest recommendation within the window.
    ``sessions`` is ``session_demand`` of what was observed."""
    raw = raw_replicas(active_capacity, sessions, policy)
    kept = tuple(r for r in history if now - r.at < policy.window_s)
    new_history = (*kept, Recommendation(now, raw))
    replicas = max(r.replicas for r in new_history)
    demand = max(active_capacity, sessions, 0)
    return ReplicaDecision(replicas, raw, demand, new_history)


@dataclass(frozen=True, slots=True)
class PodLoad:
    """What the scaler knows of one signaling pod."""

    name: str
    connections: int
    draining_since: float | None = None
    heartbeat: bool = True
    """False when the pod publishes no heartbeat (not started, or gone)."""


@dataclass(frozen=True, slots=True)
class ScaleStep:
    drain: tuple[str, ...]
    """Pods to start draining now (annotate, stop accepting, re-home rooms, send drain)."""
    scale_to: int | None
    """Replicas to write now, or None (nothing, or waiting for drains)."""
    waiting_for: tuple[str, ...]


def pick_emptiest(pods: Sequence[PodLoad], count: int) -> list[str]:
    """The ``count`` pods with the fewest connections (ties: by name, stable)."""
    return [p.name for p in sorted(pods, key=lambda p: (p.connections, p.name))[: max(count, 0)]]


def plan_scale(
    spec_replicas: int,
    desired: int,
    pods: Sequence[PodLoad],
    now: float,
    drain_deadline_s: float,
) -> ScaleStep:
    """One step towards ``desired``. Scaling up is immediate. Scaling down drains the
    emptiest pods first and writes the smaller replica count only when each of them is
    empty (or its drain deadline passed), so that nobody is dropped."""
    if desired >= spec_replicas:
        return ScaleStep((), desired if desired != spec_replicas else None, ())
    excess = spec_replicas - desired
    draining = [p for p in pods if p.draining_since is not None]
    draining.sort(key=lambda p: (p.draining_since or 0.0, p.name))
    victims = draining[:excess]
    fresh = pick_emptiest([p for p in pods if p.draining_since is None], excess - len(victims))
    waiting = tuple(
        p.name
        for p in victims
        if p.heartbeat and p.connections > 0 and now - (p.draining_since or now) < drain_deadline_s
    )
    if fresh or waiting:
        return ScaleStep(tuple(fresh), None, tuple(waiting) + tuple(fresh))
    return ScaleStep((), desired, ())


def deletion_costs(pods: Sequence[PodLoad], step: int = 1) -> dict[str, int]:
    """``controller.kubernetes.io/pod-deletion-cost`` per pod: its connection count
    (rounded down to a multiple of ``step``, so that publishing it does not churn), so
    that the ReplicaSet removes the emptiest; drained pods lowest of all."""
    step = max(step, 1)
    out: dict[str, int] = {}
    for p in pods:
        if p.draining_since is not None:
            out[p.name] = DELETION_COST_DRAINED
        else:
            out[p.name] = min(max(p.connections, 0) // step * step, DELETION_COST_MAX)
    return out


def active_capacity(capacities: Mapping[str, int], active: Mapping[str, bool]) -> int:
    """Sum of the capacity of rooms that are active now."""
    return sum(c for r, c in capacities.items() if active.get(r, True))
