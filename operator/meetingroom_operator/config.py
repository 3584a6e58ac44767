"""One typed configuration, read once at start-up from ``ROOMWIRE_*`` environment
variables. Every value is checked; a bad one stops the operator with all problems
listed, instead of surfacing later as a strange decision."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TypeVar

from meetingroom_operator.errors import ConfigError

PREFIX = "ROOMWIRE_"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Config:
    redis_url: str
    control_secret: str
    namespace: str = "default"
    deployment: str = "signaling"
    signaling_port: int = 8080
    # scaling
    scaling_enabled: bool = True
    per_pod: int = 200
    min_replicas: int = 1
    max_replicas: int = 20
    buffer_pods: int = 1
    buffer_percent: int = 0
    scale_down_window_s: float = 120.0
    drain_deadline_s: float = 60.0
    # placement and weights
    placement_balance: float = 1.15
    accept_high: float = 1.10
    accept_low: float = 1.02
    # rebalancing
    rebalance_enabled: bool = True
    skew_threshold: float = 1.10
    skew_persist_s: float = 10.0
    move_window_ms: int = 5_000
    move_batch: int = 10
    max_moves_per_wave: int = 500
    move_timeout_s: float = 30.0
    # dead pods and loops
    grace_ttl_s: int = 30
    interval_s: float = 1.0
    status_interval_s: float = 5.0
    metrics_port: int = 9090
    metrics_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``ROOMWIRE_<FIELD>`` for every field; raise ``ConfigError`` listing every
        missing or bad value."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict[str, object] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw == "":
                if f.name in ("redis_url", "control_secret"):
                    problems.append(f"{key} is required")
                continue
            kind = type(f.default) if f.name not in ("redis_url", "control_secret") else str
            try:
                values[f.name] = _parse(kind, raw)
            except ValueError as e:
                problems.append(f"{key}={raw!r}: {e}")
        if not problems:
            try:
                cfg = cls(**values)  # type: ignore[arg-type]
            except TypeError as e:  # pragma: no cover - fields and parsing agree
                raise ConfigError(str(e)) from e
            problems = cfg.problems()
            if not problems:
                return cfg
        raise ConfigError("bad operator configuration: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Range checks across fields."""
        p: list[str] = []
        check: list[tuple[bool, str]] = [
            (
                self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                "ROOMWIRE_REDIS_URL must be a redis:// URL",
            ),
            (len(self.control_secret) >= 16, "ROOMWIRE_CONTROL_SECRET needs >= 16 characters"),
            (bool(self.namespace), "ROOMWIRE_NAMESPACE is empty"),
            (0 < self.signaling_port < 65536, "ROOMWIRE_SIGNALING_PORT out of range"),
            (self.per_pod > 0, "ROOMWIRE_PER_POD must be > 0"),
            (
                0 <= self.min_replicas <= self.max_replicas,
                "need 0 <= ROOMWIRE_MIN_REPLICAS <= ROOMWIRE_MAX_REPLICAS",
            ),
            (self.buffer_pods >= 0 and self.buffer_percent >= 0, "buffers must be >= 0"),
            (self.scale_down_window_s >= 0, "ROOMWIRE_SCALE_DOWN_WINDOW_S must be >= 0"),
            (self.drain_deadline_s > 0, "ROOMWIRE_DRAIN_DEADLINE_S must be > 0"),
            (self.placement_balance >= 1.0, "ROOMWIRE_PLACEMENT_BALANCE must be >= 1.0"),
            (
                1.0 <= self.accept_low <= self.accept_high,
                "need 1.0 <= ROOMWIRE_ACCEPT_LOW <= ROOMWIRE_ACCEPT_HIGH",
            ),
            (self.skew_threshold >= 1.0, "ROOMWIRE_SKEW_THRESHOLD must be >= 1.0"),
            (self.skew_persist_s >= 0, "ROOMWIRE_SKEW_PERSIST_S must be >= 0"),
            (self.move_window_ms >= 0, "ROOMWIRE_MOVE_WINDOW_MS must be >= 0"),
            (self.move_batch > 0, "ROOMWIRE_MOVE_BATCH must be > 0"),
            (self.max_moves_per_wave > 0, "ROOMWIRE_MAX_MOVES_PER_WAVE must be > 0"),
            (self.move_timeout_s > 0, "ROOMWIRE_MOVE_TIMEOUT_S must be > 0"),
            (self.grace_ttl_s > 0, "ROOMWIRE_GRACE_TTL_S must be > 0"),
            (self.interval_s > 0, "ROOMWIRE_INTERVAL_S must be > 0"),
            (self.status_interval_s > 0, "ROOMWIRE_STATUS_INTERVAL_S must be > 0"),
            (0 <= self.metrics_port < 65536, "ROOMWIRE_METRICS_PORT out of range (0: off)"),
        ]
        for ok, message in check:
            if not ok:
                p.append(message)
        return p


def _parse(kind: type[T], raw: str) -> object:
    parsers: dict[type, Callable[[str], object]] = {
        bool: _bool,
        int: int,
        float: float,
        str: str,
    }
    return parsers[kind](raw.strip())


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")
