"""The Redis registry: sessions, routing and presence shared by every pod, on two
connections (one pipelined for commands and scripts, one for this pod's inbox)."""

from __future__ import annotations

from roomwire_contract import keys

from ..resp import TlsOptions
from . import redis_presence, redis_routing, redis_sessions
from .redis_inbox import Inbox
from .redis_link import RedisAddress, RedisLink
from .redis_presence import RedisPresence
from .redis_routing import RedisRouting
from .redis_sessions import RedisSessions
from .roles import Registry


def redis_registry(
    url: str,
    pod_id: str,
    *,
    resume_secret: str | None = None,
    keep_max: int = 256,
    grace_s: float = 30.0,
    tls: TlsOptions | None = None,
) -> Registry:
    """``tls``: how a ``rediss://`` URL's connections are secured (default: verified
    against the system's trust store)."""
    address = RedisAddress.parse(url, tls)
    grace = max(1, round(grace_s))
    # A live session outlives its pod's heartbeat TTL by a grace period: when the pod
    # dies, the session is still there for whoever notices to turn it to grace; kept
    # and routed frames are held as long.
    live_ttl = keys.POD_TTL_S + grace
    scripts = [
        *redis_sessions.SCRIPTS.values(),
        *redis_routing.SCRIPTS.values(),
        *redis_presence.SCRIPTS.values(),
        *redis_presence.SHARED.values(),
    ]
    link = RedisLink(address, pod_id, scripts, redis_routing.RELAY)
    routing = RedisRouting(link, keep_max, live_ttl)
    return Registry(
        RedisSessions(link, live_ttl, grace),
        routing,
        RedisPresence(link, Inbox(address, pod_id), live_ttl, grace, resume_secret),
    )
