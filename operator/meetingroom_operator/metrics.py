"""The operator's Prometheus metrics, on ``prometheus_client``, and the ``/metrics`` endpoint.

``Metrics`` owns its own ``CollectorRegistry`` (with the process, platform and GC
collectors), so several operators may live in one process, as in tests. The facade keeps
the handlers' call shapes: ``inc(amount, *labels)``, ``set(value, *labels)``,
``observe(value, *labels)`` and ``get(*labels)``. ``serve`` runs the endpoint on aiohttp
(already a dependency of the project).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import prometheus_client as prom
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metric:
    """A counter or a gauge with fixed label names.

    A counter's exposed name is ``name`` + ``_total`` (prometheus_client adds the suffix
    when ``name`` lacks it); ``get`` reads the exposed sample.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        kind: str,
        label_names: Sequence[str] = (),
    ) -> None:
        if kind not in ("counter", "gauge"):
            raise ValueError(f"unknown metric kind {kind!r}")
        self.registry, self.kind, self.label_names = registry, kind, tuple(label_names)
        self.name = name.removesuffix("_total") + "_total" if kind == "counter" else name
        cls = prom.Counter if kind == "counter" else prom.Gauge
        self._metric: prom.Counter | prom.Gauge = cls(
            name, help_text, self.label_names, registry=registry
        )

    def _check(self, labels: Sequence[str]) -> None:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")

    def _child(self, labels: Sequence[str]) -> prom.Counter | prom.Gauge:
        self._check(labels)
        return self._metric.labels(*labels) if labels else self._metric

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self._child(labels).inc(amount)

    def set(self, value: float, *labels: str) -> None:
        child = self._child(labels)
        if not isinstance(child, prom.Gauge):
            raise TypeError(f"{self.name} is a counter; it cannot be set")
        child.set(value)

    def get(self, *labels: str) -> float:
        self._check(labels)
        wanted = dict(zip(self.label_names, labels, strict=True))
        value = self.registry.get_sample_value(self.name, wanted)
        return value or 0.0


class Histogram:
    """A histogram with fixed label names; ``observe(value, *labels)``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = RECONCILE_BUCKETS,
    ) -> None:
        self.name, self.label_names = name, tuple(label_names)
        self._histogram = prom.Histogram(
            name, help_text, self.label_names, buckets=buckets, registry=registry
        )

    def observe(self, value: float, *labels: str) -> None:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        (self._histogram.labels(*labels) if labels else self._histogram).observe(value)


class Metrics:
    """Every metric the operator exports."""

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        prom.ProcessCollector(registry=reg)
        prom.PlatformCollector(registry=reg)
        prom.GCCollector(registry=reg)
        self.reconcile = Histogram(
            reg,
            "roomwire_operator_reconcile_seconds",
            "Duration of one reconcile (loop: the balance loop; room: one MeetingRoom).",
            label_names=("kind",),
        )
        self.moves = Metric(
            reg,
            "roomwire_operator_moves",
            "Sessions ordered to move (kind: room = migrate-room, session = reconnect).",
            "counter",
            ("kind",),
        )
        self.skew = Metric(
            reg, "roomwire_operator_skew", "max/mean of live sessions per pod.", "gauge"
        )
        self.pods = Metric(reg, "roomwire_operator_pods", "Serving signaling pods seen.", "gauge")
        self.rooms = Metric(reg, "roomwire_operator_rooms", "MeetingRooms known.", "gauge")
        self.replicas = Metric(
            reg, "roomwire_operator_desired_replicas", "Replicas the scaler wants.", "gauge"
        )
        self.dead_pods = Metric(
            reg, "roomwire_operator_dead_pods", "Dead signaling pods cleaned up.", "counter"
        )
        self.graced = Metric(
            reg,
            "roomwire_operator_sessions_graced",
            "Sessions of dead pods turned to grace for resume elsewhere.",
            "counter",
        )
        self.errors = Metric(
            reg, "roomwire_operator_errors", "Errors by where they happened.", "counter", ("where",)
        )
        self.config_updates = Metric(
            reg,
            "roomwire_operator_config_updates",
            "Versions of the operator's config-center document, by outcome (applied: in "
            "force; refused: invalid, the previous settings stay).",
            "counter",
            ("outcome",),
        )

    def render(self) -> str:
        """The Prometheus text format (0.0.4) of everything in this registry."""
        return generate_latest(self.registry).decode()


async def serve(
    metrics: Metrics,
    port: int,
    host: str = "0.0.0.0",
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> web.AppRunner:
    """Start ``/metrics`` (and ``/readyz``, 503 while ``ready`` says no) on
    ``host:port``; the caller cleans the runner up."""

    async def readyz(_: web.Request) -> web.Response:
        if ready is None or await ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="redis unreachable\n")

    async def handle(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
