"""Devices on an edge and participants on the cloud in one room: real pods (two
``signaling serve`` processes on a real Redis), a real ``signaling edge`` process linked
to pod 1, devices and a remote participant as WebSocket clients. The remote participant
is on pod 2, so what passes between it and the devices crosses pods too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready
from tests.support import wait_until

from .conftest import EdgeFactory, metric

Frame = dict[str, Any]


def seqs(frames: list[Frame]) -> list[int]:
    return [f["seq"] for f in frames]


async def recv_n(c: Client, n: int) -> list[Frame]:
    return [await c.recv(5) for _ in range(n)]


def two_pods(start_pod: PodFactory, redis_url: str) -> tuple[Pod, Pod]:
    a = start_pod(redis_url, "pod-1", wait_ready=False)
    b = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(a, b)
    return a, b


async def test_devices_and_a_remote_participant_signal_both_ways(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = two_pods(start_pod, redis_url)
    edge = start_edge("boardroom", [pod1])
    screen = clients(edge.ws_url)
    await screen.connect()
    j = await screen.join("boardroom", "screen", "screen")
    assert j["peers"] == [] and j["resume"] and j["pod"] == "edge-boardroom"
    laptop = clients(edge.ws_url)
    await laptop.connect()
    j = await laptop.join("boardroom", "laptop")
    assert j["peers"] == [{"peer": "screen", "role": "screen"}]
    assert await screen.recv() == {
        "type": "peer-joined", "peer": "laptop", "role": "participant", "seq": 1
    }  # fmt: skip
    wait_until(lambda: edge.linked(2), 10, "the edge linked with both devices attached")

    # The cloud holds one WebSocket for the edge and a session per device.
    assert metric(pod1, "roomwire_ws_connections") == 1
    assert metric(pod1, "roomwire_sessions") == 2

    remote = clients(pod2.ws_url)
    await remote.connect()
    j = await remote.join("boardroom", "remote")
    assert sorted(p["peer"] for p in j["peers"]) == ["laptop", "screen"]
    for c in (screen, laptop):
        f = await c.recv()
        assert f["type"] == "peer-joined" and f["peer"] == "remote"

    # Device -> remote and back: offer, answer, candidates, with acks; `from` stamped.
    await laptop.send({"type": "offer", "to": "remote", "from": "x", "data": {"sdp": "o"}, "id": 1})
    assert (await laptop.recv())["type"] == "ack"
    await remote.send({"type": "answer", "to": "laptop", "data": {"sdp": "a"}, "id": "a1"})
    for i in range(10):
        await laptop.relay("candidate", "remote", {"c": f"l{i}"})
        await remote.relay("candidate", "laptop", {"c": f"r{i}"})
    await laptop.broadcast("chat", {"text": "from the room"})
    await remote.broadcast("chat", {"text": "from afar"})
    # A frame between devices stays in the room: the cloud never sees it.
    await laptop.relay("offer", "screen", {"sdp": "project"}, frame_id="p")

    got_remote = await recv_n(remote, 13)
    assert {"type": "ack", "id": "a1"} in got_remote
    got_remote = [f for f in got_remote if f["type"] != "ack"]
    assert got_remote[0]["type"] == "offer" and got_remote[0]["from"] == "laptop"
    assert got_remote[0]["data"] == {"sdp": "o"} and got_remote[0]["id"] == 1
    assert [f["data"]["c"] for f in got_remote[1:11]] == [f"l{i}" for i in range(10)]
    assert got_remote[11]["type"] == "broadcast" and got_remote[11]["from"] == "laptop"
    assert all(f["from"] == "laptop" for f in got_remote)
    assert seqs(got_remote) == list(range(1, 13))

    got_laptop = [f for f in await recv_n(laptop, 13) if f["type"] != "ack"]
    assert got_laptop[0]["type"] == "answer" and got_laptop[0]["from"] == "remote"
    assert [f["data"]["c"] for f in got_laptop[1:11]] == [f"r{i}" for i in range(10)]
    assert got_laptop[11]["type"] == "broadcast" and got_laptop[11]["from"] == "remote"
    # The laptop's seq runs on without a gap: 1 was peer-joined for the remote one.
    assert seqs(got_laptop) == list(range(2, 14))

    # The screen: peer-joined laptop (1) and remote (2), then both broadcasts and the
    # laptop's offer (the remote one's broadcast may come between the local two).
    got_screen = await recv_n(screen, 3)
    assert seqs(got_screen) == [3, 4, 5]
    assert sorted((f["type"], f["from"]) for f in got_screen) == [
        ("broadcast", "laptop"),
        ("broadcast", "remote"),
        ("offer", "laptop"),
    ]

    # Nothing more: no copies of local frames come back down from the cloud.
    assert await screen.recv_within(0.5, lambda f: True) == []
    assert await remote.recv_within(0.3, lambda f: True) == []

    # A device leaves: the remote participant sees it go.
    await laptop.send({"type": "leave"})
    f = await remote.recv(5)
    assert f["type"] == "peer-left" and f["peer"] == "laptop"
    assert (await screen.recv())["type"] == "peer-left"
    wait_until(lambda: metric(pod1, "roomwire_sessions") == 1, 5, "one device session left")
