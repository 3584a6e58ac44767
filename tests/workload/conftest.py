"""Fixtures for the workload tests: real signaling processes, real Redis.

``pods`` is parametrized over the two registries: ``embedded`` (one process, in memory;
both "sides" connect to it) and ``redis`` (two processes sharing a real Redis). Nothing
is faked: every test talks WebSocket to real server processes on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready


@dataclass
class Pods:
    mode: str
    a: Pod
    b: Pod
    redis_url: str | None

    @property
    def url_a(self) -> str:
        return self.a.ws_url

    @property
    def url_b(self) -> str:
        return self.b.ws_url


@pytest.fixture(params=["embedded", "redis"])
def pods(request: pytest.FixtureRequest, start_pod: PodFactory) -> Pods:
    if request.param == "embedded":
        pod = start_pod(pod_id="solo")
        return Pods("embedded", pod, pod, None)
    redis_url: str = request.getfixturevalue("redis_url")
    a = start_pod(redis_url, "pod-1", wait_ready=False)
    b = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(a, b)
    return Pods("redis", a, b, redis_url)


ClientFactory = Callable[[str], Client]


@pytest.fixture()
async def clients() -> AsyncIterator[Callable[..., Client]]:
    """``clients(url)`` makes a client that is closed at the end of the test."""
    made: list[Client] = []

    def make(url: str) -> Client:
        c = Client(url)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def joined(
    make: Callable[..., Client], url: str, room: str, peer: str, role: str = "participant"
) -> Client:
    c = make(url)
    await c.connect()
    await c.join(room, peer, role)
    return c
