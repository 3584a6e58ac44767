"""Every bound holds, with its clear error, without stalling anyone else.

Real server processes started with small limits; real clients. A slow consumer is a
client that stops reading its socket, so that TCP back-pressure reaches the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import Callable

from signaling.client import Client
from tests.conftest import PodFactory
from tests.support import ROOT, wait_until

from .conftest import joined


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_slow_consumer_is_closed_and_stalls_nobody(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(args=["--outbound-queue", "8", "--rate", "10000", "--rate-burst", "10000"])
    sender = await joined(clients, pod.ws_url, "slow", "sender")
    slow = await joined(clients, pod.ws_url, "slow", "slowpoke")
    fast = await joined(clients, pod.ws_url, "slow", "fast")
    # The slow client stops reading: its socket buffers fill, then the server's queue.
    assert slow._reader is not None
    slow._reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slow._reader
    blob = "x" * 60_000
    got = 0
    for i in range(400):
        await sender.broadcast("whiteboard", {"i": i, "blob": blob})
        if i % 20 == 19:
            # The fast peer keeps up while the slow one lags: nobody waits for it.
            while got <= i - 10:
                frame = await fast.recv_until(lambda f: f["type"] == "broadcast", timeout=10)
                got = frame["data"]["i"] + 1
        status, body = pod.get("/metrics")
        if 'roomwire_closes_total{code="1013"}' in body:
            break
    else:
        raise AssertionError("the slow consumer was never closed")
    assert status == 200
    assert metric(body, 'roomwire_closes_total{code="1013"}') >= 1
    # The sender and the fast peer are fine.
    await sender.relay("offer", "fast", {"still": "here"})
    assert (await fast.recv_until(lambda f: f["type"] == "offer"))["data"] == {"still": "here"}


async def test_room_full(start_pod: PodFactory, clients: Callable[..., Client]) -> None:
    pod = start_pod(args=["--max-peers", "2"])
    a = await joined(clients, pod.ws_url, "small", "a")
    await joined(clients, pod.ws_url, "small", "b")
    c = clients(pod.ws_url)
    await c.connect()
    await c.send({"type": "join", "room": "small", "peer": "c", "role": "participant"})
    err = await c.recv()
    assert err["type"] == "error" and err["code"] == "room-full"
    assert await c.wait_closed() == 1013
    # The room is intact; the same peer id joining again replaces, it does not count twice.
    await a.relay("offer", "b", {"x": 1}, frame_id=1)
    assert (await a.recv_until(lambda f: f["type"] in ("ack", "error")))["type"] == "ack"


async def test_frames_kept_during_grace_are_bounded(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(args=["--grace-keep", "5"])
    a = await joined(clients, pod.ws_url, "keep", "alice")
    b = await joined(clients, pod.ws_url, "keep", "bob")
    await a.abort()
    wait_until(
        lambda: "roomwire_ws_connections 1" in pod.get("/metrics")[1],
        5,
        "the server to notice the drop",
    )
    for i in range(12):
        await b.relay("candidate", "alice", {"i": i})
    reply = await a.resume()
    assert reply["resumed"] is True and reply["dropped"] == 7
    frames = [await a.recv_until(lambda f: f["type"] == "candidate") for _ in range(5)]
    assert [f["data"]["i"] for f in frames] == [7, 8, 9, 10, 11]


async def test_metrics(start_pod: PodFactory, clients: Callable[..., Client]) -> None:
    pod = start_pod()
    a = await joined(clients, pod.ws_url, "m", "a")
    b = await joined(clients, pod.ws_url, "m", "b")
    await a.relay("offer", "b", {"x": 1})
    await b.recv_until(lambda f: f["type"] == "offer")
    await a.send_raw("{bad")
    await a.recv_until(lambda f: f["type"] == "error")
    status, body = pod.get("/metrics")
    assert status == 200
    assert metric(body, "roomwire_ws_connections") == 2
    assert metric(body, "roomwire_sessions") == 2
    assert metric(body, 'roomwire_messages_total{type="offer"}') == 1
    assert metric(body, 'roomwire_errors_total{code="bad-json"}') == 1
    assert metric(body, "roomwire_relay_latency_seconds_count") >= 1
    assert "# TYPE roomwire_relay_latency_seconds histogram" in body
    assert pod.get("/healthz") == (200, "ok\n")
    assert pod.get("/readyz") == (200, "ok\n")


def test_help_documents_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "signaling", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout
    for flag, env in [
        ("--host", "HOST"),
        ("--port", "PORT"),
        ("--redis-url", "REDIS_URL"),
        ("--pod-id", "POD_ID"),
        ("--token-secret", "TOKEN_SECRET"),
        ("--max-frame-bytes", "MAX_FRAME_BYTES"),
        ("--grace", "GRACE_S"),
        ("--drain", "DRAIN_S"),
        ("--rate", "RATE"),
        ("--max-peers", "MAX_PEERS"),
    ]:
        assert flag in out and f"SIGNALING_{env}" in out, flag


async def test_settings_from_the_environment(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(env={"SIGNALING_MAX_PEERS": "1"})
    await joined(clients, pod.ws_url, "env", "a")
    c = clients(pod.ws_url)
    await c.connect()
    await c.send({"type": "join", "room": "env", "peer": "b", "role": "participant"})
    assert (await c.recv())["code"] == "room-full"


def test_bad_setting_fails_fast() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "signaling", "serve"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"SIGNALING_PORT": "eighty", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "SIGNALING_PORT='eighty' is not a valid int" in proc.stderr
