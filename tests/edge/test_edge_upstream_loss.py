"""The upstream lost: the room goes on inside, and what each side sent meanwhile arrives
after the edge is back, each frame exactly once and in order, with no device or remote
peer told anything. Real pods on a real Redis, a real edge process; the network between
the edge and its pod is a TCP proxy the test cuts (``proxy.py``), or the pod is killed
with SIGKILL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.support import eventually

from .conftest import EdgeFactory, metric
from .proxy import CuttableProxy
from .test_edge_relay import two_pods

Frame = dict[str, Any]


async def device(
    clients: Callable[..., Client], url: str, peer: str, role: str, room: str = "hall"
) -> Client:
    c = clients(url)
    await c.connect()
    await c.join(room, peer, role)
    return c


async def take(c: Client, n: int, what: str, aside: list[Frame] | None = None) -> list[Frame]:
    """``n`` frames with a seq; acks set aside (into ``aside``), an error fails."""
    out: list[Frame] = []
    deadline = time.monotonic() + 20
    while len(out) < n:
        assert time.monotonic() < deadline, f"{what}: {len(out)} of {n}"
        f = await c.recv(20)
        assert f["type"] != "error", f
        if "seq" in f:
            out.append(f)
        elif aside is not None:
            aside.append(f)
    return out


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` without blocking the loop (the proxy runs in it)."""

    async def probe() -> bool:
        return check()

    await eventually(probe, timeout, what)


