"""Which pods to send their weight to (the ``weight`` command, docs/nacos.md). Pure.

The operator's weight (``planning.weights``, 0..100) reaches a pod as a signed command
on its inbox; the pod publishes it on its own Nacos instance, of which it stays the one
writer. A weight is sent when it changed since the last one a pod received, and again
every ``refresh_s`` even when unchanged, so a pod that restarted (and forgot it) gets
it back. A send that reached no listener is not counted as sent: it is tried again on
the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class Sent:
    """The last weight a pod received, and when (the operator's clock)."""

    weight: int
    at: float


def due(
    planned: Mapping[str, int],
    sent: Mapping[str, Sent],
    now: float,
    refresh_s: float = REFRESH_S,
) -> dict[str, int]:
    """The pods of ``planned`` to send their weight to now: never sent, changed, or last
    sent ``refresh_s`` ago or more."""
    out: dict[str, int] = {}
    for pod, weight in sorted(planned.items()):
        last = sent.get(pod)
        if last is None or last.weight != weight or now - last.at >= refresh_s:
            out[pod] = weight
    return out


@dataclass
class WeightSends:
    """The last weight sent to each pod (operator memory; a restarted operator sends
    every weight once more, which is harmless)."""

    refresh_s: float = REFRESH_S
    sent: dict[str, Sent] = field(default_factory=dict)

    def due(self, planned: Mapping[str, int], now: float) -> dict[str, int]:
        return due(planned, self.sent, now, self.refresh_s)

    def record(self, pod: str, weight: int, now: float) -> None:
        self.sent[pod] = Sent(weight, now)

    def keep_only(self, pods: Iterable[str]) -> None:
        """Forget pods that are gone (a pod of the same name later starts afresh)."""
        alive = set(pods)
        for pod in [p for p in self.sent if p not in alive]:
            del self.sent[pod]
