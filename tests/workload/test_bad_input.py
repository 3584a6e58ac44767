"""Every bad input gets its clear answer and nothing else breaks.

One table of bad frames, run against real server processes in both registries. After
each bad frame the same connection still relays valid traffic (unless the answer is a
close), and a bystander pair of peers in another room keeps working throughout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from signaling import tokens
from signaling.client import Client, Closed
from tests.conftest import PodFactory

from .conftest import Pods, joined

# (name, joined first?, frame as text, expected error code)
TABLE: list[tuple[str, bool, str, str]] = [
    ("not json", True, "{nope", "bad-json"),
    ("json array", True, "[1, 2]", "bad-frame"),
    ("json string", True, '"join"', "bad-frame"),
    ("no type", True, '{"to": "bob"}', "bad-frame"),
    ("type not a string", True, '{"type": 5}', "bad-frame"),
    ("unknown type", True, '{"type": "teleport"}', "unknown-type"),
    ("offer before join", False, '{"type": "offer", "to": "bob", "data": {}}', "not-joined"),
    (
        "broadcast before join",
        False,
        '{"type": "broadcast", "topic": "chat", "data": 1}',
        "not-joined",
    ),
    (
        "second join",
        True,
        '{"type": "join", "room": "r", "peer": "x", "role": "participant"}',
        "already-joined",
    ),
    (
        "join without room",
        False,
        '{"type": "join", "peer": "x", "role": "participant"}',
        "bad-frame",
    ),
    (
        "join with a bad role",
        False,
        '{"type": "join", "room": "r", "peer": "x", "role": "god"}',
        "bad-frame",
    ),
    (
        "join with a bad peer id",
        False,
        '{"type": "join", "room": "r", "peer": "../x", "role": "participant"}',
        "bad-frame",
    ),
    ("offer without to", True, '{"type": "offer", "data": {"sdp": "x"}}', "bad-frame"),
    ("offer with to a number", True, '{"type": "offer", "to": 3, "data": {}}', "bad-frame"),
    ("offer with data a string", True, '{"type": "offer", "to": "bob", "data": "x"}', "bad-frame"),
    ("candidate without data", True, '{"type": "candidate", "to": "bob"}', "bad-frame"),
    ("broadcast without topic", True, '{"type": "broadcast", "data": 1}', "bad-frame"),
    ("id of a bad type", True, '{"type": "ping", "id": [1]}', "bad-frame"),
    (
        "relay to an unknown peer",
        True,
        '{"type": "offer", "to": "nobody", "data": {}}',
        "unknown-peer",
    ),
    ("control from a participant", True, '{"type": "control", "data": {"a": 1}}', "forbidden"),
    # Not JSON, though some parsers take them: refused rather than passed on to browsers.
    ("NaN", True, '{"type": "offer", "to": "bob", "data": {"x": NaN}}', "bad-json"),
    (
        "lone surrogate",
        True,
        '{"type": "offer", "to": "bob", "data": {"x": "\\ud800"}}',
        "bad-json",
    ),
    (
        "data nested 300 deep",
        True,
        '{"type": "offer", "to": "bob", "data": {"x": ' + "[" * 300 + "]" * 300 + "}}",
        "bad-frame",
    ),
]


async def _expect_error(c: Client, code: str) -> dict[str, Any]:
    frame = await c.recv_until(lambda f: f["type"] == "error", timeout=5)
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"]
    return frame


async def _bystanders_ok(x: Client, y: Client, n: int) -> None:
    await x.relay("offer", "y", {"n": n})
    frame = await y.recv_until(lambda f: f["type"] == "offer")
    assert frame["data"] == {"n": n} and frame["from"] == "x"


async def test_table_of_bad_frames(pods: Pods, clients: Callable[..., Client]) -> None:
    x = await joined(clients, pods.url_a, "bystanders", "x")
    y = await joined(clients, pods.url_b, "bystanders", "y")
    bob = await joined(clients, pods.url_b, "bad-room", "bob")
    for i, (name, join_first, text, code) in enumerate(TABLE):
        c = clients(pods.url_a)
        await c.connect()
        if join_first:
            await c.join("bad-room", f"alice{i}")
        await c.send_raw(text)
        err = await _expect_error(c, code)
        assert "id" not in err or name == "id of a bad type", name
        # The same connection still works.
        await c.send({"type": "ping"})
        assert (await c.recv_until(lambda f: f["type"] == "pong"))["type"] == "pong", name
        if join_first:
            await c.relay("offer", "bob", {"case": name}, frame_id=i)
            assert (await c.recv_until(lambda f: f["type"] == "ack"))["id"] == i, name
            got = await bob.recv_until(lambda f: f["type"] == "offer")
            assert got["data"] == {"case": name}
        await c.close()
        await _bystanders_ok(x, y, i)


async def test_error_echoes_the_frame_id(pods: Pods, clients: Callable[..., Client]) -> None:
    c = await joined(clients, pods.url_a, "room-id", "alice")
    await c.send({"type": "offer", "to": "ghost", "data": {}, "id": "q-9"})
    err = await _expect_error(c, "unknown-peer")
    assert err["id"] == "q-9"


async def test_oversized_frame_closes_with_1009(pods: Pods, clients: Callable[..., Client]) -> None:
    x = await joined(clients, pods.url_a, "bystanders", "x")
    y = await joined(clients, pods.url_b, "bystanders", "y")
    c = await joined(clients, pods.url_a, "big", "alice")
    await c.send({"type": "broadcast", "topic": "chat", "data": "x" * (64 * 1024 + 10)})
    assert await c.wait_closed() == 1009
    await _bystanders_ok(x, y, 1)


async def test_frame_just_under_the_limit_passes(
    pods: Pods, clients: Callable[..., Client]
) -> None:
    a = await joined(clients, pods.url_a, "big2", "alice")
    b = await joined(clients, pods.url_b, "big2", "bob")
    payload = "x" * (64 * 1024 - 200)
    await a.relay("offer", "bob", {"sdp": payload})
    got = await b.recv_until(lambda f: f["type"] == "offer")
    assert got["data"]["sdp"] == payload


async def test_flood_over_the_rate_limit(pods: Pods, clients: Callable[..., Client]) -> None:
    x = await joined(clients, pods.url_a, "bystanders", "x")
    y = await joined(clients, pods.url_b, "bystanders", "y")
    c = await joined(clients, pods.url_a, "flood", "alice")
    for i in range(130):  # burst allowance is 100
        await c.send({"type": "ping", "id": i})
    frames = []
    deadline = time.monotonic() + 10
    while len(frames) < 130 and time.monotonic() < deadline:
        frames.append(await c.recv())
    limited = [f for f in frames if f["type"] == "error"]
    assert limited and all(f["code"] == "rate-limited" for f in limited)
    assert sum(1 for f in frames if f["type"] == "pong") >= 99  # the join took one token
    await _bystanders_ok(x, y, 2)
    # Once the bucket refills the connection is served again (bounded retries).
    for _ in range(50):
        await c.send({"type": "ping"})
        if (await c.recv())["type"] == "pong":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("still rate-limited after 2.5 s")


async def test_repeated_abuse_closes(pods: Pods, clients: Callable[..., Client]) -> None:
    c = await joined(clients, pods.url_a, "abuse", "alice")
    with pytest.raises(Closed):
        for _ in range(80):
            await c.send_raw("{nope")
            await c.recv()
    assert c.close_code == 4003


SECRET = "test-secret"


def _token(**claims: Any) -> str:
    base: dict[str, Any] = {
        "room": "secure",
        "peer": "alice",
        "role": "participant",
        "exp": time.time() + 60,
    }
    base.update(claims)
    return tokens.encode(base, SECRET)


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("missing", None),
        ("garbage", "not.a.jwt"),
        (
            "bad signature",
            tokens.encode(
                {"room": "secure", "peer": "alice", "role": "participant"}, "other-secret"
            ),
        ),
        ("expired", "EXPIRED"),
        ("other room", "OTHER_ROOM"),
        ("other role", "OTHER_ROLE"),
    ],
)
async def test_bad_tokens_are_refused_with_1008(
    start_pod: PodFactory, clients: Callable[..., Client], name: str, token: str | None
) -> None:
    pod = start_pod(args=["--token-secret", SECRET])
    token = {
        "EXPIRED": _token(exp=time.time() - 60),  # beyond the leeway (5 s)
        "OTHER_ROOM": _token(room="elsewhere"),
        "OTHER_ROLE": _token(role="controller"),
    }.get(token or "", token)
    good = clients(pod.ws_url)
    await good.connect()
    await good.join("secure", "bob", token=_token(peer="bob"))
    c = clients(pod.ws_url)
    await c.connect()
    frame: dict[str, Any] = {
        "type": "join",
        "room": "secure",
        "peer": "alice",
        "role": "participant",
    }
    if token is not None:
        frame["token"] = token
    await c.send_raw(json.dumps(frame))
    await _expect_error(c, "unauthorized")
    assert await c.wait_closed() == 1008
    # The valid session is untouched, and a valid token still joins.
    ok = clients(pod.ws_url)
    await ok.connect()
    await ok.join("secure", "alice", token=_token())
    await ok.relay("offer", "bob", {"x": 1})
    assert (await good.recv_until(lambda f: f["type"] == "offer"))["from"] == "alice"
