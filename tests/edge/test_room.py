"""The edge's room core (``signaling.edge.room``) fed directly: device frames through
the protocol core, cloud frames as the link delivers them; what devices and the
upstream are sent is recorded by two small ports (lists). No sockets, no processes."""

from __future__ import annotations

from typing import Any

import orjson

from signaling.edge.room import Device, EdgeRoom
from signaling.protocol import Connection, Join, Limits, Role

Frame = dict[str, Any]


class Out:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed: tuple[int, str] | None = None

    def send(self, text: str) -> None:
        self.frames.append(orjson.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[Frame]:
        out, self.frames = self.frames, []
        return out


class Up:
    def __init__(self, room: EdgeRoom, room_full_at: int = 100) -> None:
        self.enabled = True
        self.sent: list[tuple[str, Frame]] = []
        self.attached: list[str] = []
        self.limit = room_full_at
        room.upstream = self

    def attach(self, d: Device) -> None:
        self.attached.append(d.peer)

    def send(self, d: Device, frame_text: str) -> bool:
        if len(self.sent) >= self.limit:
            return False
        self.sent.append((d.peer, orjson.loads(frame_text)))
        return True


def join(room: EdgeRoom, peer: str, role: str = "participant") -> tuple[Device, Out, Connection]:
    out, conn = Out(), Connection(Limits())
    [intent] = conn.receive_text(
        orjson.dumps({"type": "join", "room": room.room, "peer": peer, "role": role}).decode(), 0
    )
    assert isinstance(intent, Join)
    d = room.join(out, intent)
    conn.join_accepted(room.room, peer, Role(role))
    return d, out, conn


def send(room: EdgeRoom, d: Device, conn: Connection, frame: Frame) -> None:
    room.frames(d, conn.receive_text(orjson.dumps(frame).decode(), 0))


def test_frames_between_devices_stay_in_the_room_with_their_own_seq() -> None:
    room = EdgeRoom("r", "edge-r", Limits())
    up = Up(room)
    a, out_a, conn_a = join(room, "a")
    _, out_b, _ = join(room, "b", "screen")
    got = out_a.take()
    assert [f["type"] for f in got] == ["joined", "peer-joined"]
    assert got[1] == {"type": "peer-joined", "peer": "b", "role": "screen", "seq": 1}
    assert up.attached == ["a", "b"]
    assert [f["type"] for f in out_b.take()] == ["joined"]
    send(room, a, conn_a, {"type": "offer", "to": "b", "data": {"sdp": 1}, "id": 7})
    send(room, a, conn_a, {"type": "candidate", "to": "b", "data": {"c": 2}})
    assert out_b.take() == [
        {"type": "offer", "from": "a", "data": {"sdp": 1}, "id": 7, "seq": 1},
        {"type": "candidate", "from": "a", "data": {"c": 2}, "seq": 2},
    ]
    assert out_a.take() == [{"type": "ack", "id": 7}]
    assert up.sent == []  # nothing went to the cloud
    # A room event: to the devices here at once, and up for the remote peers (the
    # cloud acks it to the sender).
    send(room, a, conn_a, {"type": "broadcast", "topic": "chat", "data": "hi", "id": 8})
    assert out_b.take() == [
        {"type": "broadcast", "from": "a", "topic": "chat", "data": "hi", "id": 8, "seq": 3}
    ]
    assert up.sent == [("a", {"type": "broadcast", "topic": "chat", "data": "hi", "id": 8})]
    assert out_a.take() == []
    # A frame for a peer not here goes up as the device sent it, `to` kept.
    send(room, a, conn_a, {"type": "offer", "to": "far", "data": {}})
    assert up.sent[-1] == ("a", {"type": "offer", "data": {}, "to": "far"})


def test_what_the_cloud_sends_a_device_is_numbered_again_and_copies_dropped() -> None:
    room = EdgeRoom("r", "edge-r", Limits())
    Up(room)
    a, out_a, _ = join(room, "a")
    join(room, "b")
    out_a.take()
    peers = [{"peer": "b", "role": "participant"}, {"peer": "far", "role": "screen"}]
    joined = {"type": "joined", "resume": "T", "resumed": False, "peers": peers}
    room.from_cloud("a", joined)
    # b is local (announced by the edge already); far is remote and new to a.
    assert out_a.take() == [{"type": "peer-joined", "peer": "far", "role": "screen", "seq": 2}]
    assert a.cloud_resume == "T" and room.remote == {"far": "screen"}
    offer = {"type": "offer", "from": "far", "data": {}, "rn": 4, "seq": 1}
    room.from_cloud("a", dict(offer))
    room.from_cloud("a", dict(offer))  # re-sent on a resume of the link: a copy
    assert out_a.take() == [{"type": "offer", "from": "far", "data": {}, "seq": 3}]
    assert (a.cloud_seq, a.cloud_rn) == (1, 4)
    # A frame from a device here that came back down: the edge delivered it already.
    room.from_cloud("a", {"type": "broadcast", "from": "b", "data": 1, "seq": 2})
    # Notices about devices here: the edge's own.
    room.from_cloud("a", {"type": "peer-left", "peer": "b", "role": "participant", "seq": 3})
    assert out_a.take() == []
    room.from_cloud("a", {"type": "ack", "id": 5})
    assert out_a.take() == [{"type": "ack", "id": 5}]
    room.from_cloud("a", {"type": "peer-left", "peer": "far", "role": "screen", "seq": 4})
    assert out_a.take() == [{"type": "peer-left", "peer": "far", "role": "screen", "seq": 4}]
    assert room.remote == {}


def test_a_full_upstream_queue_is_reported_to_the_sender() -> None:
    room = EdgeRoom("r", "edge-r", Limits())
    Up(room, room_full_at=1)
    a, out_a, conn_a = join(room, "a")
    out_a.take()
    send(room, a, conn_a, {"type": "offer", "to": "far", "data": {}, "id": 1})
    send(room, a, conn_a, {"type": "offer", "to": "far", "data": {}, "id": 2})
    [err] = out_a.take()
    assert (err["type"], err["code"], err["id"]) == ("error", "unavailable", 2)


def test_leave_tells_the_room_and_the_cloud() -> None:
    room = EdgeRoom("r", "edge-r", Limits())
    up = Up(room)
    a, _, _ = join(room, "a")
    _, out_b, _ = join(room, "b")
    out_b.take()
    a.cloud_resume = "T"  # attached
    room.leave(a)
    assert out_b.take() == [{"type": "peer-left", "peer": "a", "role": "participant", "seq": 1}]
    assert up.sent == [("a", {"type": "leave"})]
    assert "a" not in room.devices


def test_joins_the_edge_refuses() -> None:
    room = EdgeRoom("r", "edge-r", Limits(max_peers_per_room=2))
    Up(room)
    join(room, "a")
    room.remote["far"] = "participant"
    out, conn = Out(), Connection(Limits())
    [intent] = conn.receive_text('{"type":"join","room":"r","peer":"c","role":"participant"}', 0)
    assert isinstance(intent, Join)
    try:
        room.join(out, intent)
    except Exception as e:
        assert getattr(e, "code", None) == "room-full"
    else:
        raise AssertionError("a third peer joined a room of two")
    [intent] = Connection(Limits()).receive_text(
        '{"type":"join","room":"other","peer":"c","role":"participant"}', 0
    )
    assert isinstance(intent, Join)
    try:
        room.join(Out(), intent)
    except Exception as e:
        assert getattr(e, "code", None) == "unauthorized"


def test_backoff_doubles_to_its_ceiling_with_jitter_in_the_upper_half() -> None:
    from signaling.edge.upstream import backoff, edge_url

    lows = [backoff(n, 0.2, 5.0, 0.0) for n in range(1, 9)]
    highs = [backoff(n, 0.2, 5.0, 0.999999) for n in range(1, 9)]
    assert [round(x, 2) for x in lows] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5, 2.5]
    assert [round(x, 2) for x in highs] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert backoff(10_000, 0.2, 5.0, 0.5) == 3.75  # no overflow after a long outage
    assert edge_url("ws://10.0.0.7:8080/ws") == "ws://10.0.0.7:8080/edge"
    assert edge_url("ws://svc:8080/edge") == "ws://svc:8080/edge"


def test_a_remote_peer_that_comes_into_the_room_is_local_from_then_on() -> None:
    room = EdgeRoom("r", "edge-r", Limits())
    Up(room)
    a, out_a, _ = join(room, "a")
    out_a.take()
    room.from_cloud("a", {"type": "peer-joined", "peer": "tab", "role": "participant", "seq": 1})
    assert out_a.take()[0]["peer"] == "tab" and room.remote == {"tab": "participant"}
    _, out_tab, _ = join(room, "tab")
    [joined] = out_tab.take()
    assert joined["peers"] == [{"peer": "a", "role": "participant"}]
    assert room.remote == {} and "tab" not in a.known_remote
    # The edge says it joined (a saw it as remote, now it is here).
    assert out_a.take() == [{"type": "peer-joined", "peer": "tab", "role": "participant", "seq": 2}]
