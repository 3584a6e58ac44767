"""``migrate-room`` while frames flow: the operator's signed command (published to the
pod's inbox in the real Redis, as the operator does) moves an edge's upstream to another
pod; no device sees a disconnect, and nothing is lost or doubled, either way. Real pods,
a real edge process, devices and a remote participant as WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from roomwire_contract import control, keys
from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.support import wait_until

from .conftest import EdgeFactory, metric
from .test_edge_upstream_loss import device, gapless, take

SECRET = "edge-migrate-control"
Frame = dict[str, Any]


async def test_migrate_moves_the_upstream_while_frames_flow(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    args = ["--control-secret", SECRET]
    pod1 = start_pod(redis_url, "pod-1", args=args, wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", args=args, wait_ready=False)
    wait_ready(pod1, pod2)
    edge = start_edge("hall", [pod1])
    screen = await device(clients, edge.ws_url, "screen", "screen")
    laptop = await device(clients, edge.ws_url, "laptop", "participant")
    assert (await screen.recv())["peer"] == "laptop"
    wait_until(lambda: edge.linked(2), 10, "edge linked")
    remote = clients(pod2.ws_url)
    await remote.connect()
    await remote.join("hall", "remote")
    for c in (screen, laptop):
        assert (await c.recv())["peer"] == "remote"

    n = 100  # at 20 a second: two frames of the laptop's each, under the rate limit

    async def stream() -> None:
        for i in range(n):
            await laptop.relay("candidate", "remote", {"c": f"up{i}"}, frame_id=i)
            await remote.relay("candidate", "laptop", {"c": f"down{i}"})
            await laptop.relay("candidate", "screen", {"c": f"in{i}"})
            if i % 25 == 24:
                await remote.broadcast("chat", {"i": i})
            await asyncio.sleep(0.05)

    task = asyncio.get_running_loop().create_task(stream())
    await asyncio.sleep(1.0)
    r = aioredis.from_url(redis_url)
    try:
        cmd = control.sign(SECRET, {"op": "migrate-room", "room": "hall", "url": pod2.ws_url})
        t0 = time.monotonic()
        assert await r.publish(keys.inbox("pod-1"), json.dumps(cmd)) == 1
    finally:
        await r.aclose()
    wait_until(lambda: edge.status()["pod"] == "pod-2" and edge.linked(2), 10, "edge on pod-2")
    took = time.monotonic() - t0
    await asyncio.wait_for(task, 60)

    got_remote = await take(remote, n, "the laptop's frames at the remote peer")
    assert [f["data"]["c"] for f in got_remote] == [f"up{i}" for i in range(n)]
    gapless(got_remote)
    acks: list[Frame] = []
    got_laptop = await take(laptop, n + n // 25, "the remote frames at the laptop", acks)
    assert [
        f["data"].get("c", f["data"].get("i")) for f in got_laptop if f["type"] == "candidate"
    ] == [f"down{i}" for i in range(n)]
    assert [f["data"]["i"] for f in got_laptop if f["type"] == "broadcast"] == [
        i for i in range(n) if i % 25 == 24
    ]
    gapless(got_laptop)
    got_screen = await take(screen, n + n // 25, "frames at the screen")
    assert [f["data"]["c"] for f in got_screen if f["type"] == "candidate"] == [
        f"in{i}" for i in range(n)
    ]
    gapless(got_screen)
    acks += await laptop.recv_within(0.5, lambda f: True)
    for c in (remote, screen):
        assert await c.recv_within(0.5, lambda f: "seq" in f) == []
    # Every frame of the laptop's to the remote peer was acked, once, in order; no
    # device saw a disconnect.
    assert acks == [{"type": "ack", "id": i} for i in range(n)]
    for c in (screen, laptop):
        assert c.close_code is None and c.ws is not None and not c.ws.closed
    wait_until(lambda: metric(pod1, "roomwire_ws_connections") == 0, 15, "old link closed")
    assert metric(pod1, "roomwire_sessions") == 0
    assert metric(pod2, "roomwire_sessions") == 3
    assert metric(pod2, "roomwire_ws_connections") == 2
    print(f"upstream moved in {took:.2f} s")


async def test_an_edge_that_links_elsewhere_is_moved_to_its_rooms_home_pod(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    """The edge knows only the Service (here: pod 1); the operator placed its room on
    pod 2 (``rw:placement``, written here as the operator writes it): pod 1 moves the
    edge's link there, devices unaware."""
    pod1 = start_pod(redis_url, "pod-1", wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(pod1, pod2)
    r = aioredis.from_url(redis_url)
    try:
        await r.hset(keys.PLACEMENT, "lobby", "pod-2")
    finally:
        await r.aclose()
    edge = start_edge("lobby", [pod1])
    screen = await device(clients, edge.ws_url, "screen", "screen", "lobby")
    laptop = await device(clients, edge.ws_url, "laptop", "participant", "lobby")
    wait_until(lambda: edge.linked(2) and edge.status()["pod"] == "pod-2", 15, "edge at home")
    remote = clients(pod1.ws_url)
    await remote.connect()
    await remote.join("lobby", "remote")
    for c in (screen, laptop):
        await c.recv_until(lambda f: f["type"] == "peer-joined" and f["peer"] == "remote")
    await laptop.relay("offer", "remote", {"sdp": "o"})
    assert (await remote.recv_until(lambda f: f["type"] == "offer"))["from"] == "laptop"
    await laptop.relay("offer", "screen", {"sdp": "local"})
    assert (await screen.recv_until(lambda f: f["type"] == "offer"))["from"] == "laptop"
    for c in (screen, laptop):
        assert c.close_code is None
    wait_until(lambda: metric(pod1, "roomwire_ws_connections") == 1, 15, "only remote on pod-1")
    assert metric(pod2, "roomwire_ws_connections") == 1
    assert metric(pod2, "roomwire_sessions") == 2


async def test_a_draining_pod_sends_its_edge_elsewhere(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    """SIGTERM on the edge's pod: the link is told to reconnect (once, for all its
    devices), the edge resumes them on the other pod; devices see nothing, frames sent
    meanwhile arrive once, in order."""
    pod1 = start_pod(redis_url, "pod-1", args=["--drain", "2"], wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(pod1, pod2)
    edge = start_edge("hall", [pod1, pod2])
    screen = await device(clients, edge.ws_url, "screen", "screen")
    laptop = await device(clients, edge.ws_url, "laptop", "participant")
    wait_until(lambda: edge.linked(2) and edge.status()["pod"] == "pod-1", 10, "edge on pod-1")
    remote = clients(pod2.ws_url)
    await remote.connect()
    await remote.join("hall", "remote")
    for c in (screen, laptop):
        await c.recv_until(lambda f: f.get("peer") == "remote")
    pod1.proc.terminate()  # SIGTERM: drain
    for i in range(40):
        await laptop.relay("candidate", "remote", {"c": i})
        await remote.relay("candidate", "laptop", {"c": i})
        await asyncio.sleep(0.05)
    wait_until(lambda: edge.linked(2) and edge.status()["pod"] == "pod-2", 15, "edge on pod-2")
    got = await take(remote, 40, "the laptop's frames")
    assert [f["data"]["c"] for f in got] == list(range(40))
    gapless(got)
    got = await take(laptop, 40, "the remote frames")
    assert [f["data"]["c"] for f in got] == list(range(40))
    gapless(got)
    for c in (screen, laptop):
        assert c.close_code is None and c.ws is not None and not c.ws.closed
    assert pod1.proc.wait(15) == 0
