"""``signaling edge``: the aiohttp adapter. Devices' sockets on ``/ws`` (each frame through
the same protocol core as on a pod, each intent carried out by the room), ``/healthz``,
``/readyz``, ``/metrics``, ``/status`` (the edge as the operator reports it) and the
demo page; the upstream started and stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ..protocol import Close, CloseCode, Connection, Join, Leave, Send, error
from .room import Device, EdgeRoom, JoinRefused
from .settings import EdgeSettings
from .upstream import Upstream

log = logging.getLogger("signaling.edge")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
JOIN_DEADLINE = 4008
# Closes that end abuse: the transport is closed after the close frame.
ABORTED = frozenset((CloseCode.POLICY, CloseCode.TOO_BIG, CloseCode.ABUSE, JOIN_DEADLINE))


class DeviceSocket:
    """A device's socket: frames in order behind one writer, bounded."""

    def __init__(self, ws: web.WebSocketResponse, bound: int) -> None:
        self.ws = ws
        self.bound = bound
        self.queue: deque[str] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.closing = False

    def send(self, text: str) -> None:
        if self.closing:
            return
        if len(self.queue) >= self.bound:
            self.close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
            return
        self.queue.append(text)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.queue:
                await self.ws.send_str(self.queue.popleft())
        except (ConnectionError, RuntimeError):
            self.queue.clear()
        finally:
            self.writer = None

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        """After what is queued (the error that says why); a close that ends abuse
        waits for the device's close frame at most a second."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.writer), 1.0 if code in ABORTED else 2.0)
        with contextlib.suppress(Exception):
            close = self.ws.close(code=code, message=reason.encode()[:120])
            await asyncio.wait_for(close, 1.0 if code in ABORTED else 10.0)


class Edge:
    """One edge: its room, its upstream, its devices' sockets."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.room = EdgeRoom(settings.room, settings.edge_id, self.limits)
        self.upstream = Upstream(settings, self.room)
        self.sockets: set[web.WebSocketResponse] = set()
        self.started = time.time()

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.settings.ws_heartbeat_s,
            max_msg_size=self.limits.max_frame_bytes,
            compress=False,
        )
        await ws.prepare(request)
        self.sockets.add(ws)
        out = DeviceSocket(ws, self.limits.outbound_queue)
        conn = Connection(self.limits, self.settings.join_policy)
        device: Device | None = None
        left = False
        loop = asyncio.get_running_loop()

        def join_deadline() -> None:
            if conn.joined is None:
                out.close(JOIN_DEADLINE, "no join before the deadline")

        deadline = loop.call_later(self.settings.join_deadline_s, join_deadline)
        room = self.room
        try:
            async for msg in ws:
                now = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    intents = conn.receive_text(msg.data, now)
                elif msg.type == WSMsgType.BINARY:
                    intents = conn.receive_binary(now)
                else:
                    break
                for intent in intents:
                    if isinstance(intent, Send):
                        out.send(orjson.dumps(intent.frame).decode())
                    elif isinstance(intent, Close):
                        out.close(intent.code, intent.reason)
                    elif isinstance(intent, Join):
                        try:
                            device = room.join(out, intent)
                        except JoinRefused as e:
                            conn.join_refused()
                            out.send(orjson.dumps(error(e.code, e.message, intent.id)).decode())
                            out.close(e.close, e.code)
                            continue
                        conn.join_accepted(room.room, device.peer, device.role)
                    elif device is None:
                        continue
                    elif isinstance(intent, Leave):
                        left = True
                        room.leave(device)
                    else:
                        room.frames(device, [intent])
                if out.closing:
                    break
        finally:
            deadline.cancel()
            self.sockets.discard(ws)
            if device is not None and not left:
                room.dropped_connection(device, out)
            if out.closer is not None:
                await out.closer
            elif not ws.closed:
                await ws.close()
        return ws

    def status(self) -> dict[str, object]:
        up = self.upstream
        return {
            "room": self.room.room,
            "edge": self.settings.edge_id,
            "devices": len(self.room.devices),
            "connected": up.ready,
            "since": up.since,
            "pod": up.link.pod if up.link is not None else "",
            "queued": len(up.queue),
            "attaching": len(up.link.attaching) if up.link is not None else 0,
        }

    def metrics(self) -> str:
        up = self.upstream
        lines = [
            "# HELP roomwire_edge_devices Devices of the room on this edge (also in grace).",
            "# TYPE roomwire_edge_devices gauge",
            f"roomwire_edge_devices {len(self.room.devices)}",
            "# HELP roomwire_edge_ws_connections Open device WebSockets.",
            "# TYPE roomwire_edge_ws_connections gauge",
            f"roomwire_edge_ws_connections {len(self.sockets)}",
            "# HELP roomwire_edge_upstream_up 1 while the upstream is linked with every device.",
            "# TYPE roomwire_edge_upstream_up gauge",
            f"roomwire_edge_upstream_up {int(up.ready)}",
            "# HELP roomwire_edge_upstream_queue Device frames waiting for the cloud.",
            "# TYPE roomwire_edge_upstream_queue gauge",
            f"roomwire_edge_upstream_queue {len(up.queue)}",
            "# HELP roomwire_edge_upstream_connects_total Upstream links made.",
            "# TYPE roomwire_edge_upstream_connects_total counter",
            f"roomwire_edge_upstream_connects_total {up.connects}",
            "# HELP roomwire_edge_upstream_refused_total Frames refused: upstream queue full.",
            "# TYPE roomwire_edge_upstream_refused_total counter",
            f"roomwire_edge_upstream_refused_total {up.refused}",
            "# HELP roomwire_edge_local_relays_total Frames relayed between devices here.",
            "# TYPE roomwire_edge_local_relays_total counter",
            f"roomwire_edge_local_relays_total {self.room.local_relays}",
        ]
        return "\n".join(lines) + "\n"


EDGE: web.AppKey[Edge] = web.AppKey("edge", Edge)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[EDGE].metrics(), content_type="text/plain", charset="utf-8"
    )


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[EDGE].status())


async def _index(request: web.Request) -> web.Response:
    try:
        return web.Response(body=(STATIC_DIR / "index.html").read_bytes(), content_type="text/html")
    except OSError:
        return web.Response(text="Roomwire edge: connect to /ws\n")


def build_app(edge: Edge) -> web.Application:
    app = web.Application()
    app[EDGE] = edge
    app.router.add_get("/ws", edge.handle_ws)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _healthz)  # the room is served with or without the cloud
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    app.router.add_get("/", _index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        edge.upstream.start()
        yield
        await edge.upstream.close()

    async def close_devices(app: web.Application) -> None:
        # Before the server waits for its handlers: each ends once its socket closes.
        for ws in list(edge.sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    ws.close(code=WSCloseCode.GOING_AWAY, message=b"edge shutdown"), 2.0
                )

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_devices)
    return app


async def serve(settings: EdgeSettings) -> None:
    edge = Edge(settings)
    runner = web.AppRunner(build_app(edge), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info(
        "edge %s of room %s serving devices on %s:%d, upstream: %s",
        settings.edge_id,
        settings.room,
        settings.host,
        settings.port,
        settings.upstream or "none (LAN only)",
    )
    if not settings.token_secret:
        log.warning("no token secret: OPEN DEVELOPMENT MODE, device joins are not authenticated")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    log.info("stopped")
