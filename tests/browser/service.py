"""A loopback stand-in for a Kubernetes Service in front of signaling pods.

Each new TCP connection goes to the first backend whose ``/readyz`` answers 200, as the
Service's endpoints drop a draining pod; established connections are piped untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp

READY_SECONDS = 1.0


@dataclass
class Service:
    backends: list[tuple[str, int]]  # (host, port) in order of preference
    server: asyncio.Server | None = None
    routed: list[int] = field(default_factory=list)  # backend port of each connection
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Service:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.server is not None:
            await self.server.wait_closed()

    async def _ready(self, host: str, port: int) -> bool:
        timeout = aiohttp.ClientTimeout(total=READY_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"http://{host}:{port}/readyz") as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            for host, port in self.backends:
                if await self._ready(host, port):
                    up_reader, up_writer = await asyncio.open_connection(host, port)
                    self.routed.append(port)
                    await asyncio.gather(
                        _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
                    )
                    return
        finally:
            writer.close()
            self._pipes.discard(task)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError):
            dst.close()
