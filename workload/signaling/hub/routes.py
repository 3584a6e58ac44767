"""HTTP routes: ``/ws``, ``/healthz``, ``/readyz``, ``/metrics``, the demo page; the
aiohttp application that starts and stops the hub with itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .pod import Hub

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)


def static_page() -> bytes:
    try:
        return (STATIC_DIR / "index.html").read_bytes()
    except OSError:
        return b"<!doctype html><title>Roomwire</title><p>Roomwire signaling: connect to /ws</p>"


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if hub.draining:
        return web.Response(status=503, text="draining\n")
    if not hub.registry_ok:
        return web.Response(status=503, text="registry unreachable\n")
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[HUB].metrics.render(), content_type="text/plain", charset="utf-8"
    )


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=static_page(), content_type="text/html")


def build_app(hub: Hub) -> web.Application:
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/ws", hub.handle_ws)
    app.router.add_get("/edge", hub.handle_edge)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
