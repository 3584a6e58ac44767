"""Endpoint weights from live per-pod connection counts: one place, many publishers.

``weight`` (0..100) is proportional to how far a pod is below the busiest share it
should carry: ``100 * min(1, mean / connections)``; a draining pod weighs 0.
``accepting`` says whether the pod should take NEW connections (the Service selects on
it). It has hysteresis: a pod stops accepting above ``high * mean`` (and at least
``min_excess`` connections above the mean), and accepts again only at or below
``low * mean``. At least one pod always accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_HIGH = 1.10
DEFAULT_LOW = 1.02
DEFAULT_MIN_EXCESS = 2


@dataclass(frozen=True, slots=True)
class PodWeight:
    pod: str
    weight: int
    accepting: bool


def plan_weights(
    connections: Mapping[str, int],
    *,
    draining: frozenset[str] = frozenset(),
    accepting_now: Mapping[str, bool] | None = None,
    high: float = DEFAULT_HIGH,
    low: float = DEFAULT_LOW,
    min_excess: int = DEFAULT_MIN_EXCESS,
    step: int = 5,
) -> dict[str, PodWeight]:
    """A weight and an accepting flag for every pod in ``connections``. Weights are
    multiples of ``step`` (at least 1), so that publishing them does not churn."""
    if not 1.0 <= low <= high:
        raise ValueError("need 1.0 <= low <= high")
    accepting_now = accepting_now or {}
    serving = {p: max(c, 0) for p, c in connections.items() if p not in draining}
    mean = sum(serving.values()) / len(serving) if serving else 0.0
    out: dict[str, PodWeight] = {}
    for pod, c in sorted(connections.items()):
        if pod in draining:
            out[pod] = PodWeight(pod, 0, False)
            continue
        c = max(c, 0)
        weight = 100 if c <= mean or c == 0 else max(1, round(100 * mean / c / step) * step)
        if accepting_now.get(pod, True):
            accepting = not (c > high * mean and c - mean >= min_excess)
        else:
            accepting = c <= low * mean
        out[pod] = PodWeight(pod, weight, accepting)
    if serving and not any(out[p].accepting for p in serving):
        least = min(serving.values())
        for p, c in serving.items():
            if c == least:
                out[p] = PodWeight(p, out[p].weight, True)
    return out
