"""Service discovery, the part pods, the operator and consumers share: the service
registry's weight scale, the metadata keys of a pod's instance, and the weighted choice
of an endpoint. Pure: the Nacos client lives in the workload (``signaling.nacos`` and
``signaling.discovery``); anything here takes its randomness as an argument.

The weight scale (docs/nacos.md):

- ``WEIGHT_FULL`` (100) is a pod taking its full share of new connections, ``0`` a pod
  taking none (draining); the operator's weights (0..100) map one to one.
- A non-zero weight is never below ``WEIGHT_MIN`` (2), so never exactly 1.0: rnacos,
  the Nacos-protocol server of tests and the local cluster, reads a weight of exactly
  1.0 in an update as "weight not set" and keeps the old one. Nacos itself has no such
  rule; the scale works the same on both.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SERVICE = "roomwire-signaling"
GROUP = "DEFAULT_GROUP"

WEIGHT_FULL = 100.0
WEIGHT_MIN = 2.0

# Metadata of a pod's instance (all values strings, as Nacos keeps them).
META_POD = "pod"
META_NAMESPACE = "namespace"
META_VERSION = "version"
META_ZONE = "zone"
META_CONNECTIONS = "connections"
META_DRAINING = "draining"
META_WS_PATH = "ws-path"


def registry_weight(weight: float) -> float:
    """The weight to publish for a weight on the 0..100 scale: 0 stays 0 (no new
    connections), anything else is clamped to ``WEIGHT_MIN``..``WEIGHT_FULL``."""
    if not weight > 0:  # also NaN
        return 0.0
    return min(max(float(weight), WEIGHT_MIN), WEIGHT_FULL)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance as a consumer sees it."""

    host: str
    port: int
    weight: float
    healthy: bool = True
    enabled: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def draining(self) -> bool:
        return self.metadata.get(META_DRAINING, "false") == "true"

    @property
    def ws_url(self) -> str:
        """The pod's WebSocket URL (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.metadata.get(META_WS_PATH, '/ws')}"

    @property
    def eligible(self) -> bool:
        """Whether it may take a new connection: healthy, enabled, weight > 0, not
        draining."""
        return self.healthy and self.enabled and self.weight > 0 and not self.draining


def eligible(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints that may take a new connection, in a stable order (host, port)."""
    return sorted((e for e in endpoints if e.eligible), key=lambda e: (e.host, e.port))


def pick(endpoints: Sequence[Endpoint], rng: random.Random) -> Endpoint | None:
    """One eligible endpoint, each with probability weight / sum of weights; None when
    none is eligible. A random draw each time, not the emptiest: a burst of joins
    spreads by weight instead of herding onto the pod that looked emptiest."""
    candidates = eligible(endpoints)
    if not candidates:
        return None
    cumulative = list(itertools.accumulate(e.weight for e in candidates))
    x = rng.random() * cumulative[-1]
    return candidates[min(bisect.bisect_right(cumulative, x), len(candidates) - 1)]
