"""The operator's Prometheus metrics: a tiny registry and the ``/metrics`` endpoint.

Counters, gauges and histograms with fixed label names, rendered in the Prometheus text
format. ``serve`` runs the endpoint on aiohttp (already a dependency of the project).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

Labels = tuple[str, ...]


@dataclass
class Metric:
    name: str
    help: str
    kind: str
    label_names: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def _key(self, labels: Sequence[str]) -> Labels:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}")
        return tuple(labels)

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, *labels: str) -> None:
        self.values[self._key(labels)] = value

    def get(self, *labels: str) -> float:
        return self.values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.values.items()):
            out.append(f"{self.name}{_fmt(self.label_names, labels)} {value:g}")
        return out


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    label_names: tuple[str, ...] = ()
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        key = tuple(labels)
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            running = 0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _fmt((*self.label_names, "le"), (*key, le))
                out.append(f"{self.name}_bucket{labels} {running}")
            base = _fmt(self.label_names, key)
            out.append(f"{self.name}_sum{base} {self.sums[key]:g}")
            out.append(f"{self.name}_count{base} {running}")
        return out


def _fmt(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{v}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class Metrics:
    """Every metric the operator exports."""

    def __init__(self) -> None:
        self.reconcile = Histogram(
            "roomwire_operator_reconcile_seconds",
            "Duration of one reconcile (loop: the balance loop; room: one MeetingRoom).",
            label_names=("kind",),
        )
        self.moves = Metric(
            "roomwire_operator_moves_total",
            "Sessions ordered to move (kind: room = migrate-room, session = reconnect).",
            "counter",
            ("kind",),
        )
        self.skew = Metric("roomwire_operator_skew", "max/mean of live sessions per pod.", "gauge")
        self.pods = Metric("roomwire_operator_pods", "Serving signaling pods seen.", "gauge")
        self.rooms = Metric("roomwire_operator_rooms", "MeetingRooms known.", "gauge")
        self.replicas = Metric(
            "roomwire_operator_desired_replicas", "Replicas the scaler wants.", "gauge"
        )
        self.dead_pods = Metric(
            "roomwire_operator_dead_pods_total", "Dead signaling pods cleaned up.", "counter"
        )
        self.graced = Metric(
            "roomwire_operator_sessions_graced_total",
            "Sessions of dead pods turned to grace for resume elsewhere.",
            "counter",
        )
        self.errors = Metric(
            "roomwire_operator_errors_total",
            "Errors by where they happened.",
            "counter",
            ("where",),
        )

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.reconcile, self.moves, self.skew, self.pods, self.rooms, self.replicas,
                  self.dead_pods, self.graced, self.errors):  # fmt: skip
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


async def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Start ``/metrics`` on ``host:port``; the caller cleans the runner up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
