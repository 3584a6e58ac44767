"""A real browser through an edge: headless chromium opens the demo page twice against an
edge (two devices in the room) and once against the cloud (a remote participant); the
three establish WebRTC data channels with each other, signaled through the edge, the
edge's link and a pod, and chat over them, with no error and no gap in ``seq``.

Real: headless Debian chromium (CDP, as in ``tests/browser``), a ``signaling serve``
process on a real Redis, a ``signaling edge`` process. No STUN/TURN (loopback host
candidates).
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import LaunchBrowser, launch_browser
from tests.browser.test_demo_page import JOIN_SECONDS, RTC_SECONDS, js, open_peer
from tests.conftest import PodFactory
from tests.support import wait_until

from .conftest import EdgeFactory, metric

pytestmark = pytest.mark.browser
__all__ = ["launch_browser"]  # the browser tests' fixture


async def test_two_pages_on_an_edge_and_one_on_the_cloud_open_data_channels(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    launch_browser: LaunchBrowser,
) -> None:
    pod = start_pod(redis_url, "pod-1")
    edge = start_edge("huddle", [pod])
    edge_http = f"http://127.0.0.1:{edge.port}"
    screen = await open_peer(await launch_browser(), edge_http, "huddle", "screen")
    laptop = await open_peer(await launch_browser(), edge_http, "huddle", "laptop")
    wait_until(lambda: edge.linked(2), 10, "the edge linked with both pages attached")
    remote = await open_peer(await launch_browser(), pod.http_url, "huddle", "remote")
    pages = {"screen": screen, "laptop": laptop, "remote": remote}
    for name, page in pages.items():
        for other in pages:
            if other != name:
                await page.wait_for(
                    f"window.roomwire.peers.some(p => p.peer === {js(other)})",
                    f"{other} in {name}'s peer list",
                    JOIN_SECONDS,
                )
    # Each pair: edge <-> edge (signaled inside the room), edge <-> cloud both ways.
    await screen.evaluate(f"window.roomwire.call({js('laptop')})")
    await laptop.evaluate(f"window.roomwire.call({js('remote')})")
    await remote.evaluate(f"window.roomwire.call({js('screen')})")
    for name, page in pages.items():
        others = sorted(o for o in pages if o != name)
        await page.wait_for(
            f"{js(others)}.every(o => window.roomwire.state.openChannels.includes(o))",
            f"{name}'s data channels with {others}",
            RTC_SECONDS,
        )
    for name, page in pages.items():
        text = f"hello from {name}"
        sent = await page.evaluate(f"window.roomwire.sendChat({js(text)})")
        assert sent == 2, f"{name} sent over {sent} data channels"
        for other, receiver in pages.items():
            if other != name:
                got = await receiver.wait_for(
                    f"window.roomwire.received.find(m => m.text === {js(text)})",
                    f"{text!r} at {other}",
                    RTC_SECONDS,
                )
                assert got == {"from": name, "text": text, "via": "datachannel"}
    for name, page in pages.items():
        state = await page.evaluate("window.roomwire.snapshot()")
        assert state["errors"] == [], (name, state["errors"])
        assert (state["seqGaps"], state["repeats"]) == (0, 0), (name, state["gaps"])
        assert set(state["connections"].values()) == {"connected"}, name
    # The room's two pages are one connection on the cloud, three sessions.
    assert metric(pod, "roomwire_ws_connections") == 2  # the edge's link, the remote page
    assert metric(pod, "roomwire_sessions") == 3
