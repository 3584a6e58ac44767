"""A pipelined Redis connection parsed with hiredis: the registry's two hot paths.

Commands are written as soon as they are handed over, and since Redis answers in the
order it was asked, each reply goes to the handler registered with its command: any
number of batches may be in flight, and a reply is handled inside the read callback,
with no task, future or timer per batch. A subscribed connection hands every message
it is pushed to ``on_push`` instead.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import hiredis

# Gets a reply: a value, a hiredis.ReplyError, or a ConnectionError if the connection
# was lost before the reply came.
ReplyHandler = Callable[[Any], None]


class RespPipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[ReplyHandler, float]] = deque()
        self.on_push: ReplyHandler | None = None
        self.last_data = time.monotonic()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            if self.on_push is not None:
                self.on_push(reply)
            elif self.waiting:
                self.waiting.popleft()[0](reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = ConnectionError(f"redis connection lost: {exc or 'closed by the server'}")
        while self.waiting:
            self.waiting.popleft()[0](error)
        if not self.lost.done():
            self.lost.set_result(None)

    # ---- use ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, commands: list[tuple[Any, ...]], handlers: list[ReplyHandler]) -> None:
        """Write the commands at once; each handler gets its command's reply, in order."""
        if self.transport is None:
            error = ConnectionError("redis connection is closed")
            for handler in handlers:
                handler(error)
            return
        now = time.monotonic()
        self.waiting.extend((h, now) for h in handlers)
        self.transport.write(b"".join(hiredis.pack_command(c) for c in commands))

    async def call(self, commands: list[tuple[Any, ...]], timeout: float = 5.0) -> list[Any]:
        """The commands' replies (errors as values): for set-up and rare commands."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self.send(commands, [partial(_settle, f) for f in futures])
        replies = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        for reply in replies:
            if isinstance(reply, ConnectionError):
                raise reply
        return replies

    def oldest_wait(self) -> float:
        """Seconds the oldest unanswered command has waited (0 if none)."""
        return time.monotonic() - self.waiting[0][1] if self.waiting else 0.0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _settle(fut: asyncio.Future[Any], reply: Any) -> None:
    """A reply for ``call``; none is waited for any more after its timeout (the loss of
    the connection then still answers every other command in flight)."""
    if not fut.done():
        fut.set_result(reply)


TlsVerify = Literal["full", "ca", "none"]


@dataclass(frozen=True)
class TlsOptions:
    """How a ``rediss://`` connection is secured.

    ``verify``: ``full`` checks the server's certificate chain against ``ca_file`` (the
    system's trust store when empty) and that it names the host of the URL; ``ca`` the
    chain only (a certificate issued for another name, e.g. the pod's Service by its
    short name); ``none`` nothing (encryption without authentication: testing only).
    ``cert_file`` and ``key_file``: a client certificate, for a server that asks for one
    (Redis' ``tls-auth-clients``, on by default)."""

    ca_file: str = ""
    verify: TlsVerify = "full"
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        """A client context, the files read now (a renewed certificate is taken at the
        next connect). Raises ``OSError``/``ssl.SSLError`` for a missing or bad file."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.verify != "full":
            ctx.check_hostname = False
        if self.verify == "none":
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        return ctx


async def open_pipe(
    opts: dict[str, Any], tls: TlsOptions | None, name: str = "", timeout: float = 5.0
) -> RespPipe:
    """Connect (over TLS when ``tls`` is given), authenticate and select the database of
    a redis-py connection's options; ``name`` is what CLIENT LIST shows for the
    connection."""
    loop = asyncio.get_running_loop()
    ctx = tls.context() if tls is not None else None
    _, pipe = await asyncio.wait_for(
        loop.create_connection(
            RespPipe, opts.get("host", "localhost"), opts.get("port", 6379), ssl=ctx
        ),
        timeout,
    )
    setup: list[tuple[Any, ...]] = []
    if opts.get("password"):
        user = opts.get("username")
        setup.append(("AUTH", *([user] if user else []), opts["password"]))
    if opts.get("db"):
        setup.append(("SELECT", opts["db"]))
    if name:
        setup.append(
            ("CLIENT", "SETNAME", "".join(c if c.isalnum() or c in "-_:." else "_" for c in name))
        )
    if setup:
        try:
            for reply in await pipe.call(setup, timeout):
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"redis refused: {reply}")
        except BaseException:
            pipe.close()
            raise
    return pipe
