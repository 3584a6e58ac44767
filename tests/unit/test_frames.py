"""The frames the server builds itself (``signaling.protocol``'s builders), checked as
the exact text that goes on the wire: field names, their order and when each is sent.

Pure functions only: no sockets, no Redis.
"""

from __future__ import annotations

from signaling.protocol import (
    ErrorCode,
    Handover,
    Role,
    ack,
    encode_frame,
    error,
    joined,
    migrate,
    peer_joined,
    peer_left,
    pong,
    reconnect,
)


def test_joined_for_a_new_session() -> None:
    frame = joined(
        room="r",
        peer="alice",
        role=Role.SCREEN,
        session="s1",
        resume="tok",
        peers=[("bob", "participant")],
        epoch="e1",
        offset=7,
        pod="pod-1",
    )
    assert encode_frame(frame) == (
        '{"type":"joined","room":"r","peer":"alice","role":"screen","session":"s1",'
        '"resume":"tok","peers":[{"peer":"bob","role":"participant"}],"epoch":"e1",'
        '"offset":7,"pod":"pod-1","resumed":false}'
    )


def test_joined_on_a_resume_says_what_was_handed_over_and_echoes_the_id() -> None:
    frame = joined(
        room="r",
        peer="alice",
        role=Role.PARTICIPANT,
        session="s1",
        resume="tok",
        peers=iter([]),
        epoch="",
        offset=0,
        pod="pod-2",
        handover=Handover(kept=3, dropped=1),
        frame_id="j1",
    )
    assert encode_frame(frame) == (
        '{"type":"joined","room":"r","peer":"alice","role":"participant","session":"s1",'
        '"resume":"tok","peers":[],"epoch":"","offset":0,"pod":"pod-2","resumed":true,'
        '"kept":3,"dropped":1,"id":"j1"}'
    )


def test_an_integer_id_is_echoed_as_it_came() -> None:
    frame = joined(
        room="r",
        peer="p",
        role=Role.EDGE,
        session="s",
        resume="t",
        peers=(),
        epoch="",
        offset=0,
        pod="x",
        frame_id=0,
    )
    assert frame["id"] == 0 and frame["resumed"] is False
    assert "kept" not in frame and "dropped" not in frame


def test_room_notices_carry_peer_and_role() -> None:
    assert encode_frame(peer_joined("bob", "screen")) == (
        '{"type":"peer-joined","peer":"bob","role":"screen"}'
    )
    assert encode_frame(peer_left("bob", "screen")) == (
        '{"type":"peer-left","peer":"bob","role":"screen"}'
    )


def test_moves_carry_the_resume_token() -> None:
    assert encode_frame(migrate("ws://b/ws", "tok")) == (
        '{"type":"migrate","url":"ws://b/ws","resume":"tok"}'
    )
    assert encode_frame(reconnect(250, "tok")) == (
        '{"type":"reconnect","after_ms":250,"resume":"tok"}'
    )


def test_connection_frames() -> None:
    assert encode_frame(pong()) == '{"type":"pong"}'
    assert encode_frame(ack(5)) == '{"type":"ack","id":5}'
    assert encode_frame(error(ErrorCode.UNKNOWN_PEER, "no peer 'x'", "f1")) == (
        '{"type":"error","code":"unknown-peer","message":"no peer \'x\'","id":"f1"}'
    )
    assert "id" not in error(ErrorCode.BAD_JSON, "frame is not valid JSON")
