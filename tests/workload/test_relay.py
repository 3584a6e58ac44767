"""Relay, room events and membership between two peers, on one pod and across two pods.

Real server processes and, in ``redis`` mode, a real Redis; the peers are real
WebSocket clients. In ``redis`` mode A is on pod 1 and B on pod 2, so every frame
between them crosses pods through the inbox of the other pod.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from signaling.client import Client

from .conftest import Pods, joined


def plain(frame: dict[str, object]) -> dict[str, object]:
    """The frame without ``rn`` (present on frames that crossed pods)."""
    return {k: v for k, v in frame.items() if k != "rn"}


async def test_join_answers_joined_with_peers_and_tells_the_room(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    a = await joined(clients, pods.url_a, "room-1", "alice")
    assert a.joined["peers"] == []
    assert a.joined["resume"] and a.joined["session"]
    assert isinstance(a.joined["epoch"], str) and a.joined["offset"] == 0
    b = await joined(clients, pods.url_b, "room-1", "bob", "screen")
    assert b.joined["peers"] == [{"peer": "alice", "role": "participant"}]
    note = plain(await a.recv())
    assert note == {"type": "peer-joined", "peer": "bob", "role": "screen", "seq": 1}


async def test_signaling_crosses_with_from_stamped_and_seq_without_gaps(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    a = await joined(clients, pods.url_a, "room-2", "alice")
    b = await joined(clients, pods.url_b, "room-2", "bob")
    assert (await a.recv())["type"] == "peer-joined"
    # A client-supplied `from` is ignored: the server stamps the sender.
    await a.send({"type": "offer", "to": "bob", "from": "mallory", "data": {"sdp": "v=0"}})
    await b.send({"type": "answer", "to": "alice", "data": {"sdp": "v=0 answer"}})
    for i in range(20):
        await a.relay("candidate", "bob", {"candidate": f"c{i}"})
        await b.relay("candidate", "alice", {"candidate": f"d{i}"})
    await a.broadcast("chat", {"text": "hello"})
    await b.broadcast("whiteboard", {"stroke": [1, 2, 3]})

    got_b = [await b.recv() for _ in range(22)]
    got_a = [await a.recv() for _ in range(22)]
    assert plain(got_b[0]) == {"type": "offer", "from": "alice", "data": {"sdp": "v=0"}, "seq": 1}
    assert [f["data"]["candidate"] for f in got_b[1:21]] == [f"c{i}" for i in range(20)]
    assert all(f["from"] == "alice" for f in got_b)
    chat = got_b[21]
    assert chat["type"] == "broadcast" and chat["topic"] == "chat"
    assert chat["data"] == {"text": "hello"} and chat["offset"] >= 1
    assert [f["seq"] for f in got_b] == list(range(1, 23))

    assert got_a[0]["type"] == "answer" and got_a[0]["from"] == "bob"
    assert [f["seq"] for f in got_a] == list(range(2, 24))  # 1 was peer-joined
    assert got_a[-1]["topic"] == "whiteboard" and got_a[-1]["from"] == "bob"
    # Both broadcasts went to the room's stream: consecutive offsets, one epoch.
    assert {got_a[-1]["offset"], chat["offset"]} == {1, 2}
    assert got_a[-1]["epoch"] == chat["epoch"] == a.joined["epoch"]


async def test_ack_for_frames_with_an_id_and_ping(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    a = await joined(clients, pods.url_a, "room-3", "alice")
    b = await joined(clients, pods.url_b, "room-3", "bob")
    await a.recv()
    await a.relay("offer", "bob", {"sdp": "x"}, frame_id="o-1")
    assert await a.recv() == {"type": "ack", "id": "o-1"}
    assert (await b.recv())["id"] == "o-1"
    await a.broadcast("chat", {"t": 1}, frame_id=7)
    assert await a.recv() == {"type": "ack", "id": 7}
    await a.send({"type": "ping"})
    assert await a.recv() == {"type": "pong"}


async def test_control_reaches_only_screens(pods: Pods, clients: Callable[..., Client]) -> None:
    ctl = await joined(clients, pods.url_a, "room-4", "panel", "controller")
    screen = await joined(clients, pods.url_b, "room-4", "tv", "screen")
    guest = await joined(clients, pods.url_b, "room-4", "guest")
    await ctl.send({"type": "control", "data": {"action": "next-slide"}, "id": "c1"})
    assert (await ctl.recv_until(lambda f: f["type"] == "ack")) == {"type": "ack", "id": "c1"}
    frame = await screen.recv_until(lambda f: f["type"] == "control")
    assert frame["from"] == "panel" and frame["data"] == {"action": "next-slide"}
    # The participant sees the join of nobody after it and no control frame.
    await guest.send({"type": "ping"})
    assert (await guest.recv()) == {"type": "pong"}


async def test_leave_and_peer_left(pods: Pods, clients: Callable[..., Client]) -> None:
    a = await joined(clients, pods.url_a, "room-5", "alice")
    b = await joined(clients, pods.url_b, "room-5", "bob")
    await a.recv()
    await b.send({"type": "leave"})
    assert await b.wait_closed() == 1000
    left = plain(await a.recv())
    assert left == {"type": "peer-left", "peer": "bob", "role": "participant", "seq": 2}
    await a.relay("offer", "bob", {"sdp": "x"}, frame_id=1)
    err = await a.recv()
    assert err["type"] == "error" and err["code"] == "unknown-peer" and err["id"] == 1


@pytest.mark.parametrize("n_peers", [6])
async def test_many_peers_in_one_room(
    pods: Pods, clients: Callable[..., Client], n_peers: int
) -> None:
    peers = []
    for i in range(n_peers):
        url = pods.url_a if i % 2 == 0 else pods.url_b
        peers.append(await joined(clients, url, "room-6", f"p{i}"))
    await peers[0].broadcast("chat", {"n": 1})
    for p in peers[1:]:
        frame = await p.recv_until(lambda f: f["type"] == "broadcast")
        assert frame["from"] == "p0"
