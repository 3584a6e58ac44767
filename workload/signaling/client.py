"""A small asyncio client of the wire protocol, for tests, benchmarks and the edge.

It keeps the resume token and the last ``seq`` it saw, so ``resume()`` reconnects (to
any pod) as the same peer without losing what was sent meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

Frame = dict[str, Any]


class ClientError(Exception):
    pass


class Closed(ClientError):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed with {code}")
        self.code = code


class Client:
    """One connection. Frames arrive on ``inbox``; ``recv`` takes the next one."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession | None = None,
        max_msg_size: int = 4 * 1024 * 1024,
    ) -> None:
        self.url = url
        self._own_session = session is None
        self._session = session
        self._max_msg_size = max_msg_size
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.room = self.peer = self.role = ""
        self.session_id = ""
        self.resume_token: str | None = None
        self.last_seq = 0
        self.last_rn = 0
        self.joined: Frame = {}
        self.close_code: int | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    async def connect(self, url: str | None = None) -> None:
        if url is not None:
            self.url = url
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._closed.clear()
        self.close_code = None
        self.ws = await self._session.ws_connect(
            self.url, max_msg_size=self._max_msg_size, autoping=True
        )
        self._reader = asyncio.get_running_loop().create_task(self._read(self.ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    seq = frame.get("seq")
                    if isinstance(seq, int):
                        self.last_seq = max(self.last_seq, seq)
                    rn = frame.get("rn")
                    if isinstance(rn, int):
                        self.last_rn = max(self.last_rn, rn)
                    self.inbox.put_nowait(frame)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
        finally:
            self.close_code = ws.close_code
            self._closed.set()

    async def send(self, frame: Frame) -> None:
        await self.send_raw(json.dumps(frame, separators=(",", ":")))

    async def send_raw(self, text: str) -> None:
        if self.ws is None or self.ws.closed:
            raise Closed(self.close_code)
        try:
            await self.ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError) as e:
            raise Closed(self.close_code) from e

    async def recv(self, timeout: float = 5.0) -> Frame:
        get = asyncio.ensure_future(self.inbox.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
        if get in done:
            return get.result()
        get.cancel()
        if closed in done and self.inbox.empty():
            raise Closed(self.close_code)
        if not self.inbox.empty():
            return self.inbox.get_nowait()
        raise TimeoutError(f"no frame within {timeout}s")

    async def recv_until(self, match: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame that matches; others received meanwhile are dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no matching frame")
            frame = await self.recv(left)
            if match(frame):
                return frame

    async def recv_within(self, within: float, match: Callable[[Frame], bool]) -> list[Frame]:
        """Every matching frame that arrives within ``within`` seconds (others dropped):
        for checking that nothing more comes."""
        out = []
        deadline = asyncio.get_running_loop().time() + within
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                f = await self.recv(left)
            except TimeoutError:
                break
            if match(f):
                out.append(f)
        return out

    async def join(
        self,
        room: str,
        peer: str,
        role: str = "participant",
        token: str | None = None,
        timeout: float = 5.0,
    ) -> Frame:
        self.room, self.peer, self.role = room, peer, role
        frame: Frame = {"type": "join", "room": room, "peer": peer, "role": role}
        if token is not None:
            frame["token"] = token
        await self.send(frame)
        return await self._await_joined(timeout)

    async def resume(self, url: str | None = None, timeout: float = 5.0) -> Frame:
        """Reconnect (to ``url`` or the same one) as the same session."""
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        await self.connect(url)
        frame: Frame = {
            "type": "join",
            "room": self.room,
            "peer": self.peer,
            "role": self.role,
            "resume": self.resume_token,
            "last_seq": self.last_seq,
            "last_rn": self.last_rn,
        }
        await self.send(frame)
        return await self._await_joined(timeout)

    async def _await_joined(self, timeout: float) -> Frame:
        reply = await self.recv_until(lambda f: f.get("type") in ("joined", "error"), timeout)
        if reply["type"] == "error":
            raise ClientError(f"join refused: {reply.get('code')}: {reply.get('message')}")
        self.joined = reply
        self.session_id = reply["session"]
        self.resume_token = reply["resume"]
        return reply

    async def relay(
        self, kind: str, to: str, data: Frame, frame_id: str | int | None = None
    ) -> None:
        frame: Frame = {"type": kind, "to": to, "data": data}
        if frame_id is not None:
            frame["id"] = frame_id
        await self.send(frame)

    async def broadcast(self, topic: str, data: Any, frame_id: str | int | None = None) -> None:
        frame: Frame = {"type": "broadcast", "topic": topic, "data": data}
        if frame_id is not None:
            frame["id"] = frame_id
        await self.send(frame)

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code

    async def abort(self) -> None:
        """Drop the connection without a close handshake (a lost network)."""
        if self.ws is not None:
            transport = (
                self.ws._response.connection.transport
                if (self.ws._response.connection is not None)
                else None
            )
            if transport is not None:
                transport.abort()
            await asyncio.wait_for(self._closed.wait(), 5)

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
