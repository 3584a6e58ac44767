"""Settings of a signaling process, each declared once below: its type, default, help
and bounds. Its flag (``--grace``) and its ``SIGNALING_*`` variable (``SIGNALING_GRACE_S``)
are derived from the field's name; a flag wins over its variable, the variable over the
default. The bounds of a connection take their defaults from ``protocol.Limits``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit, urlunsplit

from roomwire_contract.settings import SettingsError, add_flags, load, setting, settings_class

from .protocol import Limits
from .registry.model import RoomBudget
from .resp import TlsOptions, TlsVerify
from .tokens import JoinPolicy

PREFIX = "SIGNALING_"
_LIMITS = Limits()


class ConfigError(ValueError):
    pass


@settings_class
class Settings:
    host: str = setting(default="0.0.0.0", help="address to listen on")
    port: int = setting(default=8080, gt=0, help="port to listen on")
    redis_url: str | None = setting(
        default=None,
        help="Redis URL (redis://host:port/db); absent: embedded single-process mode, in memory",
    )
    # TLS for a rediss:// URL (docs/security.md): whom to trust, how much to check, and
    # a client certificate for a server that asks for one.
    redis_tls_ca_file: str = setting(
        default="",
        help="CA certificates (PEM) that sign the Redis server's certificate, for a "
        "rediss:// URL (default: the system's trust store)",
    )
    redis_tls_verify: str = setting(
        default="full",
        choices=("full", "ca", "none"),
        help="how a rediss:// server is checked: full (its certificate chain and that it "
        "names the URL's host), ca (the chain only), none (nothing: testing only)",
    )
    redis_tls_cert_file: str = setting(
        default="",
        help="client certificate (PEM) for a Redis that asks for one (tls-auth-clients)",
    )
    redis_tls_key_file: str = setting(
        default="", help="the client certificate's private key (PEM; default: in the cert file)"
    )
    pod_id: str = setting(
        default_factory=socket.gethostname,
        help="this pod's id in the registry (default: the host name)",
    )
    token_secret: str | None = setting(
        default=None, help="HS256 secret for join tokens; absent: open development mode (no auth)"
    )
    token_leeway_s: float = setting(
        default=5.0, ge=0, help="seconds of clock skew allowed on a join token's exp, nbf and iat"
    )
    token_max_lifetime_s: float = setting(
        default=3600.0,
        gt=0,
        help="longest-lived join token accepted, in seconds: exp - iat or exp - now beyond it "
        "is refused",
    )
    token_audience: str | None = setting(
        default=None,
        help="aud every join token must name; absent: a join token with any aud is refused",
    )
    token_issuer: str | None = setting(
        default=None, help="iss every join token must carry; absent: iss is not checked"
    )
    control_secret: str = setting(
        default="", help="HMAC secret of operator commands; absent: operator commands are ignored"
    )
    advertise_url: str = setting(
        default="",
        help="ws URL other pods and the operator use to reach this pod (default from host and "
        "port)",
    )
    max_frame_bytes: int = setting(
        live=True,
        default=_LIMITS.max_frame_bytes,
        gt=0,
        help="largest frame accepted; larger ones close the connection with 1009",
    )
    outbound_queue: int = setting(
        live=True,
        default=_LIMITS.outbound_queue,
        gt=0,
        help="frames queued per connection before it is closed as a slow consumer (1013)",
    )
    rate: float = setting(
        live=True,
        default=_LIMITS.rate_per_s,
        gt=0,
        help="frames per second per connection (then 'rate-limited')",
    )
    rate_burst: int = setting(
        live=True, default=_LIMITS.rate_burst, gt=0, help="burst allowance of the rate limit"
    )
    max_peers: int = setting(
        live=True,
        default=_LIMITS.max_peers_per_room,
        gt=0,
        help="peers per room (then 'room-full', close 1013)",
    )
    grace_s: float = setting(
        default=_LIMITS.grace_s, gt=0, help="seconds a dropped session waits for its resume"
    )
    grace_keep: int = setting(
        default=_LIMITS.grace_keep, gt=0, help="frames kept per session during its grace period"
    )
    drain_s: float = setting(
        live=True, default=_LIMITS.drain_s, gt=0, help="seconds to drain on SIGTERM"
    )
    # Admission (docs/protocol.md, "Limits"): what a connection may hold before it joins.
    join_deadline_s: float = setting(
        live=True,
        default=10.0,
        gt=0,
        help="seconds after the WebSocket upgrade within which the first join must arrive; "
        "then the connection is closed with 4008",
    )
    handshake_timeout_s: float = setting(
        default=10.0,
        gt=0,
        help="seconds an HTTP connection may take to send complete request headers (also "
        "the idle time allowed between requests); then it is dropped",
    )
    max_connections: int = setting(
        live=True,
        default=10000,
        ge=0,
        help="open WebSockets of this process; beyond it an upgrade is refused with HTTP 503 "
        "(0: no cap)",
    )
    max_connections_per_address: int = setting(
        live=True,
        default=0,
        ge=0,
        help="open WebSockets per client address (the peer address: behind a proxy, the "
        "proxy's); beyond it an upgrade is refused with HTTP 429 (0: no cap)",
    )
    # Budgets (docs/protocol.md, "Budgets"): what clients can make the system keep.
    room_history: int = setting(
        default=1000,
        gt=0,
        live=True,
        help="room events kept in a room's history at most (the oldest go first)",
    )
    room_history_bytes: int = setting(
        default=1 << 20,
        gt=0,
        live=True,
        help="bytes of room events kept in a room's history at most (the oldest go first)",
    )
    room_idle_ttl_s: int = setting(
        default=600,
        gt=0,
        live=True,
        help="seconds a room's history and metadata stay in the registry once it is empty",
    )
    max_rooms: int = setting(
        default=10000,
        ge=0,
        live=True,
        help="rooms with a session on this pod at most; a join into one more is refused "
        "with 'pod-full' and close 1013 (another pod will take it; 0: no cap)",
    )
    heartbeat_s: float = setting(default=2.0, gt=0, help="seconds between registry heartbeats")
    ws_heartbeat_s: float = setting(
        live=True, default=20.0, gt=0, help="seconds between WebSocket pings"
    )
    event_loop: str = setting(
        default="uvloop",
        choices=("uvloop", "asyncio"),
        help="asyncio event loop: uvloop (faster; asyncio where it is not installed) or asyncio",
    )
    log_level: str = setting(live=True, default="INFO", help="logging level")
    # Nacos (docs/nacos.md): the pod registers itself as an ephemeral instance.
    nacos_server: str | None = setting(
        default=None,
        help="Nacos server HOST:PORT (its HTTP port; gRPC is that + 1000), several "
        "comma-separated; absent: no Nacos registration",
    )
    nacos_namespace: str = setting(default="", help="Nacos namespace id (default: public)")
    nacos_group: str = setting(default="DEFAULT_GROUP", help="Nacos group of the instance")
    nacos_service: str = setting(
        default="roomwire-signaling", help="Nacos service this pod registers under"
    )
    nacos_username: str | None = setting(default=None, help="Nacos user name, when auth is on")
    nacos_password: str | None = setting(default=None, help="Nacos password, when auth is on")
    nacos_ip: str = setting(
        default="",
        help="address registered in Nacos (default: --host, or the host name's address when "
        "listening on every interface)",
    )
    nacos_zone: str = setting(default="", help="zone reported in the instance's metadata")
    nacos_interval_s: float = setting(
        default=5.0,
        gt=0,
        help="seconds between updates of the instance (connections, draining); also the "
        "longest wait between retries while Nacos is unreachable",
    )
    nacos_dir: str = setting(
        default="",
        help="writable folder for the Nacos client's logs and cache (default: a temporary "
        "folder per process)",
    )
    nacos_config_data_id: str = setting(
        default="roomwire-signaling.yaml",
        help="data id of this pod's live settings in the Nacos config center (YAML; group "
        "--nacos-group); empty: no config center",
    )
    pod_namespace: str = setting(
        default="", help="the pod's Kubernetes namespace, reported in its Nacos metadata"
    )

    def problems(self) -> list[str]:
        """Checks beyond one setting's bounds (also on every config-center document)."""
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            return [f"log_level {self.log_level!r} is not a logging level"]
        return [
            f"{name} {path!r} is not a readable file"
            for name, path in (
                ("redis_tls_ca_file", self.redis_tls_ca_file),
                ("redis_tls_cert_file", self.redis_tls_cert_file),
                ("redis_tls_key_file", self.redis_tls_key_file),
            )
            if path and not os.access(path, os.R_OK)
        ]

    @property
    def redis_tls(self) -> TlsOptions:
        """How a rediss:// connection is secured."""
        verify = cast(TlsVerify, self.redis_tls_verify)  # one of its choices
        return TlsOptions(
            ca_file=self.redis_tls_ca_file,
            verify=verify,
            cert_file=self.redis_tls_cert_file,
            key_file=self.redis_tls_key_file,
        )

    @property
    def room_budget(self) -> RoomBudget:
        """What one room may keep in the registry besides its members' frames."""
        return RoomBudget(self.room_history, self.room_history_bytes, self.room_idle_ttl_s)

    @property
    def limits(self) -> Limits:
        """Every bound of a connection."""
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            outbound_queue=self.outbound_queue,
            rate_per_s=self.rate,
            rate_burst=self.rate_burst,
            max_peers_per_room=self.max_peers,
            grace_s=self.grace_s,
            grace_keep=self.grace_keep,
            drain_s=self.drain_s,
        )

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


def shown_url(url: str) -> str:
    """``url`` as logs may show it: a password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting, its help naming its variable and default."""
    add_flags(parser, Settings, prefix=PREFIX)


def resolve(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[Settings, str]:
    """Settings from flags, then SIGNALING_* variables, then defaults; and the log level."""
    try:
        env = os.environ if environ is None else environ
        settings = load(Settings, env, prefix=PREFIX, flags=args)
    except SettingsError as e:
        raise ConfigError(str(e)) from e
    if settings.problems():
        raise ConfigError("; ".join(settings.problems()))
    # An empty pod id or advertise URL (--pod-id "") means the derived one.
    host = settings.host if settings.host not in ("0.0.0.0", "::") else socket.gethostname()
    settings = dataclasses.replace(
        settings,
        pod_id=settings.pod_id or socket.gethostname(),
        advertise_url=settings.advertise_url or f"ws://{host}:{settings.port}/ws",
    )
    return settings, settings.log_level
