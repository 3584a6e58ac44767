"""The edge's one connection to the cloud: joined as role ``edge``, every device of the
room attached over it (``framing``), reconnected with jittered exponential backoff and
every device resumed with the cloud's own resume machinery, so that no device notices.

What devices send up waits in one bounded queue until the cloud confirms it (``got``):
while the link is down, while it is attaching the devices again, and in flight. After a
reconnect the cloud says, per device, what it had taken already (``attached``); the
rest is sent again, in order. A frame that finds the queue full is refused to its device
(error ``unavailable``), never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..discovery import NACOS_SCHEME, NacosPicker, picker_from_url
from . import framing
from .room import Device, EdgeRoom
from .settings import EdgeSettings

log = logging.getLogger("signaling.edge")

MIGRATE_SETTLE_S = 2.0  # longest wait for the old link to confirm what it was sent


@dataclass(eq=False)
class Queued:
    d: Device
    u: int
    text: str  # the encoded link message


class Link:
    """One WebSocket to a pod, and its state."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.ws = ws
        self.url = url
        self.pod = ""
        self.attaching: set[str] = set()
        self.reader: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.out: deque[str] = deque()
        self.closed = asyncio.Event()


async def _write(link: Link) -> None:
    """The link's frames, one writer so that they leave in order."""
    try:
        while link.out:
            await link.ws.send_str(link.out.popleft())
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        link.out.clear()
    finally:
        link.writer = None


def backoff(attempt: int, first_s: float, most_s: float, draw: float) -> float:
    """The wait before attempt ``attempt + 1`` (``attempt`` failed so far, from 1):
    ``first_s`` doubling up to ``most_s``, then drawn from its upper half with ``draw``
    (uniform in [0, 1)), so that the edges of many rooms that lost the same pod do not
    come back in step."""
    ceiling: float = min(most_s, first_s * 2.0 ** min(attempt - 1, 30))
    return ceiling / 2 + draw * ceiling / 2


def edge_url(url: str) -> str:
    """A pod's ``/ws`` URL (what ``migrate`` names) as its ``/edge`` endpoint."""
    return url[: -len("/ws")] + "/edge" if url.endswith("/ws") else url


