"""Edge tokens (pure, the protocol core fed join frames): a token with ``use: edge`` is
accepted only for role ``edge`` and only for the room (and edge id) it names; a join
token is no edge token. No I/O."""

from __future__ import annotations

import orjson

from signaling import tokens
from signaling.protocol import Connection, Join, Role, Send

SECRET = "s" * 32


def join_frame(role: str, token: str, room: str = "r1", peer: str = "edge-1") -> str:
    frame = {"type": "join", "room": room, "peer": peer, "role": role, "token": token}
    return orjson.dumps(frame).decode()


def test_an_edge_token_is_accepted_for_role_edge_of_its_room_only() -> None:
    policy = tokens.JoinPolicy(SECRET)
    edge = tokens.make_join(SECRET, "r1", "edge-1", "edge", edge=True)
    plain = tokens.make_join(SECRET, "r1", "edge-1", "edge")
    device_as_edge = tokens.make_join(SECRET, "r1", "edge-1", "participant", edge=True)
    [ok] = Connection(auth=policy).receive_text(join_frame("edge", edge), 0.0)
    assert isinstance(ok, Join) and ok.role == Role.EDGE
    for frame in (
        join_frame("edge", plain),  # a join token is no edge token
        join_frame("edge", edge, room="r2"),  # another room's
        join_frame("edge", edge, peer="edge-2"),  # another edge's
        join_frame("participant", device_as_edge),  # an edge token for a device
    ):
        out = Connection(auth=policy).receive_text(frame, 0.0)
        assert isinstance(out[0], Send) and out[0].frame["code"] == "unauthorized", frame
