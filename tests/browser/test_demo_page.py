"""The demo page in a real browser: two pages establish a WebRTC data channel through
the signaling server and chat over it (one pod without Redis; two pods on one Redis),
project a screen, survive a migration and a drain to another pod with their session and
data channel intact, and join with tokens when auth is on.

Real: headless Debian chromium (CDP), ``python -m signaling serve`` processes, Redis.
Faked: only the captured screen (chromium's fake capture device, which also answers the
screen-share prompt). No STUN/TURN (loopback host candidates). Every wait is a bounded
poll on the page's ``window.roomwire`` state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlencode

import pytest
import redis.asyncio as aioredis

from roomwire_contract import control, keys
from signaling import tokens

from .cdp import Browser, Page
from .conftest import LaunchBrowser
from .service import Service

pytestmark = pytest.mark.browser

JOIN_SECONDS = 15.0
RTC_SECONDS = 30.0


class Pod(Protocol):
    """What these tests use of ``tests/conftest.py``'s Pod."""

    @property
    def http_url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...

    @property
    def port(self) -> int: ...

    def terminate(self, timeout: float = 30) -> int: ...


PodFactory = Callable[..., Pod]


def page_url(
    base: str, room: str, peer: str, ws: str | None = None, token: str | None = None
) -> str:
    """The demo page at ``base``; ``ws``: connect there instead of ``base``'s ``/ws``."""
    query = {"room": room, "peer": peer, "role": "participant", "autostart": "1"}
    if ws is not None:
        query["ws"] = ws
    if token is not None:
        query["token"] = token
    return f"{base}/?{urlencode(query)}"


async def open_peer(
    browser: Browser, base: str, room: str, peer: str, ws: str | None = None
) -> Page:
    page = await browser.new_page(page_url(base, room, peer, ws))
    await page.wait_for("window.roomwire && window.roomwire.joined", f"{peer} joined", JOIN_SECONDS)
    return page


def js(value: object) -> str:
    return json.dumps(value)


async def connect_and_chat(a: Page, b: Page, name_a: str, name_b: str) -> None:
    """Both pages see each other; ``a`` opens a data channel to ``b``; chat both ways."""
    for page, other in ((a, name_b), (b, name_a)):
        await page.wait_for(
            f"window.roomwire.peers.some(p => p.peer === {js(other)})",
            f"{other} in the peer list",
            JOIN_SECONDS,
        )
    await a.evaluate(f"window.roomwire.call({js(name_b)})")
    for page, other in ((a, name_b), (b, name_a)):
        await page.wait_for(
            f"window.roomwire.state.openChannels.includes({js(other)})",
            f"a data channel with {other}",
            RTC_SECONDS,
        )
    for sender, receiver, name in ((a, b, name_a), (b, a, name_b)):
        text = f"hello from {name}"
        sent = await sender.evaluate(f"window.roomwire.sendChat({js(text)})")
        assert sent == 1, f"{name} sent over {sent} data channels"
        got = await receiver.wait_for(
            f"window.roomwire.received.find(m => m.text === {js(text)})",
            f"{text!r} to arrive",
            RTC_SECONDS,
        )
        assert got == {"from": name, "text": text, "via": "datachannel"}
    for page in (a, b):
        state = await page.evaluate("window.roomwire.snapshot()")
        assert state["errors"] == [], state["errors"]
        assert (state["seqGaps"], state["repeats"]) == (0, 0), state["gaps"]
        assert set(state["connections"].values()) == {"connected"}


async def test_embedded_two_tabs(start_pod: PodFactory, browser: Browser) -> None:
    """One process, no Redis; two tabs of one browser."""
    pod = start_pod(pod_id="solo")
    a = await open_peer(browser, pod.http_url, "embedded", "alice")
    b = await open_peer(browser, pod.http_url, "embedded", "bob")
    await connect_and_chat(a, b, "alice", "bob")


async def test_two_pods_two_browsers(
    start_pod: PodFactory, redis_url: str, launch_browser: LaunchBrowser
) -> None:
    """Two pods sharing one Redis; one browser (a "device") on each pod, same room."""
    pod1 = start_pod(redis_url=redis_url, pod_id="pod-1")
    pod2 = start_pod(redis_url=redis_url, pod_id="pod-2")
    a = await open_peer(await launch_browser(), pod1.http_url, "cross-pod", "carol")
    b = await open_peer(await launch_browser(), pod2.http_url, "cross-pod", "dave")
    await connect_and_chat(a, b, "carol", "dave")


async def test_screen_projection(start_pod: PodFactory, browser: Browser) -> None:
    """The seed's first milestone: one tab projects its screen, the other shows it."""
    pod = start_pod(pod_id="solo")
    a = await open_peer(browser, pod.http_url, "projection", "alice")
    b = await open_peer(browser, pod.http_url, "projection", "bob")
    await b.wait_for("window.roomwire.peers.length === 1", "alice in bob's peer list", JOIN_SECONDS)
    # getDisplayMedia needs a user gesture, as from a click on "Share screen".
    await a.evaluate("window.roomwire.shareScreen()", user_gesture=True)
    assert await a.evaluate("window.roomwire.state.sharing"), await a.evaluate(
        "window.roomwire.errors"
    )
    size = await b.wait_for(
        """(() => {
            const v = document.querySelector("#videos figure[data-peer='alice'] video");
            return v && v.videoWidth > 0 ? [v.videoWidth, v.videoHeight] : null;
        })()""",
        "frames of alice's screen on bob's page",
        RTC_SECONDS,
    )
    assert size[0] > 0 and size[1] > 0
    await a.evaluate("window.roomwire.stopShare()")
    await b.wait_for(
        "!window.roomwire.state.remoteVideos.includes('alice')",
        "alice's screen to disappear from bob's page",
        RTC_SECONDS,
    )


