"""Auth at both ends of an edge and bad or abusive devices: real pods with a token
secret on a real Redis, real edge processes. The edge's link needs an edge token for its
room; devices need join tokens, checked by the edge with the cloud's rules; bad input at
an edge gets the error codes a pod gives; a device flooding the edge is limited without
stalling the room's other devices or its upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling import tokens
from signaling.client import Client, ClientError
from tests.conftest import Pod, PodFactory, wait_ready
from tests.support import wait_until

from .conftest import EdgeFactory, EdgeProc, metric

SECRET = "edge-test-secret-of-at-least-32-bytes!"
Frame = dict[str, Any]


def pods(start_pod: PodFactory, redis_url: str) -> tuple[Pod, Pod]:
    args = ["--token-secret", SECRET]
    a = start_pod(redis_url, "pod-1", args=args, wait_ready=False)
    b = start_pod(redis_url, "pod-2", args=args, wait_ready=False)
    wait_ready(a, b)
    return a, b


def edge_of(
    start_edge: EdgeFactory, room: str, pod: Pod, token_room: str | None = None
) -> EdgeProc:
    token = tokens.make_join(SECRET, token_room or room, f"edge-{room}", "edge", edge=True)
    return start_edge(room, [pod], args=["--edge-token", token, "--token-secret", SECRET])


async def join(c: Client, room: str, peer: str, token_room: str | None = None) -> Frame:
    await c.connect()
    return await c.join(
        room, peer, token=tokens.make_join(SECRET, token_room or room, peer, "participant")
    )


async def test_edge_and_device_tokens(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = pods(start_pod, redis_url)
    edge_a = edge_of(start_edge, "room-a", pod1)
    edge_b = edge_of(start_edge, "room-b", pod1)
    wait_until(lambda: edge_a.linked(0) and edge_b.linked(0), 10, "both edges linked")
    assert metric(pod1, "roomwire_ws_connections") == 2

    # A device of room A is at home at A's edge, and a remote peer sees it.
    d = clients(edge_a.ws_url)
    await join(d, "room-a", "tablet")
    wait_until(lambda: edge_a.linked(1), 10, "the tablet attached")
    r = clients(pod2.ws_url)
    j = await join(r, "room-a", "remote")
    assert j["peers"] == [{"peer": "tablet", "role": "participant"}]

    # Room A's device token is refused by room B's edge, for either room in the frame.
    for room in ("room-a", "room-b"):
        c = clients(edge_b.ws_url)
        with pytest.raises(ClientError, match="unauthorized"):
            await join(c, room, "tablet", token_room="room-a")
        assert await c.wait_closed() == 1008
    # No token, or a forged one: refused as on a pod.
    c = clients(edge_a.ws_url)
    await c.connect()
    with pytest.raises(ClientError, match="unauthorized"):
        await c.join("room-a", "intruder")
    c = clients(edge_a.ws_url)
    await c.connect()
    with pytest.raises(ClientError, match="unauthorized"):
        await c.join(
            "room-a",
            "intruder",
            token=tokens.make_join("x" * 32, "room-a", "intruder", "participant"),
        )

    # The cloud: an edge token only for role edge of its room; a join token is no edge
    # token; an edge token is no device token.
    async def link_join(room: str, token: str, role: str = "edge") -> tuple[Frame, int | None]:
        c = clients(f"ws://127.0.0.1:{pod1.port}/edge")
        await c.connect()
        await c.send({"type": "join", "room": room, "peer": "edge-x", "role": role, "token": token})
        f = await c.recv()
        return f, (await c.wait_closed() if f["type"] == "error" else None)

    f, code = await link_join(
        "room-a", tokens.make_join(SECRET, "room-b", "edge-x", "edge", edge=True)
    )
    assert (f["code"], code) == ("unauthorized", 1008)
    f, code = await link_join("room-a", tokens.make_join(SECRET, "room-a", "edge-x", "edge"))
    assert (f["code"], code) == ("unauthorized", 1008)
    c = clients(pod1.ws_url)
    await c.connect()
    with pytest.raises(ClientError, match="unauthorized"):
        await c.join(
            "room-a",
            "edge-x",
            token=tokens.make_join(SECRET, "room-a", "edge-x", "participant", edge=True),
        )
    f, code = await link_join(
        "room-a", tokens.make_join(SECRET, "room-a", "edge-x", "edge", edge=True)
    )
    assert f["type"] == "joined" and f["role"] == "edge" and code is None

    # An edge with another room's edge token never links; its room still works inside.
    bad = edge_of(start_edge, "room-c", pod1, token_room="room-a")
    x, y = clients(bad.ws_url), clients(bad.ws_url)
    await join(x, "room-c", "x")
    await join(y, "room-c", "y")
    await x.relay("offer", "y", {"sdp": "local"})
    assert (await y.recv_until(lambda f: f["type"] == "offer"))["from"] == "x"
    s = bad.status()
    assert not s["connected"]
    assert "unauthorized" in bad.log.read_text()


BAD_INPUT: list[tuple[str, Any]] = [
    ("text", "nope"),
    ("text", "[]"),
    ("text", '{"type":7}'),
    ("text", '{"type":"teleport"}'),
    ("text", '{"type":"offer","to":"b","data":{}}'),  # not joined yet
    ("binary", b"\x00\x01"),
    ("join", None),
    ("text", '{"type":"join","room":"room-a","peer":"again","role":"participant"}'),
    ("text", '{"type":"offer","to":"b"}'),  # no data
    ("text", '{"type":"offer","to":"b","data":[]}'),
    ("text", '{"type":"offer","to":"bad peer!","data":{}}'),
    ("text", '{"type":"broadcast","topic":"","data":1}'),
    ("text", '{"type":"control","data":{}}'),  # not a controller
    ("text", '{"type":"offer","to":"nobody","data":{},"id":"q"}'),
    ("text", '{"type":"ping"}'),
    ("text", '{"type":"offer","to":"b","data":{},"id":{"no":1}}'),
]


async def replies(url: str, token: str) -> list[tuple[str, str | None]]:
    """What a connection is answered for each bad input, as (type, code)."""
    out: list[tuple[str, str | None]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for kind, body in BAD_INPUT:
            if kind == "binary":
                await ws.send_bytes(body)
            elif kind == "join":
                frame = {
                    "type": "join",
                    "room": "room-a",
                    "peer": "prober",
                    "role": "participant",
                    "token": token,
                }
                await ws.send_json(frame)
            else:
                await ws.send_str(body)
            msg = await ws.receive(5)
            f = msg.json()
            out.append((f["type"], f.get("code")))
    return out


async def test_bad_input_at_the_edge_gets_the_clouds_error_codes(
    start_pod: PodFactory, redis_url: str, start_edge: EdgeFactory
) -> None:
    pod1, _ = pods(start_pod, redis_url)
    edge = edge_of(start_edge, "room-a", pod1)
    wait_until(lambda: edge.linked(0), 10, "edge linked")
    token = tokens.make_join(SECRET, "room-a", "prober", "participant")
    at_pod = await replies(pod1.ws_url, token)
    at_edge = await replies(edge.ws_url, token)
    assert at_edge == at_pod
    assert ("error", "bad-json") in at_edge and ("error", "unknown-peer") in at_edge
    assert ("joined", None) in at_edge and ("pong", None) in at_edge

    # A frame too big closes with 1009 at both.
    for url in (pod1.ws_url, edge.ws_url):
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_str('{"type":"ping","pad":"' + "x" * 70000 + '"}')
            msg = await ws.receive(5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_a_flooding_device_is_limited_without_stalling_the_room(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod1, pod2 = pods(start_pod, redis_url)
    edge = edge_of(start_edge, "room-a", pod1)
    flooder, screen, panel = (clients(edge.ws_url) for _ in range(3))
    await join(flooder, "room-a", "flooder")
    await join(screen, "room-a", "screen")
    await join(panel, "room-a", "panel")
    wait_until(lambda: edge.linked(3), 10, "edge linked with three devices")
    remote = clients(pod2.ws_url)
    await join(remote, "room-a", "remote")
    for c in (flooder, screen, panel):
        await c.recv_until(lambda f: f.get("peer") == "remote")

    async def flood() -> None:
        frame = '{"type":"candidate","to":"screen","data":{"c":"spam"}}'
        try:
            for _ in range(20000):
                await flooder.send_raw(frame)
        except Exception:
            pass  # closed by the edge

    task = asyncio.get_running_loop().create_task(flood())
    # Meanwhile the panel and the screen, and the panel and the remote peer, go on.
    rtts = []
    for i in range(20):
        t0 = time.monotonic()
        await panel.relay("candidate", "screen", {"c": i})
        await screen.recv_until(lambda f: f.get("from") == "panel")
        await panel.relay("candidate", "remote", {"c": i})
        await remote.recv_until(lambda f: f.get("from") == "panel")
        rtts.append(time.monotonic() - t0)
    await asyncio.wait_for(task, 30)
    assert await flooder.wait_closed(10) == 4003
    errors = [f for f in list(flooder.inbox._queue) if f.get("type") == "error"]  # type: ignore[attr-defined]
    assert errors and {f["code"] for f in errors} == {"rate-limited"}
    assert max(rtts) < 1.0, rtts
    # Of the flood, only the burst allowance reached the screen.
    spam = await screen.recv_within(1.0, lambda f: f.get("from") == "flooder")
    assert len(spam) <= 100 + 10
    median, worst = sorted(rtts)[10] * 1000, max(rtts) * 1000
    print(f"panel round trips during the flood: median {median:.1f} ms, max {worst:.1f} ms")


async def test_the_edge_token_is_read_again_at_each_link_up(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
    tmp_path: Path,
) -> None:
    """A join token lives at most the cloud's --token-max-lifetime, an edge for months:
    with --edge-token-file the token is rotated without a restart. Here the file first
    holds another room's token (refused, the edge keeps trying), then a good one."""
    pod1, _ = pods(start_pod, redis_url)
    token_file = tmp_path / "edge.token"
    token_file.write_text(tokens.make_join(SECRET, "room-x", "edge-room-a", "edge", edge=True))
    edge = start_edge(
        "room-a", [pod1], args=["--edge-token-file", str(token_file), "--token-secret", SECRET]
    )
    d = clients(edge.ws_url)
    await join(d, "room-a", "tablet")
    wait_until(lambda: "unauthorized" in edge.log.read_text(), 10, "the edge refused")
    assert not edge.status()["connected"]
    token_file.write_text(tokens.make_join(SECRET, "room-a", "edge-room-a", "edge", edge=True))
    wait_until(lambda: edge.linked(1), 10, "the edge linked with the rotated token")