def gapless(frames: list[Frame]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


async def test_room_keeps_working_through_a_10s_cut_and_catches_up_exactly_once(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = two_pods(start_pod, redis_url)
    proxy = CuttableProxy(pod1.port)
    await proxy.start()
    try:
        edge = start_edge("hall", upstream_urls=[f"ws://127.0.0.1:{proxy.port}/edge"])
        screen = await device(clients, edge.ws_url, "screen", "screen")
        laptop = await device(clients, edge.ws_url, "laptop", "participant")
        assert (await screen.recv())["peer"] == "laptop"
        await until(lambda: edge.linked(2), 10, "edge linked")
        remote = clients(pod2.ws_url)
        await remote.connect()
        await remote.join("hall", "remote")
        for c in (screen, laptop):
            assert (await c.recv())["peer"] == "remote"

        proxy.cut()
        await until(lambda: not edge.status()["connected"], 5, "the edge to see the cut")
        cut_at = time.monotonic()
        # Inside the room: projection goes on, through the edge alone.
        for i in range(5):
            await laptop.relay("candidate", "screen", {"c": f"in{i}"}, frame_id=f"in{i}")
        inside = await take(screen, 5, "frames inside the room during the cut")
        assert [f["data"]["c"] for f in inside] == [f"in{i}" for i in range(5)]
        # Both sides talk to each other meanwhile.
        for i in range(20):
            await laptop.relay("candidate", "remote", {"c": f"up{i}"})
            await remote.relay("candidate", "laptop", {"c": f"down{i}"})
        await laptop.broadcast("chat", {"n": "from the room"})
        await remote.broadcast("chat", {"n": "from afar"})
        # The remote one sees the devices in grace, not gone.
        assert await remote.recv_within(1.0, lambda f: f["type"] == "peer-left") == []
        assert metric(pod1, "roomwire_ws_connections") == 0
        await until(lambda: time.monotonic() - cut_at >= 10, 11, "10 s of cut")
        assert not edge.status()["connected"]
        proxy.restore()
        await until(lambda: edge.linked(2), 15, "the edge linked again")

        got_remote = await take(remote, 21, "the room's frames at the remote peer")
        assert [f["data"]["c"] for f in got_remote[:20]] == [f"up{i}" for i in range(20)]
        assert got_remote[20]["type"] == "broadcast" and got_remote[20]["from"] == "laptop"
        gapless(got_remote)
        got_laptop = await take(laptop, 21, "the remote frames at the laptop")
        assert [f["data"]["c"] for f in got_laptop[:20]] == [f"down{i}" for i in range(20)]
        assert got_laptop[20]["data"] == {"n": "from afar"}
        gapless(got_laptop)
        assert got_laptop[0]["seq"] == 2  # 1 was peer-joined remote: nothing in between
        got_screen = await take(screen, 2, "both broadcasts at the screen")
        assert {f["from"] for f in got_screen} == {"laptop", "remote"}
        gapless(inside + got_screen)
        # Exactly once: nothing more comes, to anyone.
        for c in (remote, laptop, screen):
            assert await c.recv_within(0.5, lambda f: "seq" in f) == []
        assert metric(pod1, "roomwire_ws_connections") == 1
        assert metric(pod1, "roomwire_sessions") == 2
    finally:
        await proxy.close()


async def test_pod_killed_the_edge_resumes_every_device_on_another_pod(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = two_pods(start_pod, redis_url)
    edge = start_edge("hall", [pod1, pod2])
    screen = await device(clients, edge.ws_url, "screen", "screen")
    laptop = await device(clients, edge.ws_url, "laptop", "participant")
    assert (await screen.recv())["peer"] == "laptop"
    await until(lambda: edge.linked(2), 10, "edge linked")
    remote = clients(pod2.ws_url)
    await remote.connect()
    await remote.join("hall", "remote")
    for c in (screen, laptop):
        assert (await c.recv())["peer"] == "remote"
    for i in range(10):
        await laptop.relay("candidate", "remote", {"c": f"a{i}"})
    before = await take(remote, 10, "frames before the kill")

    pod1.kill9()
    for i in range(10, 30):
        await laptop.relay("candidate", "remote", {"c": f"a{i}"})
        await remote.relay("candidate", "laptop", {"c": f"b{i}"})
        await laptop.relay("candidate", "screen", {"c": f"s{i}"})
    await until(lambda: edge.linked(2) and edge.status()["pod"] == "pod-2", 15, "edge on pod-2")

    after = await take(remote, 20, "frames after the kill")
    assert [f["data"]["c"] for f in before + after] == [f"a{i}" for i in range(30)]
    gapless(before + after)
    got = await take(laptop, 20, "remote frames at the laptop")
    assert [f["data"]["c"] for f in got] == [f"b{i}" for i in range(10, 30)]
    gapless(got)
    inside = await take(screen, 20, "frames inside the room")
    assert [f["data"]["c"] for f in inside] == [f"s{i}" for i in range(10, 30)]
    for c in (remote, laptop, screen):
        assert await c.recv_within(0.5, lambda f: "seq" in f) == []
    assert metric(pod2, "roomwire_ws_connections") == 2  # the edge and the remote peer
    assert metric(pod2, "roomwire_sessions") == 3


async def test_what_overflows_the_upstream_queue_is_refused_to_its_sender(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = two_pods(start_pod, redis_url)
    proxy = CuttableProxy(pod1.port)
    await proxy.start()
    try:
        edge = start_edge(
            "hall",
            upstream_urls=[f"ws://127.0.0.1:{proxy.port}/edge"],
            args=["--upstream-queue", "10"],
        )
        laptop = await device(clients, edge.ws_url, "laptop", "participant")
        await until(lambda: edge.linked(1), 10, "edge linked")
        remote = clients(pod2.ws_url)
        await remote.connect()
        await remote.join("hall", "remote")
        assert (await laptop.recv())["peer"] == "remote"
        proxy.cut()
        await until(lambda: not edge.status()["connected"], 5, "the edge to see the cut")
        for i in range(15):
            await laptop.relay("candidate", "remote", {"c": i}, frame_id=i)
        refused = [await laptop.recv(5) for _ in range(5)]
        assert [(f["type"], f["code"], f["id"]) for f in refused] == [
            ("error", "unavailable", i) for i in range(10, 15)
        ]
        assert "upstream queue is full" in refused[0]["message"]
        proxy.restore()
        got = await take(remote, 10, "the queued frames")
        assert [f["data"]["c"] for f in got] == list(range(10))
        acks = [await laptop.recv(5) for _ in range(10)]
        assert acks == [{"type": "ack", "id": i} for i in range(10)]
        assert await remote.recv_within(0.5, lambda f: "seq" in f) == []
        assert "roomwire_edge_upstream_refused_total 5" in edge.get("/metrics")
    finally:
        await proxy.close()


async def test_an_outage_longer_than_the_grace_period(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    """Past the cloud's grace period (2 s here) the devices' sessions end: the remote
    participant sees them leave, and come back as new sessions once the edge is back;
    what the devices sent meanwhile is delivered then, and the room inside never
    noticed."""
    args = ["--grace", "2"]
    pod1 = start_pod(redis_url, "pod-1", args=args, wait_ready=False)
    pod2 = start_pod(redis_url, "pod-2", args=args, wait_ready=False)
    wait_ready(pod1, pod2)
    proxy = CuttableProxy(pod1.port)
    await proxy.start()
    try:
        edge = start_edge("hall", upstream_urls=[f"ws://127.0.0.1:{proxy.port}/edge"])
        screen = await device(clients, edge.ws_url, "screen", "screen")
        laptop = await device(clients, edge.ws_url, "laptop", "participant")
        await screen.recv_until(lambda f: f.get("peer") == "laptop")
        await until(lambda: edge.linked(2), 10, "edge linked")
        remote = clients(pod2.ws_url)
        await remote.connect()
        await remote.join("hall", "remote")
        for c in (screen, laptop):
            await c.recv_until(lambda f: f.get("peer") == "remote")
        proxy.cut()
        gone = [await remote.recv_until(lambda f: f["type"] == "peer-left", 15) for _ in range(2)]
        assert sorted(f["peer"] for f in gone) == ["laptop", "screen"]
        for i in range(5):
            await laptop.relay("candidate", "remote", {"c": i})
            await laptop.relay("candidate", "screen", {"c": f"in{i}"})
        inside = await take(screen, 5, "the room inside")
        assert [f["data"]["c"] for f in inside] == [f"in{i}" for i in range(5)]
        gapless(inside)
        proxy.restore()
        await until(lambda: edge.linked(2), 15, "edge linked again")
        back = [await remote.recv_until(lambda f: f["type"] == "peer-joined", 10) for _ in range(2)]
        assert sorted(f["peer"] for f in back) == ["laptop", "screen"]
        got = await take(remote, 5, "what the laptop sent meanwhile")
        assert [f["data"]["c"] for f in got] == list(range(5))
        # The devices were told nothing: the remote peer never left, for them.
        assert await screen.recv_within(1.0, lambda f: "seq" in f) == []
        assert await laptop.recv_within(0.2, lambda f: f["type"] == "error") == []
    finally:
        await proxy.close()
