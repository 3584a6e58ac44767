"""Settings of ``signaling edge``, each declared once: its flag (``--room``) and its
``SIGNALING_EDGE_*`` variable (``SIGNALING_EDGE_ROOM``) are derived from the field's name
(``roomwire_contract.settings``); a flag wins over its variable, the variable over the
default. The device limits take their defaults from ``protocol.Limits``, like the pods'."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping

from roomwire_contract.settings import SettingsError, add_flags, load, setting, settings_class

from ..protocol import Limits
from ..tokens import JoinPolicy

PREFIX = "SIGNALING_EDGE_"
_LIMITS = Limits()


class EdgeConfigError(ValueError):
    pass


def _edge_id() -> str:
    return "edge-" + (socket.gethostname().split(".")[0] or "box")


@settings_class
class EdgeSettings:
    room: str = setting(help="the room this edge serves (required)")
    host: str = setting(default="0.0.0.0", help="address devices connect to")
    port: int = setting(default=8090, gt=0, help="port devices connect to (ws://HOST:PORT/ws)")
    upstream: str | None = setting(
        default=None,
        help="the cloud's edge endpoint, ws://SERVICE:8080/edge, or nacos://NACOS:8848"
        "[?fallback=ws://SERVICE:8080/ws] to draw a pod by weight from Nacos "
        "(docs/nacos.md); several comma-separated are tried in turn; absent: the room is "
        "served on the LAN only",
    )
    edge_token: str | None = setting(
        default=None,
        help="the edge's token for the cloud (HS256, role 'edge', use 'edge', this room); "
        "absent: for a cloud in open development mode",
    )
    edge_token_file: str | None = setting(
        default=None,
        help="file holding the edge token, read again at each link-up (the cloud caps a "
        "token's lifetime at its --token-max-lifetime: rotate it here without a restart); "
        "wins over --edge-token",
    )
    edge_id: str = setting(
        default_factory=_edge_id,
        help="the edge's peer id upstream, named in its edge token (default: edge-<host name>)",
    )
    token_secret: str | None = setting(
        default=None,
        help="HS256 secret of the devices' join tokens, checked with the cloud's rules; "
        "absent: open development mode (no auth)",
    )
    token_leeway_s: float = setting(
        default=5.0, ge=0, help="seconds of clock skew allowed on a join token's exp, nbf, iat"
    )
    token_max_lifetime_s: float = setting(
        default=3600.0, gt=0, help="longest-lived join token accepted, in seconds"
    )
    token_audience: str | None = setting(
        default=None, help="aud every join token must name; absent: one with an aud is refused"
    )
    token_issuer: str | None = setting(
        default=None, help="iss every join token must carry; absent: iss is not checked"
    )
    max_frame_bytes: int = setting(
        default=_LIMITS.max_frame_bytes,
        gt=0,
        help="largest device frame; larger ones close the device's connection with 1009",
    )
    outbound_queue: int = setting(
        default=_LIMITS.outbound_queue,
        gt=0,
        help="frames queued per device before it is closed as a slow consumer (1013)",
    )
    rate: float = setting(
        default=_LIMITS.rate_per_s, gt=0, help="frames per second per device (then 'rate-limited')"
    )
    rate_burst: int = setting(
        default=_LIMITS.rate_burst, gt=0, help="burst allowance of the rate limit"
    )
    max_peers: int = setting(
        default=_LIMITS.max_peers_per_room,
        gt=0,
        help="peers in the room, devices and remote ones (then 'room-full', close 1013)",
    )
    grace_s: float = setting(
        default=_LIMITS.grace_s, gt=0, help="seconds a dropped device waits for its resume"
    )
    grace_keep: int = setting(
        default=_LIMITS.grace_keep, gt=0, help="frames kept per device during its grace period"
    )
    join_deadline_s: float = setting(
        default=10.0, gt=0, help="seconds from a device's upgrade to its join (then close 4008)"
    )
    upstream_queue: int = setting(
        default=1024,
        gt=0,
        help="device frames held for the cloud while the upstream is down or catching up; "
        "beyond it a frame is refused with error 'unavailable'",
    )
    backoff_min_s: float = setting(
        default=0.2, gt=0, help="first wait before reconnecting the upstream (then doubled)"
    )
    backoff_max_s: float = setting(
        default=5.0, gt=0, help="longest wait between upstream attempts (jittered)"
    )
    upstream_heartbeat_s: float = setting(
        default=5.0,
        gt=0,
        help="seconds between pings on the upstream; one unanswered for half of it drops it",
    )
    ws_heartbeat_s: float = setting(default=20.0, gt=0, help="seconds between device pings")
    # An edge serves one room on a small box: uvloop's speed is not needed there, its
    # 2 MiB of RSS are (39.7 MiB with 15 devices on asyncio's loop, 41.8 on uvloop).
    event_loop: str = setting(
        default="asyncio",
        choices=("uvloop", "asyncio"),
        help="asyncio event loop: asyncio (smaller) or uvloop (faster)",
    )
    log_level: str = setting(default="INFO", help="logging level")

    @property
    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            outbound_queue=self.outbound_queue,
            rate_per_s=self.rate,
            rate_burst=self.rate_burst,
            max_peers_per_room=self.max_peers,
            grace_s=self.grace_s,
            grace_keep=self.grace_keep,
        )

    @property
    def join_policy(self) -> JoinPolicy | None:
        if not self.token_secret:
            return None
        return JoinPolicy(
            self.token_secret,
            leeway_s=self.token_leeway_s,
            max_lifetime_s=self.token_max_lifetime_s,
            audience=self.token_audience,
            issuer=self.token_issuer,
        )

    @property
    def upstreams(self) -> list[str]:
        return [u.strip() for u in (self.upstream or "").split(",") if u.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, EdgeSettings, prefix=PREFIX)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> EdgeSettings:
    try:
        env = os.environ if environ is None else environ
        return load(EdgeSettings, env, prefix=PREFIX, flags=args)
    except SettingsError as e:
        raise EdgeConfigError(str(e)) from e
