"""A small Prometheus text-format registry: counters, gauges and histograms. No I/O."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable


class Counter:
    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + by

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.values and not self.labels:
            out.append(f"{self.name} 0")
        for key, value in sorted(self.values.items()):
            out.append(f"{self.name}{_labels(self.labels, key)} {value:g}")
        return out


class Gauge:
    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.read():g}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        self.name, self.help = name, help_text
        self.buckets = sorted(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {self.sum:g}")
        out.append(f"{self.name}_count {self.count}")
        return out


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{v}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class Metrics:
    """The workload's metrics; gauges read live values through callbacks."""

    def __init__(
        self,
        connections: Callable[[], float],
        sessions: Callable[[], float],
        rooms: Callable[[], float],
    ) -> None:
        self.messages = Counter(
            "roomwire_messages_total", "Frames received from clients, by type.", ["type"]
        )
        self.delivered = Counter(
            "roomwire_delivered_total", "Frames delivered to clients, by path.", ["path"]
        )
        self.errors = Counter("roomwire_errors_total", "Error frames sent, by code.", ["code"])
        self.closes = Counter(
            "roomwire_closes_total", "Connections closed by the server, by code.", ["code"]
        )
        self.kept = Counter(
            "roomwire_grace_kept_total", "Frames kept for sessions in their grace period."
        )
        self.relay_latency = Histogram(
            "roomwire_relay_latency_seconds",
            "Time from a frame's arrival at a pod to its hand-off to the receiver's socket.",
            [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
        )
        self.gauges = [
            Gauge(
                "roomwire_ws_connections",
                "Open WebSocket connections of this process.",
                connections,
            ),
            Gauge(
                "roomwire_sessions", "Sessions held by this process (live and in grace).", sessions
            ),
            Gauge("roomwire_rooms", "Rooms with at least one session on this process.", rooms),
        ]

    def render(self) -> str:
        lines: list[str] = []
        for g in self.gauges:
            lines += g.render()
        for c in (self.messages, self.delivered, self.errors, self.closes, self.kept):
            lines += c.render()
        lines += self.relay_latency.render()
        return "\n".join(lines) + "\n"