async def test_migrate_to_another_pod(
    start_pod: PodFactory, redis_url: str, launch_browser: LaunchBrowser
) -> None:
    """An operator `migrate-room` moves a page to another pod; it resumes its session
    there, the peer never sees it leave, and the data channel stays up meanwhile."""
    secret = "browser-test-control-secret"
    args = ["--control-secret", secret]
    pod1 = start_pod(redis_url=redis_url, pod_id="pod-1", args=args)
    pod2 = start_pod(redis_url=redis_url, pod_id="pod-2", args=args)
    a = await open_peer(await launch_browser(), pod1.http_url, "moving", "erin")
    b = await open_peer(await launch_browser(), pod2.http_url, "moving", "frank")
    await connect_and_chat(a, b, "erin", "frank")
    session = await a.evaluate("window.roomwire.state.session")

    command = control.sign(secret, {"op": "migrate-room", "room": "moving", "url": pod2.ws_url})
    client = aioredis.from_url(redis_url)
    try:
        assert await client.publish(keys.inbox("pod-1"), json.dumps(command)) == 1
    finally:
        await client.aclose()

    state = await a.wait_for(
        f"""(() => {{
            const s = window.roomwire.state;
            return s.joined && s.url === {js(pod2.ws_url)} ? window.roomwire.snapshot() : null;
        }})()""",
        "erin to resume on pod-2",
        JOIN_SECONDS,
    )
    assert state["session"] == session, "the migrated page got a new session"
    assert state["reconnects"] == 1
    assert [p["peer"] for p in state["peers"]] == ["frank"]
    assert state["openChannels"] == ["frank"], "the data channel dropped during migration"
    await chat_through_server(a, b, "erin", "frank")


async def chat_through_server(a: Page, b: Page, name_a: str, name_b: str) -> None:
    """Both sessions are live in the room: chat relayed by the server, both ways, and
    nothing went missing or twice (no errors, no gaps in ``seq``)."""
    for sender, receiver, name in ((a, b, name_a), (b, a, name_b)):
        text = f"{name}, relayed by the server"
        await sender.evaluate(f"window.roomwire.sendChat({js(text)}, 'server')")
        got = await receiver.wait_for(
            f"window.roomwire.received.find(m => m.text === {js(text)})",
            f"{text!r} through the server",
            JOIN_SECONDS,
        )
        assert got == {"from": name, "text": text, "via": "server"}
    for page, other in ((a, name_b), (b, name_a)):
        state = await page.evaluate("window.roomwire.snapshot()")
        assert [p["peer"] for p in state["peers"]] == [other]
        assert state["errors"] == [], state["errors"]
        assert (state["seqGaps"], state["repeats"]) == (0, 0), state["gaps"]


async def test_drain_reconnects_through_the_service(
    start_pod: PodFactory, redis_url: str, launch_browser: LaunchBrowser
) -> None:
    """SIGTERM on a page's pod: the page gets `reconnect`, comes back through the Service
    to the other pod with its resume token, keeps its session, and its peer never sees
    it leave; the data channel is untouched by the signaling hiccup."""
    pod1 = start_pod(redis_url=redis_url, pod_id="pod-1", args=["--drain", "2"])
    pod2 = start_pod(redis_url=redis_url, pod_id="pod-2", args=["--drain", "2"])
    service = await Service([("127.0.0.1", pod1.port), ("127.0.0.1", pod2.port)]).start()
    try:
        a = await open_peer(
            await launch_browser(), pod1.http_url, "draining", "gina", ws=service.ws_url
        )
        b = await open_peer(await launch_browser(), pod2.http_url, "draining", "hal")
        assert service.routed == [pod1.port]
        await connect_and_chat(a, b, "gina", "hal")
        session = await a.evaluate("window.roomwire.state.session")

        code = await asyncio.to_thread(pod1.terminate, 30)
        assert code == 0, f"pod-1 exited with {code}"
        await a.wait_for(
            "window.roomwire.state.joined && window.roomwire.state.reconnects >= 1",
            "gina to resume through the Service",
            JOIN_SECONDS,
        )
        assert service.routed[-1] == pod2.port
        state = await a.evaluate("window.roomwire.snapshot()")
        assert state["session"] == session, "the page got a new session"
        assert state["openChannels"] == ["hal"], "the data channel dropped during the drain"
        await chat_through_server(a, b, "gina", "hal")
    finally:
        await service.close()


async def test_tokens_when_auth_is_on(start_pod: PodFactory, browser: Browser) -> None:
    """With a signing secret, a page with a good token joins; one with a forged token is
    refused (`unauthorized`, close 1008), shows the error and does not retry."""
    secret = "browser-test-token-secret"
    pod = start_pod(pod_id="auth", args=["--token-secret", secret])
    claims = {"room": "locked", "peer": "ivy", "role": "participant", "exp": time.time() + 300}
    good = tokens.encode(claims, secret)
    page = await browser.new_page(page_url(pod.http_url, "locked", "ivy", token=good))
    await page.wait_for("window.roomwire.joined", "ivy joined with her token", JOIN_SECONDS)

    forged = tokens.encode({**claims, "peer": "mallory"}, "not-the-secret")
    page = await browser.new_page(page_url(pod.http_url, "locked", "mallory", token=forged))
    state = await page.wait_for(
        """(() => {
            const s = window.roomwire.state;
            return s.closed && !s.wantJoined ? window.roomwire.snapshot() : null;
        })()""",
        "mallory to be refused",
        JOIN_SECONDS,
    )
    assert state["closed"]["code"] == 1008
    assert [e["code"] for e in state["errors"]] == ["unauthorized"]
    assert not state["joined"] and state["reconnects"] == 0
