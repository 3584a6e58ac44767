"""The sans-I/O protocol core, on its own: frames and time in, intents out.

Nothing runs but pure functions: the core (``signaling.protocol``, ``signaling.tokens``,
``signaling.control``) and two codecs of the adapters (the compact inbox framing and the
directly written WebSocket text frame); no sockets, no Redis.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from roomwire_contract import control
from signaling import tokens
from signaling.protocol import (
    Close,
    CloseCode,
    Connection,
    Join,
    Leave,
    Limits,
    Relay,
    ResumeClaim,
    Role,
    RoomEvent,
    Send,
    make_resume_token,
    read_resume_token,
)


def joined(role: Role = Role.PARTICIPANT, **limits: float) -> Connection:
    c = Connection(Limits(**limits))  # type: ignore[arg-type]
    [intent] = c.receive_text(
        json.dumps({"type": "join", "room": "r", "peer": "me", "role": role.value}), 0.0
    )
    assert isinstance(intent, Join)
    c.join_accepted("r", "me", role)
    return c


def error_code(intents: list[object]) -> str:
    assert intents and isinstance(intents[0], Send), intents
    assert intents[0].frame["type"] == "error"
    return str(intents[0].frame["code"])


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "bad-json"),
        ("[]", "bad-frame"),
        ("null", "bad-frame"),
        ('{"type": null}', "bad-frame"),
        ('{"type": "x"}', "unknown-type"),
        ('{"type": "offer", "to": "a", "data": {}}', "not-joined"),
        ('{"type": "join", "room": "", "peer": "p", "role": "screen"}', "bad-frame"),
        (
            '{"type": "join", "room": "r", "peer": "p", "role": "screen", "last_seq": -1}',
            "bad-frame",
        ),
        ('{"type": "join", "room": "r", "peer": "p", "role": "screen", "id": true}', "bad-frame"),
    ],
)
def test_bad_frames_before_join(text: str, code: str) -> None:
    c = Connection()
    assert error_code(c.receive_text(text, 0.0)) == code
    assert not c.closed


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "offer", "data": {}}, "bad-frame"),
        ({"type": "offer", "to": "me", "data": {}}, "bad-frame"),
        ({"type": "answer", "to": "x", "data": []}, "bad-frame"),
        ({"type": "broadcast", "topic": "", "data": 1}, "bad-frame"),
        ({"type": "control", "data": {}}, "forbidden"),
        ({"type": "join", "room": "r", "peer": "p", "role": "screen"}, "already-joined"),
    ],
)
def test_bad_frames_after_join(frame: dict[str, object], code: str) -> None:
    assert error_code(joined().receive_text(json.dumps(frame), 1.0)) == code


def test_relay_is_stamped_with_from_and_never_trusts_the_client() -> None:
    c = joined()
    [relay] = c.receive_text(
        json.dumps({"type": "offer", "to": "b", "from": "evil", "data": {"sdp": 1}, "id": 4}), 1
    )
    out = {"type": "offer", "from": "me", "data": {"sdp": 1}, "id": 4}
    # the encoded text is the wire form: compact, in the frame's key order
    assert relay == Relay("b", out, 4, json.dumps(out, separators=(",", ":")))


def test_broadcast_and_control_are_room_events() -> None:
    [b] = joined().receive_text('{"type": "broadcast", "topic": "chat", "data": "hi"}', 1)
    out = {"type": "broadcast", "from": "me", "topic": "chat", "data": "hi"}
    assert b == RoomEvent(out, False, None, json.dumps(out, separators=(",", ":")))
    ctl = joined(Role.CONTROLLER)
    [e] = ctl.receive_text('{"type": "control", "data": {"go": 1}}', 1)
    assert isinstance(e, RoomEvent) and e.screens_only
    [r] = ctl.receive_text('{"type": "control", "to": "tv", "data": {"go": 1}}', 1)
    assert isinstance(r, Relay) and r.to == "tv"


def test_relayed_text_keeps_non_ascii_and_refuses_what_it_cannot_encode() -> None:
    [r] = joined().receive_text('{"type": "offer", "to": "b", "data": {"n": "Zoë 会议"}}', 1)
    assert isinstance(r, Relay) and "Zoë 会议" in r.text
    deep = '{"type": "offer", "to": "b", "data": ' + "[" * 300 + "]" * 300 + "}"
    assert error_code(joined().receive_text(deep, 1)) == "bad-frame"


def test_ping_and_leave() -> None:
    c = joined()
    assert c.receive_text('{"type": "ping"}', 1) == [Send({"type": "pong"})]
    assert c.receive_text('{"type": "leave"}', 1) == [Leave(), Close(CloseCode.NORMAL, "left")]
    assert c.closed and c.receive_text('{"type": "ping"}', 1) == []


def test_rate_limit_then_refill() -> None:
    c = joined(rate_per_s=10, rate_burst=5)
    results = [c.receive_text('{"type": "ping"}', 1.0) for _ in range(6)]
    assert [r[0].frame["type"] for r in results if isinstance(r[0], Send)] == (
        ["pong"] * 5 + ["error"]  # the bucket refilled to its burst since the join
    )
    assert error_code(results[-1]) == "rate-limited"
    assert c.receive_text('{"type": "ping"}', 2.0)[0] == Send({"type": "pong"})


def test_repeated_abuse_closes_with_4003() -> None:
    c = joined(abuse_errors=3)
    out: list[object] = []
    for i in range(5):
        out = list(c.receive_text("{", float(i) * 0.01))
    assert Close(CloseCode.ABUSE, "too many bad frames") in out or c.closed


SECRET = "s3cret"


def auth_join(token: str | None, **over: str) -> list[object]:
    c = Connection(auth=tokens.JoinPolicy(SECRET))
    frame = {"type": "join", "room": "r", "peer": "p", "role": "screen", **over}
    if token is not None:
        frame["token"] = token
    return list(c.receive_text(json.dumps(frame), 0.0))


def test_tokens() -> None:
    good = tokens.encode(
        {"room": "r", "peer": "p", "role": "screen", "exp": time.time() + 60}, SECRET
    )
    assert isinstance(auth_join(good)[0], Join)
    for bad in [
        None,
        "x.y.z",
        tokens.encode({"room": "r", "peer": "p", "role": "screen", "exp": time.time() + 60}, "no"),
        tokens.encode({"room": "r", "peer": "p", "role": "screen", "exp": 1}, SECRET),
        tokens.encode(
            {"room": "r", "peer": "q", "role": "screen", "exp": time.time() + 60}, SECRET
        ),
    ]:
        out = auth_join(bad)
        assert error_code(out) == "unauthorized"
        assert out[-1] == Close(CloseCode.POLICY, "unauthorized")


def test_resume_tokens_are_bound_to_room_and_peer() -> None:
    claim = ResumeClaim("sid1", "r", "p", Role.SCREEN)
    token = make_resume_token(SECRET, claim)
    assert read_resume_token(SECRET, token, "r", "p") == claim
    for room, peer, secret in [("r2", "p", SECRET), ("r", "q", SECRET), ("r", "p", "other")]:
        with pytest.raises(tokens.TokenError):
            read_resume_token(secret, token, room, peer)
    join_token = tokens.encode({"room": "r", "peer": "p", "role": "screen"}, SECRET)
    with pytest.raises(tokens.TokenError):
        read_resume_token(SECRET, join_token, "r", "p")


def test_operator_commands_are_signed_and_fresh() -> None:
    msg = control.sign("k", {"op": "drain"})
    assert control.verify("k", msg) == msg["cmd"]
    assert control.verify("other", msg) is None
    assert control.verify("", msg) is None
    tampered = {**msg, "cmd": {**msg["cmd"], "op": "reconnect"}}
    assert control.verify("k", tampered) is None
    assert control.verify("k", msg, now=msg["cmd"]["ts"] + 3600) is None


def test_asyncapi_document_names_every_type_and_error_code() -> None:
    from pathlib import Path

    import yaml

    from signaling.protocol import CLIENT_TYPES, ErrorCode

    doc = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())
    text = json.dumps(doc)
    for kind in CLIENT_TYPES:
        assert f'"{kind}"' in text, kind
    errors = doc["components"]["messages"]["error"]["payload"]["properties"]["code"]["enum"]
    assert set(errors) == {str(c) for c in ErrorCode}


def test_compact_inbox_messages_decode() -> None:
    from roomwire_contract.inbox import decode_inbox

    frame = '{"type":"offer","from":"a","data":{"x":"a\\u001fb\\u001e|,"}}'
    other = '{"type":"answer","from":"c","data":{}}'
    one = decode_inbox(b"b\x1f1700000000.25\x1er\x1fp\x1fsid1\x1f7\x1f" + frame.encode())
    assert one == {"k": "batch", "t": 1700000000.25, "frames": [("r", "p", "sid1", 7, frame)]}
    two = decode_inbox(
        b"b\x1f1.5\x1er\x1fp\x1fsid1\x1f7\x1f"
        + frame.encode()
        + b"\x1er\x1fq\x1fsid2\x1f3\x1f"
        + other.encode()
    )
    assert two is not None and two["frames"] == [
        ("r", "p", "sid1", 7, frame),
        ("r", "q", "sid2", 3, other),
    ]
    r = decode_inbox(b"r\x1f1.5\x1froom\x1fp1,p2\x1fs1,s2\x1f3,4\x1f" + frame.encode())
    assert r == {
        "k": "batch",
        "t": 1.5,
        "frames": [("room", "p1", "s1", 3, frame), ("room", "p2", "s2", 4, frame)],
    }
    assert decode_inbox(b'{"k": "takeover", "sid": "s"}') == {"k": "takeover", "sid": "s"}
    bad_ones = [
        b"b\x1fonly",
        b"b\x1f1.5\x1er\x1fp\x1fsid1\x1fx\x1f{}",
        b"b\x1f1.5\x1esid1",
        b"not json",
        b"[1]",
        b"r\x1fx\x1froom\x1fp\x1fs\x1fn\x1f{}",
        b"r\x1f1.5\x1froom\x1fp1,p2\x1fs1,s2\x1f3\x1f{}",
    ]
    for bad in bad_ones:
        assert decode_inbox(bad) is None, bad


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_written_directly_follow_rfc_6455(size: int) -> None:
    import struct

    from signaling.hub.wsframes import text_frame

    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN, text
    if size < 126:
        assert frame[1] == size and frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size
        assert frame[4:] == payload
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size
        assert frame[10:] == payload


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_emit_writes_straight_to_the_transport_on_either_loop(loop: str) -> None:
    """The direct path (no task, no queue) must be taken on both event loops: uvloop's
    transports are not asyncio.WriteTransport subclasses, and an isinstance check once
    sent every frame through the slow queued path there."""
    import types

    import uvloop

    from signaling.hub.attachment import Attachment
    from signaling.hub.wsframes import text_frame

    async def main() -> None:
        got = bytearray()
        arrived = asyncio.Event()

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.extend(await reader.readexactly(len(text_frame(b'{"a":1}'))))
            arrived.set()
            writer.close()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        ws = types.SimpleNamespace(closed=False)
        att = Attachment(ws, writer.transport)  # type: ignore[arg-type]
        att.emit('{"a":1}')
        assert att.writer is None and not att.queue  # written at once, nothing queued
        await asyncio.wait_for(arrived.wait(), 5)
        assert bytes(got) == text_frame(b'{"a":1}')
        writer.close()
        server.close()

    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
