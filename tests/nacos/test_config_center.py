"""Live settings from the Nacos config center, on a real signaling pod and a real rnacos:
a document published through the open API reaches the pod within 5 s and applies to
connections already open; an invalid one is refused whole (log line, metric) and the
settings in force stay. The figures measured are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

from signaling.client import Client
from tests.conftest import Pod, PodFactory
from tests.nacos.conftest import Rnacos
from tests.nacos.test_pod_instance import nacos_args
from tests.support import eventually

DATA_ID = "roomwire-signaling.yaml"


def config_updates(pod: Pod, outcome: str) -> float:
    body = pod.get("/metrics")[1]
    m = re.search(rf'^roomwire_config_updates_total{{outcome="{outcome}"}} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


async def publish_and_wait(rnacos: Rnacos, pod: Pod, content: str, outcome: str) -> float:
    """Publish ``content``; seconds until the pod counted one more ``outcome``."""
    before = await asyncio.to_thread(config_updates, pod, outcome)
    t0 = time.monotonic()
    await asyncio.to_thread(rnacos.publish_config, DATA_ID, content)
    await eventually(
        lambda: asyncio.to_thread(lambda: config_updates(pod, outcome) > before),
        10,
        f"the pod to count a config {outcome}",
    )
    return time.monotonic() - t0


async def third_peer_answer(url: str, room: str) -> str:
    """Two peers join ``room``; what the third is told (``joined`` or an error code)."""
    clients = [Client(url) for _ in range(3)]
    try:
        for c in clients:
            await c.connect()
        await clients[0].join(room, "p0")
        await clients[1].join(room, "p1")
        await clients[2].send({"type": "join", "room": room, "peer": "p2", "role": "participant"})
        frame = await clients[2].recv_until(lambda f: f["type"] in ("joined", "error"))
        return str(frame["type"] if frame["type"] == "joined" else frame["code"])
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()


async def rate_limited_of(c: Client, frames: int) -> int:
    """Send ``frames`` pings at once; how many came back ``rate-limited``."""
    for i in range(frames):
        await c.send({"type": "ping", "id": i})
    answers = await c.recv_within(1.5, lambda f: f["type"] in ("pong", "error"))
    return sum(1 for f in answers if f.get("code") == "rate-limited")


async def test_a_config_change_applies_live_and_an_invalid_one_is_refused(
    rnacos: Rnacos, start_pod: PodFactory
) -> None:
    pod = start_pod(pod_id="sig-cfg", args=nacos_args(rnacos, "--rate-burst", "200"))
    # Nacos answers and there is no document yet: the start-up settings are in force.
    await eventually(
        lambda: asyncio.to_thread(lambda: "config center: listening" in pod.log.read_text()),
        20,
        "the pod listening to its config document",
    )
    assert await third_peer_answer(pod.ws_url, "r0") == "joined"
    steady = Client(pod.ws_url)  # open before the change: its limits change too
    await steady.connect()
    await steady.join("r-steady", "steady")
    try:
        assert await rate_limited_of(steady, 40) == 0

        # The document created while the pod runs, then changed: both pushed.
        took = await publish_and_wait(rnacos, pod, "max_peers: 3\n", "applied")
        print(f"new document applied {took:.2f} s after it was published")
        assert took < 5.0
        took = await publish_and_wait(
            rnacos, pod, "max_peers: 2\nrate: 5\nrate-burst: 10\n", "applied"
        )
        print(f"changed document applied {took:.2f} s after it was published")
        assert took < 5.0
        assert await third_peer_answer(pod.ws_url, "r1") == "room-full"
        limited = await rate_limited_of(steady, 40)
        print(f"an open connection sending 40 frames at once: {limited} rate-limited")
        assert limited >= 25  # a burst of 10, then 5 per second

        # Invalid documents, each refused whole: the settings in force stay.
        for bad in (
            "max_peers: 0\nrate: 100\n",  # out of bounds (and a valid line beside it)
            "rate: fast\n",  # not a number
            "port: 9999\n",  # needs a restart
            "max_peers: [2,\n",  # not YAML
            "no_such_setting: 1\n",
        ):
            took = await publish_and_wait(rnacos, pod, bad, "refused")
            print(f"refused {took:.2f} s after it was published: {bad!r}")
            assert took < 5.0, bad
        assert await third_peer_answer(pod.ws_url, "r2") == "room-full"
        log = pod.log.read_text()
        assert "config roomwire-signaling.yaml refused, the settings in force stay" in log
        assert "max_peers must be > 0" in log and "port: needs a restart" in log

        # Removing a setting from the document takes it back to its start-up value.
        await publish_and_wait(rnacos, pod, "rate: 5\nrate_burst: 10\n", "applied")
        assert await third_peer_answer(pod.ws_url, "r3") == "joined"
    finally:
        await steady.close()
    assert pod.ready()
