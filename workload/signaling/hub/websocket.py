"""The WebSocket adapter: one connection's read loop. Each frame goes through the
protocol core; each intent it returns is carried out here or by the part that owns it."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from aiohttp import WSCloseCode, WSMsgType, web

from ..edge.framing import ENVELOPE_BYTES
from ..protocol import (
    Close,
    CloseCode,
    Connection,
    ErrorCode,
    Join,
    Leave,
    Relay,
    Role,
    RoomEvent,
    Send,
    error,
)
from .attachment import Attachment
from .delivery import JOIN_DEADLINE, Delivery
from .edgelink import EdgeLinks
from .grace import Grace
from .join import Joins
from .relay import Relays
from .sessions import LocalSession
from .state import PodPart, PodState

RETRY = {"Retry-After": "1"}


class WebSocketHandler(PodPart):
    """``GET /ws``: accepts a connection and serves it until it closes."""

    def __init__(
        self,
        pod: PodState,
        delivery: Delivery,
        joins: Joins,
        grace: Grace,
        relays: Relays,
        edges: EdgeLinks,
    ) -> None:
        self.pod = pod
        self.metrics = pod.metrics
        self.sockets = pod.sockets
        self.send_direct = delivery.send_direct
        self.close_socket = delivery.close_socket
        self._join = joins.join
        self._relay = relays.relay
        self._room_event = relays.room_event
        self._leave = grace.leave
        self._detach = grace.detach
        self._edge_link = edges.serve
        # Open WebSockets (upgrading or upgraded), in total and per client address.
        self._open = 0
        self._per_address: dict[str, int] = {}

    def _refused(self, address: str) -> web.Response | None:
        """The caps on open WebSockets (``--max-connections``, ``--max-connections-per-
        address``), checked before the upgrade; counted in roomwire_admission_refused."""
        total, per_address = (
            self.settings.max_connections,
            self.settings.max_connections_per_address,
        )
        if total and self._open >= total:
            self.metrics.admission_refused.inc("total")
            return web.Response(status=503, text="too many connections\n", headers=RETRY)
        if per_address and self._per_address.get(address, 0) >= per_address:
            self.metrics.admission_refused.inc("per-address")
            return web.Response(
                status=429, text="too many connections from this address\n", headers=RETRY
            )
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, edge_path=False)

    async def handle_edge(self, request: web.Request) -> web.StreamResponse:
        """``GET /edge``: edge links only; a link frame may carry a device frame of the
        largest size with its envelope, or a batch of smaller ones."""
        return await self._handle(request, edge_path=True)

    async def _handle(self, request: web.Request, edge_path: bool) -> web.StreamResponse:
        if self.pod.draining:
            raise web.HTTPServiceUnavailable(text="draining\n")
        address = request.remote or ""
        refused = self._refused(address)
        if refused is not None:
            return refused
        self._open += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            return await self._serve(request, edge_path)
        finally:
            self._open -= 1
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    def _join_deadline(self, conn: Connection, att: Attachment) -> None:
        """No join within --join-deadline of the upgrade: closed with 4008 (aborted)."""
        if conn.joined is None and not conn.joining and not att.closing:
            self.pod.spawn(self.close_socket(att, JOIN_DEADLINE, "no join before the deadline"))

    async def _serve(self, request: web.Request, edge_path: bool) -> web.StreamResponse:
        # No per-message compression: small JSON frames gain little and it costs more CPU
        # than the rest of a relay (measured in bench/workload_findings.md).
        max_bytes = self.limits.max_frame_bytes
        ws = web.WebSocketResponse(
            heartbeat=self.settings.ws_heartbeat_s,
            max_msg_size=max_bytes + ENVELOPE_BYTES if edge_path else max_bytes,
            compress=False,
        )
        await ws.prepare(request)
        self.sockets.add(ws)
        att = Attachment(ws, cast(asyncio.WriteTransport | None, request.transport))
        conn = Connection(self.limits, self.settings.join_policy)
        att.conn = conn
        self.pod.connections.add(conn)
        session: LocalSession | None = None
        left = too_big = False
        deadline = asyncio.get_running_loop().call_later(
            self.settings.join_deadline_s, self._join_deadline, conn, att
        )
        try:
            async for msg in ws:
                now = time.monotonic()
                if msg.type == WSMsgType.TEXT:
                    intents = conn.receive_text(msg.data, now)
                elif msg.type == WSMsgType.BINARY:
                    intents = conn.receive_binary(now)
                else:
                    # aiohttp closes a too-big frame's socket itself (1009); the close
                    # code it keeps may read 1006 by then, the error's code does not.
                    too_big = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                    break
                received = time.time()
                for intent in intents:
                    if isinstance(intent, Send):
                        self.send_direct(att, intent.frame)
                    elif isinstance(intent, Close):
                        await self.close_socket(att, intent.code, intent.reason)
                    elif isinstance(intent, Join) and intent.role == Role.EDGE:
                        # An edge link: the rest of the connection is the link's.
                        deadline.cancel()
                        await self._edge_link(ws, att, conn, intent)
                        att.closing = True
                        break
                    elif isinstance(intent, Join) and edge_path:
                        conn.join_refused()
                        self.send_direct(
                            att, error(ErrorCode.FORBIDDEN, "/edge is for role 'edge'", intent.id)
                        )
                        await self.close_socket(att, CloseCode.POLICY, "not an edge")
                    elif isinstance(intent, Join):
                        session = await self._join(conn, att, intent)
                    elif session is None:
                        continue
                    elif isinstance(intent, Relay):
                        self.metrics.messages.inc(str(intent.frame["type"]))
                        await self._relay(session, att, intent, received)
                    elif isinstance(intent, RoomEvent):
                        self.metrics.messages.inc(str(intent.frame["type"]))
                        await self._room_event(session, att, intent)
                    elif isinstance(intent, Leave):
                        left = True
                        await self._leave(session)
                        session = None
                if att.closing:
                    break
        finally:
            deadline.cancel()
            # aiohttp (3.14) re-arms the heartbeat when the client's close frame arrives
            # after its own close: the timer then holds the whole connection (~10 KB)
            # for the heartbeat and the pong wait (30 s), memory that grew with the rate
            # of connections (tests/attacks: join storms, +0.6 MB a run of 120).
            cancel_heartbeat = getattr(ws, "_cancel_heartbeat", None)
            if cancel_heartbeat is not None:
                cancel_heartbeat()
            if too_big or ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                self.metrics.closes.inc(str(CloseCode.TOO_BIG))
            self.sockets.discard(ws)
            if session is not None and not left and session.attachment is att:
                await self._detach(session)
        return ws
