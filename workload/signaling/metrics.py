"""The workload's Prometheus metrics, on ``prometheus_client``. No I/O.

Each ``Metrics`` owns its own ``CollectorRegistry`` (several hubs may share a process, as
in tests), with the process, platform and GC collectors registered in it. The facade
keeps the call shapes the server uses: ``counter.inc("label")``, ``histogram.observe(x)``
and ``render()``. The counters and the histogram touched for every frame are counted in
plain Python values and rendered by ``prometheus_client`` at scrape time: its own
metric objects cost three to five times as much per update (a lock each).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

RELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LabelledCounter:
    """A counter with fixed label names; ``inc(*values, by=1.0)``.

    Counted in a plain dict: an ``inc`` on the hot path is one dict update (about 0.1 us,
    where a ``prometheus_client`` child costs 1 us with its lock; the pod is one
    thread). ``prometheus_client`` still renders it, escaping and all, through
    ``collect``; the exposed name is ``name`` + ``_total``.
    """

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        values = self._values
        values[label_values] = values.get(label_values, 0.0) + by

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for label_values, value in self._values.items():
            family.add_metric(list(label_values), value)
        return family


class FastHistogram:
    """A histogram counted in a plain list (``observe`` is a bisect and two adds, about
    0.3 us, where ``prometheus_client``'s costs 1.6 us), rendered by ``collect``."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self._sum += value

    def collect(self) -> Metric:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return HistogramMetricFamily(self.name, self.help, buckets=cumulative, sum_value=self._sum)


class CallbackCounter:
    """A counter kept by someone else (read through ``read`` at scrape time)."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help)
        family.add_metric([], self.read())
        return family


class _Hot(Collector):
    """The hot-path counters and histogram, handed to the registry at scrape time."""

    def __init__(self, parts: Sequence[LabelledCounter | FastHistogram | CallbackCounter]) -> None:
        self.parts = parts

    def collect(self) -> Iterable[Metric]:
        return [part.collect() for part in self.parts]


class Metrics:
    """The workload's metrics; gauges read live values through callbacks."""

    def __init__(
        self,
        connections: Callable[[], float],
        sessions: Callable[[], float],
        rooms: Callable[[], float],
        registry_up: Callable[[], float] = lambda: 1.0,
        draining: Callable[[], float] = lambda: 0.0,
        history_trimmed: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.registry = CollectorRegistry()
        prom.ProcessCollector(registry=self.registry)
        prom.PlatformCollector(registry=self.registry)
        prom.GCCollector(registry=self.registry)
        reg = self.registry
        self.messages = LabelledCounter(
            "roomwire_messages", "Frames received from clients, by type.", ["type"]
        )
        self.delivered = LabelledCounter(
            "roomwire_delivered", "Frames delivered to clients, by path.", ["path"]
        )
        self.errors = LabelledCounter("roomwire_errors", "Error frames sent, by code.", ["code"])
        self.closes = LabelledCounter(
            "roomwire_closes", "Connections closed by the server, by code.", ["code"]
        )
        self.kept = LabelledCounter(
            "roomwire_grace_kept", "Frames kept for sessions in their grace period."
        )
        self.admission_refused = LabelledCounter(
            "roomwire_admission_refused",
            "WebSocket upgrades refused by the connection caps, by reason "
            "(total: HTTP 503, per-address: HTTP 429).",
            ["reason"],
        )
        self.budget_refused = LabelledCounter(
            "roomwire_budget_refused",
            "Joins refused by a budget of this pod, by budget (rooms: --max-rooms).",
            ["budget"],
        )
        self.config_updates = LabelledCounter(
            "roomwire_config_updates",
            "Versions of this pod's config-center document, by outcome (applied: in force; "
            "refused: invalid, the previous settings stay).",
            ["outcome"],
        )
        self.relay_latency = FastHistogram(
            "roomwire_relay_latency_seconds",
            "Time from a frame's arrival at a pod to its hand-off to the receiver's socket.",
            RELAY_BUCKETS,
        )
        reg.register(
            _Hot(
                [self.messages, self.delivered, self.errors, self.closes, self.kept,
                 self.admission_refused, self.budget_refused, self.config_updates,
                 self.relay_latency,
                 CallbackCounter(
                     "roomwire_room_history_trimmed",
                     "Room events dropped from rooms' histories by their bounds (the "
                     "oldest first; --room-history, --room-history-bytes).",
                     history_trimmed,
                 )]
            )
        )  # fmt: skip
        for name, text, read in (
            ("roomwire_ws_connections", "Open WebSocket connections of this process.", connections),
            ("roomwire_sessions", "Sessions held by this process (live and in grace).", sessions),
            ("roomwire_rooms", "Rooms with at least one session on this process.", rooms),
            ("roomwire_registry_up", "1 while the registry (Redis) answers this pod.", registry_up),
            ("roomwire_draining", "1 once this pod drains (SIGTERM or the operator).", draining),
        ):
            prom.Gauge(name, text, registry=reg).set_function(read)

    def render(self) -> str:
        """The Prometheus text format (0.0.4) of everything in this registry."""
        return generate_latest(self.registry).decode()
