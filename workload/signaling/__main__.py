"""``signaling serve``: run one signaling process (a pod)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

# PyJWT imports cryptography (for algorithms Roomwire never accepts) when it can: about
# 9 MB of RSS that the room edge, on a small box, does without (HS256 needs none of it).
# The Nacos SDK needs it: an edge that finds its pod through Nacos (nacos://) keeps it.
if sys.argv[1:2] == ["edge"] and "nacos://" not in " ".join(
    [*sys.argv, os.environ.get("SIGNALING_EDGE_UPSTREAM", "")]
):
    sys.modules.setdefault("cryptography", None)  # type: ignore[arg-type]

from .config import ConfigError, Settings, add_arguments, resolve, shown_url
from .edge import settings as edge_settings

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("signaling")


def make_registry(settings: Settings) -> Registry:
    # The hub and the registries are imported by `signaling serve` only: `signaling edge`
    # runs on a small box and needs none of them.
    from .registry import memory_registry

    if settings.redis_url:
        from .registry.redis_backend import redis_registry

        # With a token secret, every pod derives the same resume secret from it; without
        # one, the pods share a random secret kept in Redis.
        resume_secret = (
            hmac.new(settings.token_secret.encode(), b"roomwire-resume", hashlib.sha256).hexdigest()
            if settings.token_secret
            else None
        )
        return redis_registry(
            settings.redis_url,
            settings.pod_id,
            resume_secret=resume_secret,
            keep_max=settings.grace_keep,
            grace_s=settings.grace_s,
            tls=settings.redis_tls,
        )
    return memory_registry(settings.pod_id, keep_max=settings.grace_keep)


async def serve(settings: Settings) -> None:
    from .hub import Hub, build_app

    hub = Hub(settings, make_registry(settings))
    app = build_app(hub)
    # aiohttp arms keepalive_timeout from the moment a connection is made: one whose
    # request headers are not complete within it is dropped (also the idle time allowed
    # between requests). Its default, about an hour, held half-sent requests that long.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=settings.handshake_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=2048)
    await site.start()
    # Everything allocated so far (modules, the app) lives as long as the process: keep it
    # out of the collector's sweeps, whose full passes otherwise pause every connection
    # for tens of milliseconds.
    gc.freeze()
    mode = (
        f"redis {shown_url(settings.redis_url)}" if settings.redis_url else "embedded (in-memory)"
    )
    log.info(
        "pod %s serving ws on %s:%d, registry: %s",
        settings.pod_id,
        settings.host,
        settings.port,
        mode,
    )
    if not settings.token_secret:
        log.warning("no token secret: OPEN DEVELOPMENT MODE, joins are not authenticated")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("SIGTERM: draining")
    try:
        await asyncio.wait_for(hub.drain(), settings.drain_s + 5)
    except TimeoutError:
        log.warning("drain deadline passed; closing the rest")
    await runner.cleanup()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signaling", description="Roomwire signaling server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser(
        "serve",
        help="serve WebSocket signaling",
        description="Serve Roomwire signaling on /ws. Every flag can also "
        "be set with the SIGNALING_* variable shown.",
    )
    add_arguments(serve_p)
    edge_p = sub.add_parser(
        "edge",
        help="serve one meeting room on the LAN, with one upstream to the cloud",
        description="The room edge: devices of one room connect to it on /ws with the same "
        "wire protocol; it relays between them itself and carries them all over one "
        "upstream to the cloud (docs/edge.md). Every flag can also be set with the "
        "SIGNALING_EDGE_* variable shown.",
    )
    edge_settings.add_arguments(edge_p)
    args = parser.parse_args(argv)
    if args.command == "edge":
        return _edge(parser, args)
    try:
        settings, level = resolve(args)
    except ConfigError as e:
        parser.error(str(e))
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(serve(settings), settings.event_loop)
    return 0


def _edge(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .edge.server import serve as serve_edge

    try:
        settings = edge_settings.resolve(args)
    except edge_settings.EdgeConfigError as e:
        parser.error(str(e))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(serve_edge(settings), settings.event_loop)
    return 0


def run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run on uvloop when asked and installed: its transports and callbacks cost about
    a fifth less CPU per relayed frame than the standard loop (bench/RESULTS.md)."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using the asyncio event loop")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())
