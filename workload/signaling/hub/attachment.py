"""One open WebSocket's outbound side: whole frames written straight to the transport,
or queued behind a writer task when anything waits before them."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from ..edge.framing import dev_down
from ..protocol import Connection
from .wsframes import text_frame


@dataclass(eq=False)
class Attachment:
    """One open WebSocket and its bounded outbound queue."""

    ws: web.WebSocketResponse
    # The socket's transport. Typed as a write transport, not checked with isinstance:
    # uvloop's transports do not derive from asyncio's classes.
    transport: asyncio.WriteTransport | None = None
    queue: deque[str] = field(default_factory=deque)
    writer: asyncio.Task[None] | None = None
    closing: bool = False
    # The edge (its link key) the peer connects through; "" for a direct connection.
    edge: str = ""
    # The connection's protocol core, for errors answered after the registry was asked
    # (they count toward its abuse limit too); None for a device behind an edge.
    conn: Connection | None = None

    def emit(self, text: str) -> None:
        """Send now when nothing waits before it, else queue behind the writer task.

        The direct path writes one whole unmasked text frame to the transport: no task
        and no await per frame. Control frames aiohttp writes are whole frames as well,
        so the two never interleave inside a frame.
        """
        t = self.transport
        if (
            not self.queue
            and self.writer is None
            and not self.closing
            and t is not None
            and not t.is_closing()
            and not self.ws.closed
            and t.get_write_buffer_size() == 0
        ):
            t.write(text_frame(text.encode()))
            return
        self.queue.append(text)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(_write_queue(self))


async def _write_queue(att: Attachment) -> None:
    """Drain the queue with aiohttp's writer, which waits while the socket is full."""
    try:
        while att.queue:
            await att.ws.send_str(att.queue.popleft())
    except (ConnectionError, RuntimeError):
        att.queue.clear()
    finally:
        att.writer = None


class EdgeLinkPort(Protocol):
    """What a device's attachment needs of its edge link (``hub.edgelink.EdgeLink``)."""

    key: str

    def push(self, message: str) -> None:
        """Queue one link message; messages of one loop turn leave as one batch."""

    def device_closed(self, att: DeviceAttachment, code: int, reason: str) -> None:
        """The cloud let the device's session go from this link."""

    async def move(self, message: str, close_after_s: float) -> None:
        """Send the edge ``migrate`` or ``reconnect`` (all its devices), then close."""


@dataclass(eq=False)
class DeviceAttachment(Attachment):
    """A device behind an edge: its frames are wrapped for it and written on the edge's
    one socket (``ws``, shared by every device of the link)."""

    link: EdgeLinkPort | None = None
    dev: str = ""
    dev_json: str = ""

    def emit(self, text: str) -> None:
        if self.closing or self.link is None:
            return
        self.link.push(dev_down(self.dev_json, text))
