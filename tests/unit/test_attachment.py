"""One socket's outbound side (``signaling.hub.attachment``): when a frame is written
straight to the transport and when it waits behind the writer task.

The transport and the WebSocket are small fakes recording what they are given; the
direct path on real transports (asyncio and uvloop) is tested in test_protocol.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from signaling.hub.attachment import Attachment
from signaling.hub.wsframes import text_frame


@dataclass
class FakeTransport:
    buffered: int = 0
    written: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


@dataclass
class FakeWebSocket:
    closed: bool = False
    sent: list[str] = field(default_factory=list)
    fail: bool = False

    async def send_str(self, text: str) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionResetError("gone")
        self.sent.append(text)


def attachment(transport: FakeTransport, ws: FakeWebSocket) -> Attachment:
    return Attachment(ws, transport)  # type: ignore[arg-type]


async def test_an_idle_socket_gets_whole_frames_at_once() -> None:
    t, ws = FakeTransport(), FakeWebSocket()
    att = attachment(t, ws)
    att.emit('{"a":1}')
    att.emit('{"a":"é"}')
    assert t.written == [text_frame(b'{"a":1}'), text_frame('{"a":"é"}'.encode())]
    assert att.writer is None and not att.queue and ws.sent == []


async def test_a_socket_with_a_backlog_queues_and_the_writer_drains_in_order() -> None:
    t, ws = FakeTransport(buffered=10), FakeWebSocket()
    att = attachment(t, ws)
    att.emit("1")
    t.buffered = 0  # even once the transport is free, later frames wait behind the queue
    att.emit("2")
    att.emit("3")
    assert t.written == [] and list(att.queue) == ["1", "2", "3"]
    writer = att.writer
    assert writer is not None
    await writer
    assert ws.sent == ["1", "2", "3"] and att.writer is None and not att.queue
    att.emit("4")  # drained: straight to the transport again
    assert t.written == [text_frame(b"4")]


async def test_a_closing_attachment_never_writes_directly() -> None:
    t, ws = FakeTransport(), FakeWebSocket()
    att = attachment(t, ws)
    att.closing = True
    att.emit("x")
    assert t.written == []
    assert att.writer is not None
    await att.writer


async def test_a_lost_connection_drops_the_queue() -> None:
    t, ws = FakeTransport(buffered=1), FakeWebSocket(fail=True)
    att = attachment(t, ws)
    att.emit("1")
    att.emit("2")
    writer = att.writer
    assert writer is not None
    await writer
    assert ws.sent == [] and not att.queue and att.writer is None
