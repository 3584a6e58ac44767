"""What ``unavailable`` promises (docs/protocol.md, "What `unavailable` means"): the
frame may have been accepted after all; a resend with the same ``id`` on the same
session reaches the receiver at most once in total.

The ambiguous case reproduced for real: the sender's pod reaches Redis through a proxy
that forwards the relay (Redis runs it: the frame goes out to the receiver's pod) and
then loses the reply with the connection. The sender is told ``unavailable`` for a frame
that was delivered; it resends with the same ``id``."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.support import eventually, free_port

MARK = b"cut-here-7f3a"


@dataclass
class ReplyLosingProxy:
    """A TCP proxy to Redis. Armed, the first request carrying ``MARK`` is forwarded,
    every reply from then on is dropped, and the connection is cut shortly after."""

    upstream_port: int
    port: int = field(default_factory=free_port)
    armed: bool = False
    cuts: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        lost = asyncio.Event()

        async def up() -> None:
            while data := await reader.read(65536):
                up_w.write(data)
                if self.armed and MARK in data:
                    self.armed, self.cuts = False, self.cuts + 1
                    lost.set()
                    await asyncio.sleep(0.3)  # Redis runs it meanwhile
                    break

        async def down() -> None:
            while data := await up_r.read(65536):
                if not lost.is_set():
                    writer.write(data)

        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        pumps = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_w):
                with contextlib.suppress(Exception):
                    w.close()
            self.tasks.discard(task)


@pytest.mark.parametrize("kind", ["offer", "broadcast"])
async def test_a_resend_after_unavailable_is_delivered_once(
    redis_url: str, start_pod: PodFactory, kind: str
) -> None:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = ReplyLosingProxy(redis_port)
    await proxy.start()
    sender_url = redis_url.replace(f":{redis_port}", f":{proxy.port}")
    a = start_pod(sender_url, "pod-a", wait_ready=False)
    b = start_pod(redis_url, "pod-b", wait_ready=False)
    await asyncio.to_thread(wait_ready, a, b)
    alice, bob = Client(a.ws_url), Client(b.ws_url)
    try:
        await alice.connect()
        await bob.connect()
        await alice.join("r1", "alice")
        await bob.join("r1", "bob")

        async def send(n: int, frame_id: int, **extra: str) -> None:
            if kind == "offer":
                await alice.relay("offer", "bob", {"n": n, **extra}, frame_id=frame_id)
            else:
                await alice.broadcast("chat", {"n": n, **extra}, frame_id=frame_id)

        def got(f: dict[str, Any]) -> bool:
            return bool(f["type"] == kind)

        await send(0, 1)
        assert (await alice.recv_until(lambda f: f["type"] in ("ack", "error")))["type"] == "ack"
        await bob.recv_until(got)

        proxy.armed = True
        await send(1, 2, mark=MARK.decode())
        first = await alice.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=15)
        assert proxy.cuts == 1
        assert (first["type"], first.get("code"), first.get("id")) == ("error", "unavailable", 2)
        assert (await bob.recv_until(got))["data"]["n"] == 1, "Redis took it: delivered anyway"

        # The client does what `unavailable` asks: the same frame again, the same id.
        async def resent() -> bool:
            await send(1, 2, mark=MARK.decode())
            answer = await alice.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=10)
            return bool(answer["type"] == "ack")

        await eventually(resent, 20, "the resend acked", every=0.5)
        await send(2, 3)
        after = await bob.recv_within(1.5, got)
        ns = [f["data"]["n"] for f in after]
        print(f"{kind}: what the receiver got after the first: {ns}")
        assert ns == [2], f"frame 1 delivered {1 + ns.count(1)} times"
    finally:
        await alice.close()
        await bob.close()
        await proxy.stop()


@pytest.mark.parametrize("where", ["same pod", "other pod"])
@pytest.mark.parametrize("kind", ["offer", "broadcast"])
async def test_a_resend_marked_after_a_lost_connection_is_delivered_once(
    redis_url: str, start_pod: PodFactory, kind: str, where: str
) -> None:
    """A frame whose ack never came because the connection dropped: after resuming, the
    client sends it again with the same id and ``"resend": true``; whether the first try
    got through (here it did) or not, the receiver gets it once. Without the mark the
    same id is a new frame (ids are the client's, not a dedupe key by themselves)."""
    a = start_pod(redis_url, "pod-a", wait_ready=False)
    b = start_pod(redis_url, "pod-b", wait_ready=False)
    await asyncio.to_thread(wait_ready, a, b)
    alice = Client(a.ws_url)
    bob = Client(a.ws_url if where == "same pod" else b.ws_url)
    try:
        await alice.connect()
        await bob.connect()
        await alice.join("r2", "alice")
        await bob.join("r2", "bob")

        def frame(n: int, frame_id: int, resend: bool) -> dict[str, Any]:
            f: dict[str, Any] = {"type": kind, "data": {"n": n}, "id": frame_id}
            f.update({"to": "bob"} if kind == "offer" else {"topic": "chat"})
            return {**f, "resend": True} if resend else f

        async def answer(frame_id: int) -> str:
            f = await alice.recv_until(lambda f: f.get("id") == frame_id, timeout=10)
            return str(f["type"])

        await alice.send(frame(1, 11, False))
        assert await answer(11) == "ack"
        await alice.resume()  # the connection dropped before the client saw the ack
        await alice.send(frame(1, 11, True))
        assert await answer(11) == "ack"
        await alice.send(frame(2, 12, True))  # a marked resend never sent before: new
        assert await answer(12) == "ack"
        await alice.send(frame(1, 11, False))  # the same id unmarked: a new frame
        assert await answer(11) == "ack"
        got = await bob.recv_within(1.5, lambda f: f["type"] == kind)
        ns = [f["data"]["n"] for f in got]
        print(f"{kind}, {where}: the receiver got {ns}")
        assert ns == [1, 2, 1], ns
    finally:
        await alice.close()
        await bob.close()
