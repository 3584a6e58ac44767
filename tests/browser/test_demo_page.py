"""The demo page in a real browser: two pages establish a WebRTC data channel through
the signaling server and exchange chat messages over it.

Real: headless Debian chromium (CDP), ``python -m signaling serve`` processes, Redis.
Nothing is faked; no STUN/TURN (loopback host candidates). Every wait is a bounded poll
on the page's ``window.roomwire`` state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlencode

import pytest

from .cdp import Browser, Page
from .conftest import LaunchBrowser

pytestmark = pytest.mark.browser

JOIN_SECONDS = 15.0
RTC_SECONDS = 30.0


class Pod(Protocol):
    """What these tests use of ``tests/conftest.py``'s Pod."""

    @property
    def http_url(self) -> str: ...


PodFactory = Callable[..., Pod]


def page_url(base: str, room: str, peer: str) -> str:
    query = urlencode({"room": room, "peer": peer, "role": "participant", "autostart": "1"})
    return f"{base}/?{query}"


async def open_peer(browser: Browser, base: str, room: str, peer: str) -> Page:
    page = await browser.new_page(page_url(base, room, peer))
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
        assert state["seqGaps"] == 0
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
