"""Settings of a signaling process: command-line flags, each also read from SIGNALING_*."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field

from .protocol import Limits
from .tokens import JoinPolicy


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    redis_url: str | None = None
    pod_id: str = field(default_factory=socket.gethostname)
    token_secret: str | None = None
    token_leeway_s: float = 5.0
    token_max_lifetime_s: float = 3600.0
    token_audience: str | None = None
    token_issuer: str | None = None
    control_secret: str = ""
    advertise_url: str = ""
    heartbeat_s: float = 2.0
    ws_heartbeat_s: float = 20.0
    event_loop: str = "uvloop"
    limits: Limits = field(default_factory=Limits)

    @property
    def join_policy(self) -> JoinPolicy | None:
        """What a join token must satisfy; None: open development mode (no auth)."""
        if not self.token_secret:
            return None
        return JoinPolicy(
            self.token_secret,
            leeway_s=self.token_leeway_s,
            max_lifetime_s=self.token_max_lifetime_s,
            audience=self.token_audience,
            issuer=self.token_issuer,
        )


# (flag, env suffix, type, default, help)
_OPTIONS: list[tuple[str, str, type, object, str]] = [
    ("host", "HOST", str, "0.0.0.0", "address to listen on"),
    ("port", "PORT", int, 8080, "port to listen on"),
    (
        "redis-url",
        "REDIS_URL",
        str,
        None,
        "Redis URL (redis://host:port/db); absent: embedded single-process mode, in memory",
    ),
    ("pod-id", "POD_ID", str, None, "this pod's id in the registry (default: the host name)"),
    (
        "token-secret",
        "TOKEN_SECRET",
        str,
        None,
        "HS256 secret for join tokens; absent: open development mode (no auth)",
    ),
    (
        "token-leeway",
        "TOKEN_LEEWAY_S",
        float,
        5.0,
        "seconds of clock skew allowed on a join token's exp, nbf and iat",
    ),
    (
        "token-max-lifetime",
        "TOKEN_MAX_LIFETIME_S",
        float,
        3600.0,
        "longest-lived join token accepted, in seconds: exp - iat or exp - now beyond it is "
        "refused",
    ),
    (
        "token-audience",
        "TOKEN_AUDIENCE",
        str,
        None,
        "aud every join token must name; absent: a join token with any aud is refused",
    ),
    (
        "token-issuer",
        "TOKEN_ISSUER",
        str,
        None,
        "iss every join token must carry; absent: iss is not checked",
    ),
    (
        "control-secret",
        "CONTROL_SECRET",
        str,
        "",
        "HMAC secret of operator commands; absent: operator commands are ignored",
    ),
    (
        "advertise-url",
        "ADVERTISE_URL",
        str,
        None,
        "ws URL other pods and the operator use to reach this pod (default from host and port)",
    ),
    (
        "max-frame-bytes",
        "MAX_FRAME_BYTES",
        int,
        64 * 1024,
        "largest frame accepted; larger ones close the connection with 1009",
    ),
    (
        "outbound-queue",
        "OUTBOUND_QUEUE",
        int,
        256,
        "frames queued per connection before it is closed as a slow consumer (1013)",
    ),
    ("rate", "RATE", float, 50.0, "frames per second per connection (then 'rate-limited')"),
    ("rate-burst", "RATE_BURST", int, 100, "burst allowance of the rate limit"),
    ("max-peers", "MAX_PEERS", int, 64, "peers per room (then 'room-full', close 1013)"),
    ("grace", "GRACE_S", float, 30.0, "seconds a dropped session waits for its resume"),
    ("grace-keep", "GRACE_KEEP", int, 256, "frames kept per session during its grace period"),
    ("drain", "DRAIN_S", float, 20.0, "seconds to drain on SIGTERM"),
    ("heartbeat", "HEARTBEAT_S", float, 2.0, "seconds between registry heartbeats"),
    ("ws-heartbeat", "WS_HEARTBEAT_S", float, 20.0, "seconds between WebSocket pings"),
    (
        "event-loop",
        "EVENT_LOOP",
        str,
        "uvloop",
        "asyncio event loop: uvloop (faster; asyncio where it is not installed) or asyncio",
    ),
    ("log-level", "LOG_LEVEL", str, "INFO", "logging level"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, env, typ, default, text in _OPTIONS:
        parser.add_argument(
            f"--{flag}",
            type=typ,
            default=None,
            help=f"{text} [env SIGNALING_{env}; default {default}]",
        )


def resolve(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> tuple[Settings, str]:
    """Settings from flags, then SIGNALING_* variables, then defaults; and the log level."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for flag, suffix, typ, default, _ in _OPTIONS:
        name = flag.replace("-", "_")
        value = getattr(args, name, None)
        if value is None and f"SIGNALING_{suffix}" in env:
            raw = env[f"SIGNALING_{suffix}"]
            try:
                value = typ(raw) if raw != "" else None
            except ValueError:
                raise ConfigError(
                    f"SIGNALING_{suffix}={raw!r} is not a valid {typ.__name__}"
                ) from None
        values[name] = default if value is None else value
    for name in (
        "port",
        "max_frame_bytes",
        "outbound_queue",
        "rate_burst",
        "max_peers",
        "grace_keep",
    ):
        if int(values[name]) <= 0:  # type: ignore[call-overload]
            raise ConfigError(f"{name} must be positive")
    for name in ("rate", "grace", "drain", "heartbeat", "ws_heartbeat", "token_max_lifetime"):
        if float(values[name]) <= 0:  # type: ignore[arg-type]
            raise ConfigError(f"{name} must be positive")
    if float(values["token_leeway"]) < 0:  # type: ignore[arg-type]
        raise ConfigError("token_leeway must not be negative")
    if values["event_loop"] not in ("uvloop", "asyncio"):
        raise ConfigError(f"event loop must be uvloop or asyncio, not {values['event_loop']!r}")
    host, port = str(values["host"]), int(values["port"])  # type: ignore[call-overload]
    pod_id = str(values["pod_id"] or socket.gethostname())
    advertise = values["advertise_url"] or (
        f"ws://{host if host not in ('0.0.0.0', '::') else socket.gethostname()}:{port}/ws"
    )
    limits = Limits(
        max_frame_bytes=int(values["max_frame_bytes"]),  # type: ignore[call-overload]
        outbound_queue=int(values["outbound_queue"]),  # type: ignore[call-overload]
        rate_per_s=float(values["rate"]),  # type: ignore[arg-type]
        rate_burst=int(values["rate_burst"]),  # type: ignore[call-overload]
        max_peers_per_room=int(values["max_peers"]),  # type: ignore[call-overload]
        grace_s=float(values["grace"]),  # type: ignore[arg-type]
        grace_keep=int(values["grace_keep"]),  # type: ignore[call-overload]
        drain_s=float(values["drain"]),  # type: ignore[arg-type]
    )
    settings = Settings(
        host=host,
        port=port,
        redis_url=values["redis_url"] or None,  # type: ignore[arg-type]
        pod_id=pod_id,
        token_secret=values["token_secret"] or None,  # type: ignore[arg-type]
        token_leeway_s=float(values["token_leeway"]),  # type: ignore[arg-type]
        token_max_lifetime_s=float(values["token_max_lifetime"]),  # type: ignore[arg-type]
        token_audience=values["token_audience"] or None,  # type: ignore[arg-type]
        token_issuer=values["token_issuer"] or None,  # type: ignore[arg-type]
        control_secret=str(values["control_secret"] or ""),
        advertise_url=str(advertise),
        heartbeat_s=float(values["heartbeat"]),  # type: ignore[arg-type]
        ws_heartbeat_s=float(values["ws_heartbeat"]),  # type: ignore[arg-type]
        event_loop=str(values["event_loop"]),
        limits=limits,
    )
    return settings, str(values["log_level"])
