"""WebSocket frames written by hand: the unmasked text frame a server sends (RFC 6455).

Pure: bytes in, bytes out. The attachment writes these straight to the transport on its
direct path, where going through aiohttp's writer would cost a task and an await.
"""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (server to client, RFC 6455)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
