"""This pod's inbox: one subscription on its own connection, messages handed to the hub
in order.

The inbox is the hottest read path of a pod: messages are decoded and handed to the hub
inside the connection's read callback (where redis-py's PubSub spends tens of
microseconds per message); a message whose handling must wait holds the ones behind it
in a backlog, handled in order by one worker. A lost subscription is retried at once:
while nobody listens, frames for this pod's sessions go to their bounded boxes, so every
millisecond of the gap counts; after a gap the hub recovers them before any newer
message (``{"k": "resubscribed"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

import hiredis

from roomwire_contract import keys
from roomwire_contract.inbox import decode_inbox

from .model import InboxHandler
from .redis_link import RedisAddress

log = logging.getLogger("signaling.redis")

INBOX_PING_S = 5.0


class Inbox:
    def __init__(self, address: RedisAddress, pod_id: str) -> None:
        self.address = address
        self.pod_id = pod_id
        self.subscribed = asyncio.Event()
        self._ever_subscribed = False
        self._on_inbox: InboxHandler | None = None
        self._listener: asyncio.Task[None] | None = None
        # Messages waiting behind one whose handling had to wait (None: none is).
        self._backlog: deque[dict[str, Any]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def start(self, on_inbox: InboxHandler) -> None:
        self._on_inbox = on_inbox
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        for task in (self._listener, self._worker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _listen(self) -> None:
        """Subscribe, and resubscribe after a lost connection: the first attempt at once,
        failed ones every half second, one warning per outage."""
        warned = False
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except (OSError, ValueError, hiredis.ProtocolError) as e:
                was_subscribed = self.subscribed.is_set()
                self.subscribed.clear()
                if was_subscribed or not warned:
                    log.warning("inbox subscription lost (%s); resubscribing", e)
                warned = not was_subscribed
                if not was_subscribed:
                    await asyncio.sleep(0.5)

    async def _read(self) -> None:
        pipe = await self.address.connect(f"rw-inbox:{self.pod_id}")
        try:
            # Every reply on a subscribed connection is a push, the confirmation too: the
            # handler is in place before SUBSCRIBE, so a message that arrives in the same
            # read as the confirmation is not lost.
            confirmed = asyncio.get_running_loop().create_future()

            def push(reply: Any) -> None:
                if isinstance(reply, list) and reply and reply[0] == b"subscribe":
                    if not confirmed.done():
                        if self._ever_subscribed:
                            # Frames routed while nobody listened were kept: recover them
                            # before any message that comes after this confirmation.
                            self.dispatch({"k": "resubscribed"})
                        self._ever_subscribed = True
                        confirmed.set_result(None)
                elif isinstance(reply, hiredis.ReplyError) and not confirmed.done():
                    confirmed.set_exception(ConnectionError(f"redis refused: {reply}"))
                elif isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    if (payload := decode_inbox(reply[2])) is not None:
                        self.dispatch(payload)

            pipe.on_push = push
            pipe.send([("SUBSCRIBE", keys.inbox(self.pod_id))], [])
            await asyncio.wait_for(confirmed, 5)
            self.subscribed.set()
            pings, seen = 0, pipe.last_data
            while not pipe.lost.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pipe.lost), INBOX_PING_S)
                if pipe.lost.done():
                    break
                if pipe.last_data != seen:  # messages, or the answer to our PING
                    pings, seen = 0, pipe.last_data
                    continue
                # Silent for a whole period: PING, and give up after two unanswered.
                pings += 1
                if pings > 2:
                    raise ConnectionError("no answer on the inbox connection")
                pipe.send([("PING",)], [])
            raise ConnectionError("redis closed the inbox connection")
        finally:
            pipe.close()

    def dispatch(self, payload: dict[str, Any]) -> None:
        """Hand a message to the hub in order: at once, unless an earlier one is still
        being handled (the hub returned an awaitable for it); then behind it."""
        assert self._on_inbox is not None
        if self._backlog is not None:
            self._backlog.append(payload)
            return
        step = self._on_inbox(payload)
        if step is not None:
            self._backlog = deque()
            self._worker = asyncio.get_running_loop().create_task(self._drain(step))

    async def _drain(self, step: Awaitable[None]) -> None:
        assert self._on_inbox is not None and self._backlog is not None
        backlog = self._backlog
        try:
            while True:
                try:
                    await step
                except Exception:
                    log.exception("inbox message handling failed")
                while backlog:
                    nxt = self._on_inbox(backlog.popleft())
                    if nxt is not None:
                        step = nxt
                        break
                else:
                    return
        finally:
            self._backlog = None
            self._worker = None
