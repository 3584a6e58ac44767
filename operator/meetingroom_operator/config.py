"""One typed configuration, read once at start-up from ``ROOMWIRE_*`` environment
variables. Each setting is declared once below (type, default, help, bounds; the
variable is its name in capitals); a bad one stops the operator with all problems
listed, instead of surfacing later as a strange decision."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import NamedTuple

from meetingroom_operator.errors import ConfigError
from roomwire_contract.settings import SettingsError, load, setting, settings_class

PREFIX = "ROOMWIRE_"


@settings_class
class Config:
    redis_url: str = setting(help="Redis URL of the signaling pods' registry (redis://...)")
    # TLS for a rediss:// URL (docs/security.md), as the signaling pods' SIGNALING_REDIS_TLS_*
    redis_tls_ca_file: str = setting(
        default="",
        help="CA certificates (PEM) that sign the Redis server's certificate (rediss://; "
        "default: the system's trust store)",
    )
    redis_tls_verify: str = setting(
        default="full",
        choices=("full", "ca", "none"),
        help="how a rediss:// server is checked: full (chain and host name), ca (chain "
        "only), none (nothing: testing only)",
    )
    redis_tls_cert_file: str = setting(
        default="", help="client certificate (PEM) for a Redis that asks for one"
    )
    redis_tls_key_file: str = setting(
        default="", help="the client certificate's private key (PEM; default: in the cert file)"
    )
    control_secret: str = setting(help="HMAC secret of operator commands, >= 16 characters")
    namespace: str = setting(default="default", help="namespace of the MeetingRooms and pods")
    deployment: str = setting(default="signaling", help="Deployment of the signaling pods")
    signaling_port: int = setting(default=8080, gt=0, lt=65536, help="the pods' ws port")
    # scaling
    scaling_enabled: bool = setting(default=True, help="scale the Deployment", live=True)
    per_pod: int = setting(default=200, gt=0, help="sessions one pod is sized for", live=True)
    min_replicas: int = setting(default=1, ge=0, help="fewest pods", live=True)
    max_replicas: int = setting(default=20, ge=0, help="most pods", live=True)
    buffer_pods: int = setting(default=1, ge=0, help="spare pods beyond the demand", live=True)
    buffer_percent: int = setting(
        default=0, ge=0, help="spare pods, in percent of demand", live=True
    )
    scale_down_window_s: float = setting(
        default=120.0,
        ge=0,
        help="seconds the demand must stay lower before scaling down",
        live=True,
    )
    drain_deadline_s: float = setting(
        default=60.0,
        gt=0,
        help="seconds a pod scaled away may take to drain",
        live=True,
    )
    # placement and weights
    placement_balance: float = setting(
        default=1.15,
        ge=1.0,
        help="load ratio to the emptiest pod above which a room goes elsewhere",
        live=True,
    )
    accept_high: float = setting(
        default=1.10,
        ge=1.0,
        help="load ratio to the mean above which a pod stops accepting",
        live=True,
    )
    accept_low: float = setting(
        default=1.02,
        ge=1.0,
        help="load ratio to the mean below which a pod accepts again",
        live=True,
    )
    # rebalancing
    rebalance_enabled: bool = setting(
        default=True, help="move sessions off overloaded pods", live=True
    )
    skew_threshold: float = setting(
        default=1.10,
        ge=1.0,
        help="load ratio of the fullest pod to the mean that is skew",
        live=True,
    )
    skew_persist_s: float = setting(
        default=10.0,
        ge=0,
        help="seconds skew must last before a rebalance",
        live=True,
    )
    move_window_ms: int = setting(
        default=5_000,
        ge=0,
        help="milliseconds over which a wave's moves are spread",
        live=True,
    )
    move_batch: int = setting(default=10, gt=0, help="sessions moved per command", live=True)
    max_moves_per_wave: int = setting(
        default=500, gt=0, help="most sessions moved per wave", live=True
    )
    move_timeout_s: float = setting(
        default=30.0,
        gt=0,
        help="seconds a moved session may take to arrive",
        live=True,
    )
    # dead pods and loops
    grace_ttl_s: int = setting(default=30, gt=0, help="seconds a dead pod's sessions wait")
    interval_s: float = setting(
        default=1.0, gt=0, help="seconds between reconcile loops", live=True
    )
    status_interval_s: float = setting(
        default=5.0,
        gt=0,
        help="seconds between MeetingRoom status updates",
        live=True,
    )
    # the Nacos config center (docs/nacos.md): live settings from a YAML document
    nacos_server: str | None = setting(
        default=None,
        help="Nacos server HOST:PORT (its HTTP port; gRPC is that + 1000); absent: no "
        "config center",
    )
    nacos_namespace: str = setting(default="", help="Nacos namespace id (default: public)")
    nacos_group: str = setting(default="DEFAULT_GROUP", help="Nacos group of the document")
    nacos_username: str | None = setting(default=None, help="Nacos user name, when auth is on")
    nacos_password: str | None = setting(default=None, help="Nacos password, when auth is on")
    nacos_config_data_id: str = setting(
        default="roomwire-operator.yaml",
        help="data id of the operator's live settings in the config center (YAML)",
    )
    pod_name: str = setting(
        default_factory=socket.gethostname,
        help="this operator's pod (the host name in Kubernetes): Events about its "
        "configuration name it",
    )
    metrics_port: int = setting(default=9090, ge=0, lt=65536, help="metrics port (0: off)")
    metrics_host: str = setting(default="0.0.0.0", help="address of the metrics server")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``ROOMWIRE_<FIELD>`` for every field; raise ``ConfigError`` listing every
        missing or bad value."""
        try:
            cfg = load(cls, os.environ if env is None else env, prefix=PREFIX)
        except SettingsError as e:
            problems = e.problems
        else:
            problems = cfg.problems()
            if not problems:
                return cfg
        raise ConfigError("bad operator configuration: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Checks beyond one setting's bounds."""
        check: list[tuple[bool, str]] = [
            (
                self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                "ROOMWIRE_REDIS_URL must be a redis:// URL",
            ),
            (len(self.control_secret) >= 16, "ROOMWIRE_CONTROL_SECRET needs >= 16 characters"),
            (bool(self.namespace), "ROOMWIRE_NAMESPACE is empty"),
            (
                self.min_replicas <= self.max_replicas,
                "need 0 <= ROOMWIRE_MIN_REPLICAS <= ROOMWIRE_MAX_REPLICAS",
            ),
            (
                self.accept_low <= self.accept_high,
                "need 1.0 <= ROOMWIRE_ACCEPT_LOW <= ROOMWIRE_ACCEPT_HIGH",
            ),
        ]
        check += [
            (not path or os.access(path, os.R_OK), f"{name} {path!r} is not a readable file")
            for name, path in (
                ("ROOMWIRE_REDIS_TLS_CA_FILE", self.redis_tls_ca_file),
                ("ROOMWIRE_REDIS_TLS_CERT_FILE", self.redis_tls_cert_file),
                ("ROOMWIRE_REDIS_TLS_KEY_FILE", self.redis_tls_key_file),
            )
        ]
        return [message for ok, message in check if not ok]

    @property
    def redis_tls(self) -> RedisTls:
        return RedisTls(
            self.redis_tls_ca_file,
            self.redis_tls_verify,
            self.redis_tls_cert_file,
            self.redis_tls_key_file,
        )


class RedisTls(NamedTuple):
    """How a ``rediss://`` connection is secured: verify is full (the certificate chain
    and the URL's host name), ca (the chain only) or none (testing only)."""

    ca_file: str = ""
    verify: str = "full"
    cert_file: str = ""
    key_file: str = ""
