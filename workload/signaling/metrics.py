"""The workload's Prometheus metrics, on ``prometheus_client``. No I/O.

Each ``Metrics`` owns its own ``CollectorRegistry`` (several hubs may share a process, as
in tests), with the process, platform and GC collectors registered in it. The facade
keeps the call shapes the server uses: ``counter.inc("label")``, ``histogram.observe(x)``
and ``render()``; label children are cached so a hot-path ``inc`` is one dict look-up
and one locked add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest

RELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LabelledCounter:
    """A counter with fixed label names; ``inc(*values, by=1.0)``.

    The exposed name is ``name`` + ``_total`` (prometheus_client adds the suffix).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
    ) -> None:
        self.labels = tuple(labels)
        self._counter = prom.Counter(name, help_text, self.labels, registry=registry)
        self._children: dict[tuple[str, ...], prom.Counter] = {}

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        if not self.labels:
            self._counter.inc(by)
            return
        child = self._children.get(label_values)
        if child is None:
            child = self._children[label_values] = self._counter.labels(*label_values)
        child.inc(by)


class Metrics:
    """The workload's metrics; gauges read live values through callbacks."""

    def __init__(
        self,
        connections: Callable[[], float],
        sessions: Callable[[], float],
        rooms: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        prom.ProcessCollector(registry=self.registry)
        prom.PlatformCollector(registry=self.registry)
        prom.GCCollector(registry=self.registry)
        reg = self.registry
        self.messages = LabelledCounter(
            reg, "roomwire_messages", "Frames received from clients, by type.", ["type"]
        )
        self.delivered = LabelledCounter(
            reg, "roomwire_delivered", "Frames delivered to clients, by path.", ["path"]
        )
        self.errors = LabelledCounter(
            reg, "roomwire_errors", "Error frames sent, by code.", ["code"]
        )
        self.closes = LabelledCounter(
            reg, "roomwire_closes", "Connections closed by the server, by code.", ["code"]
        )
        self.kept = LabelledCounter(
            reg, "roomwire_grace_kept", "Frames kept for sessions in their grace period."
        )
        self.relay_latency = prom.Histogram(
            "roomwire_relay_latency_seconds",
            "Time from a frame's arrival at a pod to its hand-off to the receiver's socket.",
            buckets=RELAY_BUCKETS,
            registry=reg,
        )
        for name, text, read in (
            ("roomwire_ws_connections", "Open WebSocket connections of this process.", connections),
            ("roomwire_sessions", "Sessions held by this process (live and in grace).", sessions),
            ("roomwire_rooms", "Rooms with at least one session on this process.", rooms),
        ):
            prom.Gauge(name, text, registry=reg).set_function(read)

    def render(self) -> str:
        """The Prometheus text format (0.0.4) of everything in this registry."""
        return generate_latest(self.registry).decode()
