"""Replica planning: demand plus a spare buffer, clamped, stabilised on the way down;
and the scale-down steps that drain the emptiest pods before the Deployment shrinks.

Like Agones' FleetAutoscaler buffer policy, capacity is kept ahead of demand by a
spare buffer (absolute pods or a percentage of demand, whichever is larger). Like the
HPA, scale-down is stabilised: the replica count is the largest recommendation of the
last ``window_s`` seconds, so a short dip never removes pods; scale-up is immediate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DELETION_COST_DRAINED = -1_000_000
"""Deletion cost of a drained pod: the ReplicaSet removes it before any other."""
DELETION_COST_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    per_pod: int
    """Connections (devices) one signaling pod is sized for."""
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


def raw_replicas(active_capacity: int, live_connections: int, policy: ScalingPolicy) -> int:
    """Pods needed for ``max(active capacity, live connections)`` plus the buffer."""
    demand = max(active_capacity, live_connections, 0)
    spare = max(
        policy.buffer_pods * policy.per_pod, math.ceil(demand * policy.buffer_percent / 100)
    )
    wanted = math.ceil((demand + spare) / policy.per_pod)
    return min(max(wanted, policy.min_replicas), policy.max_replicas)


def plan_replicas(
    active_capacity: int,
    live_connections: int,
    policy: ScalingPolicy,
    history: Sequence[Recommendation],
    now: float,
) -> ReplicaDecision:
    """The stabilised replica count: the largest recommendation within the window."""
    raw = raw_replicas(active_capacity, live_connections, policy)
    kept = tuple(r for r in history if now - r.at < policy.window_s)
    new_history = (*kept, Recommendation(now, raw))
    replicas = max(r.replicas for r in new_history)
    demand = max(active_capacity, live_connections, 0)
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
