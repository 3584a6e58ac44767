"""A device's own connection to the edge drops: the edge keeps its session for the
grace period, as a pod would; on resume the device gets what was sent to it meanwhile,
from the room and from the cloud, in order, seq without a gap; when the grace period
ends, the room and the remote participants see it leave. Real pods, Redis and edge."""

from __future__ import annotations

from collections.abc import Callable

from signaling.client import Client
from tests.conftest import PodFactory
from tests.support import wait_until

from .conftest import EdgeFactory
from .test_edge_upstream_loss import device, gapless, take


async def test_a_device_resumes_at_the_edge_and_misses_nothing(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod = start_pod(redis_url, "pod-1")
    edge = start_edge("hall", [pod], args=["--grace", "2"])
    screen = await device(clients, edge.ws_url, "screen", "screen")
    laptop = await device(clients, edge.ws_url, "laptop", "participant")
    await screen.recv_until(lambda f: f.get("peer") == "laptop")
    wait_until(lambda: edge.linked(2), 10, "edge linked")
    remote = clients(pod.ws_url)
    await remote.connect()
    await remote.join("hall", "remote")
    for c in (screen, laptop):
        await c.recv_until(lambda f: f.get("peer") == "remote")
    before = []
    for i in range(3):
        await laptop.relay("candidate", "screen", {"c": f"a{i}"})
    before += await take(screen, 3, "before the drop")

    await screen.abort()  # the screen's Wi-Fi hiccups
    for i in range(5):
        await laptop.relay("candidate", "screen", {"c": f"local{i}"})
        await remote.relay("candidate", "screen", {"c": f"remote{i}"})
    assert await laptop.recv_within(0.3, lambda f: f["type"] == "peer-left") == []
    j = await screen.resume()
    # Kept: at least the 5 from the laptop (the remote one's may still be on their way
    # through the cloud, and then arrive live).
    assert j["resumed"] is True and 5 <= j["kept"] <= 10 and j["dropped"] == 0
    assert sorted(p["peer"] for p in j["peers"]) == ["laptop", "remote"]
    after = await take(screen, 10, "what was sent meanwhile")
    gapless(before + after)
    got = [f["data"]["c"] for f in after]
    assert [c for c in got if c.startswith("local")] == [f"local{i}" for i in range(5)]
    assert [c for c in got if c.startswith("remote")] == [f"remote{i}" for i in range(5)]
    assert await screen.recv_within(0.5, lambda f: "seq" in f) == []

    # The laptop goes for good: after the edge's grace period, everyone sees it leave.
    await laptop.abort()
    for c in (screen, remote):
        f = await c.recv_until(lambda f: f["type"] == "peer-left", 10)
        assert f["peer"] == "laptop"


async def test_a_device_that_joins_the_cloud_directly_moves_out_of_the_edge(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    """The laptop leaves the room's Wi-Fi and joins the cloud directly as the same peer:
    its session there replaces the one behind the edge (4001 to its edge connection, as
    a pod does), and the devices still on the edge now reach it through the cloud."""
    pod = start_pod(redis_url, "pod-1")
    edge = start_edge("hall", [pod])
    screen = await device(clients, edge.ws_url, "screen", "screen")
    laptop = await device(clients, edge.ws_url, "laptop", "participant")
    await screen.recv_until(lambda f: f.get("peer") == "laptop")
    wait_until(lambda: edge.linked(2), 10, "edge linked")
    moved = clients(pod.ws_url)
    await moved.connect()
    j = await moved.join("hall", "laptop")
    assert [p["peer"] for p in j["peers"]] == ["screen"]
    assert await laptop.wait_closed(10) == 4001
    left = await screen.recv_until(lambda f: f["type"] == "peer-left")
    back = await screen.recv_until(lambda f: f["type"] == "peer-joined")
    assert (left["peer"], back["peer"]) == ("laptop", "laptop")
    assert back["seq"] == left["seq"] + 1
    await screen.relay("offer", "laptop", {"sdp": "to the cloud now"}, frame_id="o")
    f = await moved.recv_until(lambda f: f["type"] == "offer")
    assert (f["from"], f["data"]) == ("screen", {"sdp": "to the cloud now"})
    await moved.relay("answer", "screen", {"sdp": "back"})
    f = await screen.recv_until(lambda f: f["type"] == "answer")
    assert f["from"] == "laptop" and f["seq"] == back["seq"] + 1
    wait_until(lambda: edge.status()["devices"] == 1, 5, "one device left on the edge")