class Upstream:
    def __init__(self, settings: EdgeSettings, room: EdgeRoom) -> None:
        self.settings = settings
        self.room = room
        self.urls = settings.upstreams
        self.enabled = bool(self.urls)
        self.queue: deque[Queued] = deque()
        self.link: Link | None = None
        self.ready = False  # linked and every device attached: frames go out at once
        self.sent = 0  # how many of the queue went out on the current link
        self.since = 0.0  # when the current link came up (unix time), 0 while down
        self.connects = 0
        self.refused = 0
        self._pending: list[str] = []
        self._flush_at: asyncio.Handle | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._adopt: Link | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._pickers: dict[str, NacosPicker] = {}  # per nacos:// upstream
        room.upstream = self

    # ---- the room's port ---------------------------------------------------------------

    def attach(self, d: Device) -> None:
        link = self.link
        if link is None:
            return  # attached with every device when the link is up
        link.attaching.add(d.peer)
        self._write(self._attach_msg(d))

    def send(self, d: Device, frame_text: str) -> bool:
        if len(self.queue) >= self.settings.upstream_queue:
            self.refused += 1
            return False
        d.u += 1
        q = Queued(d, d.u, framing.dev_up(d.peer, d.u, frame_text))
        self.queue.append(q)
        if self.ready:
            # After the device's attach, if that is under way: the cloud takes the
            # link's messages in order.
            self._send_rest()
        return True

    # ---- writing -----------------------------------------------------------------------

    def _attach_msg(self, d: Device) -> str:
        if d.cloud_resume is None:
            return framing.attach(d.peer, d.role.value)
        return framing.attach(d.peer, d.role.value, d.cloud_resume, d.cloud_seq, d.cloud_rn)

    def _write(self, message: str) -> None:
        self._pending.append(message)
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        pending, self._pending = self._pending, []
        link = self.link
        if link is None or link.ws.closed:
            return
        link.out.extend(framing.batches(pending, self.settings.max_frame_bytes))
        if link.writer is None:
            link.writer = asyncio.get_running_loop().create_task(_write(link))

    def _send_rest(self) -> None:
        """Send what the queue holds past what went out on this link."""
        q = self.queue
        while self.sent < len(q):
            self._write(q[self.sent].text)
            self.sent += 1

    # ---- the link's life ---------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for picker in self._pickers.values():
            await picker.close()
        if self.link is not None:
            await self.link.ws.close()
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession()
        attempt = 0
        i = 0
        while True:
            if self._adopt is not None:  # a migration connected it already
                link, self._adopt = self._adopt, None
                await self._serve(link)
                continue
            url = self.urls[i % len(self.urls)]
            try:
                url = await self._target(url)
                link = await self._connect(url)
            except (OSError, aiohttp.ClientError, TimeoutError, LinkRefused) as e:
                attempt += 1
                i += 1
                delay = backoff(
                    attempt,
                    self.settings.backoff_min_s,
                    self.settings.backoff_max_s,
                    random.random(),
                )
                log.info("upstream %s: %s; again in %.2fs", url, e, delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            await self._serve(link)

    async def _target(self, url: str) -> str:
        """The URL to connect to: a pod drawn by weight from Nacos for a ``nacos://``
        upstream (its fallback while Nacos has none), else ``url`` itself."""
        if not url.startswith(NACOS_SCHEME):
            return url
        picker = self._pickers.get(url)
        if picker is None:
            picker = self._pickers[url] = picker_from_url(url)
            await picker.start()
            # Nacos's first answer usually comes within a second: wait for it that long,
            # so that the first link goes to a pod of Nacos's choice, not the fallback.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(picker.changed.wait(), 1.0)
        chosen = picker.pick_url()
        if not chosen:
            raise OSError(f"{url}: Nacos lists no pod and there is no fallback")
        return chosen

    async def _connect(self, url: str) -> Link:
        assert self._session is not None
        ws = await self._session.ws_connect(
            edge_url(url),
            heartbeat=self.settings.upstream_heartbeat_s,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
        join: dict[str, Any] = {
            "type": "join",
            "room": self.room.room,
            "peer": self.settings.edge_id,
            "role": "edge",
        }
        token = self.edge_token()
        if token:
            join["token"] = token
        try:
            await ws.send_str(orjson.dumps(join).decode())
            msg = await asyncio.wait_for(ws.receive(), 10.0)
        except BaseException:
            await ws.close()
            raise
        reply = orjson.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
        if reply.get("type") != "joined":
            await ws.close()
            raise LinkRefused(f"{reply.get('code')}: {reply.get('message')}")
        link = Link(ws, url)
        link.pod = str(reply.get("pod", ""))
        return link

    def edge_token(self) -> str | None:
        """The edge token for the next link: the file's, read now (it may have been
        rotated), else the setting's."""
        path = self.settings.edge_token_file
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read().strip() or None
            except OSError as e:
                log.warning("edge token file %s: %s", path, e)
        return self.settings.edge_token

    async def _serve(self, link: Link) -> None:
        """Use ``link`` until it closes (or a migration replaces it)."""
        self.connects += 1
        self.link, self.ready, self.sent = link, False, 0
        self.since = time.time()
        log.info("upstream linked to pod %s (%s)", link.pod, link.url)
        link.reader = asyncio.get_running_loop().create_task(self._read(link))
        self._attach_all(link)
        await link.closed.wait()
        if self.link is link:
            self.link, self.ready, self.since = None, False, 0.0
            log.info("upstream to pod %s lost", link.pod)

    def _attach_all(self, link: Link) -> None:
        devices = list(self.room.devices.values())
        link.attaching = {d.peer for d in devices}
        for d in devices:
            self._write(self._attach_msg(d))
        if not devices:
            self._attached_all()

    def _attached_all(self) -> None:
        self.ready = True
        self._send_rest()

    async def _read(self, link: Link) -> None:
        try:
            async for msg in link.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                try:
                    messages = framing.decode(msg.data)
                except framing.FramingError as e:
                    log.warning("bad message from the cloud: %s", e)
                    continue
                for m in messages:
                    self._on(link, m)
        finally:
            link.closed.set()

    def _on(self, link: Link, m: framing.Message) -> None:
        if isinstance(m, framing.DevFrame):
            # Also from a link being left: frames on their way there still arrive, and
            # copies are recognised by the cloud's seq.
            self.room.from_cloud(m.dev, m.frame)
        elif link is not self.link:
            return  # the rest concerns the link in use only
        elif isinstance(m, framing.Got):
            self._confirmed(m.progress)
        elif isinstance(m, framing.Attached):
            self._on_attached(link, m.dev, m.u)
        elif isinstance(m, framing.Detached):
            link.attaching.discard(m.dev)
            self.room.detached(m.dev, m.code, m.reason)
            self._drop_queued(m.dev)
            if not self.ready and not link.attaching:
                self._attached_all()
        elif isinstance(m, framing.Migrate):
            self._spawn(self._migrate(link, m.url))
        elif isinstance(m, framing.Reconnect):
            self._spawn(self._reconnect(link, m.after_ms))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A background job, held until done (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _confirmed(self, progress: dict[str, int]) -> None:
        q = self.queue
        while q and (u := progress.get(q[0].d.peer)) is not None and q[0].u <= u:
            q.popleft()
            if self.sent > 0:
                self.sent -= 1

    def _on_attached(self, link: Link, dev: str, u: int) -> None:
        """``dev`` is a session again; the cloud took its frames up to ``u``."""
        if dev in link.attaching:
            link.attaching.discard(dev)
            if not self.ready:
                kept = [q for q in self.queue if not (q.d.peer == dev and q.u <= u)]
                if len(kept) != len(self.queue):
                    self.queue = deque(kept)
            if not self.ready and not link.attaching:
                self._attached_all()

    def _drop_queued(self, dev: str) -> None:
        if any(q.d.peer == dev for q in self.queue):
            self.queue = deque(q for q in self.queue if q.d.peer != dev)
            self.sent = min(self.sent, len(self.queue))

    async def _migrate(self, old: Link, url: str) -> None:
        """Move the upstream to ``url``: make before break. New frames wait in the queue
        while the old link confirms what it was sent; then every device resumes on the
        new link, whose pod takes the sessions over from the old one."""
        try:
            new = await self._connect(url)
        except (OSError, aiohttp.ClientError, TimeoutError, LinkRefused) as e:
            log.warning("migrate to %s failed: %s; staying", url, e)
            return
        self.ready = False
        deadline = time.monotonic() + MIGRATE_SETTLE_S
        while self.sent > 0 and time.monotonic() < deadline and not old.closed.is_set():
            await asyncio.sleep(0.01)
        log.info("upstream migrates from pod %s to %s", old.pod, new.pod)
        # The old link's reader goes on a while (frames on their way there still arrive;
        # copies are recognised by seq); the run loop serves the new link from now on.
        self._adopt = new
        old.closed.set()
        await asyncio.sleep(5.0)
        await old.ws.close()

    async def _reconnect(self, link: Link, after_ms: int) -> None:
        await asyncio.sleep(after_ms / 1000)
        await link.ws.close()


class LinkRefused(Exception):
    """The cloud answered the edge's join with an error."""
