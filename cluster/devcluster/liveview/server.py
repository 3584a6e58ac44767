"""The live view's HTTP side (aiohttp): ``/`` the page, ``/api/state`` the latest
snapshot with the connections history and the recent decisions, ``/healthz``. A
background task takes a snapshot every ``interval`` seconds (bounded: each read has its
own timeout, and a failed round is logged and retried on the next tick)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web

from .collect import Collector
from .model import LiveState

log = logging.getLogger("devcluster.liveview")

STATE: web.AppKey[LiveState] = web.AppKey("state", LiveState)
COLLECTOR: web.AppKey[Collector] = web.AppKey("collector", Collector)
INTERVAL: web.AppKey[float] = web.AppKey("interval", float)


async def poll(app: web.Application) -> None:
    state, collector, every = app[STATE], app[COLLECTOR], app[INTERVAL]
    failing = False
    while True:
        try:
            snap = await collector.snapshot()
        except Exception as e:  # any source failing must not end the view
            if not failing:
                log.warning("snapshot failed (retrying every %.1f s): %s", every, e)
            failing = True
        else:
            failing = False
            for d in state.add(snap):
                log.info("%s", d.text)
        await asyncio.sleep(every)


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(poll(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app[COLLECTOR].close()


async def page(request: web.Request) -> web.Response:
    html = resources.files(__package__).joinpath("page.html").read_text()
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def api_state(request: web.Request) -> web.Response:
    try:
        since = float(request.query.get("since", "-inf"))
    except ValueError:
        since = -math.inf
    return web.json_response(request.app[STATE].to_json(since))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(collector: Collector, interval: float = 1.0) -> web.Application:
    app = web.Application()
    app[STATE] = LiveState()
    app[COLLECTOR] = collector
    app[INTERVAL] = interval
    app.router.add_get("/", page)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(_background)
    return app
