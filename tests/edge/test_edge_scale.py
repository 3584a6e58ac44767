"""100 rooms x 15 devices through 100 edges: the cloud holds exactly 100 WebSockets
(``roomwire_ws_connections`` summed over its two pods) while every device is a session
of its room on the cloud and every device-to-device relay and room event works.

The 100 edges run in ONE process (``edge_host.py``: the ``Edge`` class of ``signaling
edge``, one per room, each its own port and upstream link), not 100 processes: 100
interpreters do not fit this 2-core machine beside the pods. The pods, Redis, the edge
host and the 1,500 device clients (this test's process) are real and talk over loopback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready
from tests.support import ROOT, stop_process, wait_until

from .conftest import metric

ROOMS, DEVICES = 100, 15


class EdgeHost:
    def __init__(self, proc: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
        self.proc, self.ports = proc, ports

    def status(self, room: str) -> dict[str, object]:
        import urllib.request

        url = f"http://127.0.0.1:{self.ports[room]}/status"
        with urllib.request.urlopen(url, timeout=2) as r:
            out: dict[str, object] = json.loads(r.read())
        return out


def start_host(spec: list[dict[str, object]], log: Path) -> Iterator[EdgeHost]:
    """The edge host process, once every edge listens (it writes ``ready`` and the
    ports)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.edge.edge_host", json.dumps(spec)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"edge host exited: {log.read_text()[-3000:]}")
            return log.read_text().startswith("ready")

        wait_until(ready, 60, "the edge host to listen")
        ports = json.loads(log.read_text().splitlines()[0].split(" ", 1)[1])
        yield EdgeHost(proc, ports)
    finally:
        stop_process(proc, 10)


@pytest.fixture()
def cloud(start_pod: PodFactory, redis_url: str) -> tuple[Pod, Pod]:
    a = start_pod(redis_url, "pod-1", wait_ready=False)
    b = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(a, b)
    return a, b


@pytest.fixture()
def edges(cloud: tuple[Pod, Pod], tmp_path: Path) -> Iterator[EdgeHost]:
    rooms = [f"room-{i:03d}" for i in range(ROOMS)]
    spec: list[dict[str, object]] = [
        {"room": r, "upstream": f"ws://127.0.0.1:{cloud[i % 2].port}/edge"}
        for i, r in enumerate(rooms)
    ]
    yield from start_host(spec, tmp_path / "edge-host.log")


async def test_100_rooms_of_15_devices_hold_100_cloud_connections(
    cloud: tuple[Pod, Pod], edges: EdgeHost, redis_url: str
) -> None:
    t0 = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        devices: dict[str, list[Client]] = {}

        async def fill(room: str) -> None:
            url = f"ws://127.0.0.1:{edges.ports[room]}/ws"
            devices[room] = []
            for d in range(DEVICES):
                c = Client(url, session=http)
                await c.connect()
                await c.join(room, f"d{d:02d}", "screen" if d == 0 else "participant", timeout=20)
                devices[room].append(c)

        try:
            rooms = list(edges.ports)
            for i in range(0, ROOMS, 20):
                await asyncio.gather(*(fill(r) for r in rooms[i : i + 20]))
            joined_s = time.monotonic() - t0

            def all_linked() -> bool:
                for r in rooms:
                    s = edges.status(r)
                    if not (s["connected"] and s["devices"] == DEVICES and s["attaching"] == 0):
                        return False
                return True

            wait_until(all_linked, 60, "every edge linked with its 15 devices attached", every=0.5)
            # The cloud: exactly one WebSocket per edge, a session per device.
            a, b = cloud
            conns = metric(a, "roomwire_ws_connections") + metric(b, "roomwire_ws_connections")
            sessions = metric(a, "roomwire_sessions") + metric(b, "roomwire_sessions")
            assert (conns, sessions) == (ROOMS, ROOMS * DEVICES)
            r = redis.Redis.from_url(redis_url)
            try:
                sizes = {room: r.hlen(keys.room_members(room)) for room in rooms}
            finally:
                r.close()
            assert set(sizes.values()) == {DEVICES}, sizes

            # Every device -> the next one of its room, and a broadcast from each screen.
            t1 = time.monotonic()
            for room in rooms:
                ring = devices[room]
                for i, c in enumerate(ring):
                    await c.relay("candidate", f"d{(i + 1) % DEVICES:02d}", {"from": i})
                await ring[0].broadcast("chat", {"room": room})

            async def check(room: str) -> None:
                ring = devices[room]
                for i, c in enumerate(ring):
                    want = {("candidate", f"d{(i - 1) % DEVICES:02d}")}
                    if i:
                        want.add(("broadcast", "d00"))
                    got = set()
                    while len(got) < len(want):
                        f = await c.recv(20)
                        if f["type"] in ("candidate", "broadcast"):
                            got.add((f["type"], f["from"]))
                    assert got == want

            await asyncio.gather(*(check(room) for room in rooms))
            relay_s = time.monotonic() - t1
            print(
                f"\n{ROOMS * DEVICES} devices joined through {ROOMS} edges in {joined_s:.1f} s; "
                f"cloud: {conns:.0f} WebSockets, {sessions:.0f} sessions; "
                f"{ROOMS * DEVICES} relays and {ROOMS} broadcasts delivered in {relay_s:.1f} s"
            )
        finally:
            await asyncio.gather(
                *(c.close() for ring in devices.values() for c in ring), return_exceptions=True
            )
