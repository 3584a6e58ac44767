"""Lifecycle against real processes: Redis restarts, drain on SIGTERM, readiness.

Real pods, a real Redis that the test stops and starts again on the same port, and
real SIGTERM to a pod process. Waits are bounded polls on observable state.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import Pod, PodFactory, RedisServer, spawn_redis, wait_ready
from tests.support import free_port, wait_until

from .conftest import joined


async def test_redis_restart_service_comes_back_and_registry_is_restored(
    redis_server: RedisServer,
    redis_url: str,
    start_pod: PodFactory,
    clients: Callable[..., Client],
) -> None:
    p1 = start_pod(redis_url, "pod-1", wait_ready=False)
    p2 = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(p1, p2)
    a = await joined(clients, p1.ws_url, "restart", "alice")
    b = await joined(clients, p2.ws_url, "restart", "bob")
    await a.recv_until(lambda f: f["type"] == "peer-joined")

    redis_server.stop()  # data is not persisted: Redis comes back empty
    wait_until(lambda: not p1.ready() and not p2.ready(), 10, "pods to report not ready")
    # While Redis is away a cross-pod relay is refused clearly, never silently dropped.
    await a.relay("offer", "bob", {"x": 0}, frame_id="during")
    err = await a.recv_until(lambda f: f["type"] in ("error", "ack"), timeout=10)
    assert err["type"] == "error" and err["code"] == "unavailable" and err["id"] == "during"

    redis_server.start()
    t0 = time.monotonic()
    wait_until(lambda: p1.ready() and p2.ready(), 15, "pods ready again")
    r = redis.Redis.from_url(redis_url)
    wait_until(
        lambda: (
            r.hget(keys.room_members("restart"), "alice") is not None
            and r.hget(keys.room_members("restart"), "bob") is not None
        ),
        15,
        "room membership restored",
    )
    recovered = time.monotonic() - t0
    assert recovered < 10, recovered
    # Relay across pods works again, both ways, on the same connections.
    await a.relay("offer", "bob", {"x": 1}, frame_id="after")
    reply = await a.recv_until(lambda f: f["type"] in ("ack", "error"))
    assert reply["type"] == "ack", reply
    assert (await b.recv_until(lambda f: f["type"] == "offer"))["data"] == {"x": 1}
    await b.relay("answer", "alice", {"y": 1})
    assert (await a.recv_until(lambda f: f["type"] == "answer"))["data"] == {"y": 1}
    assert p1.proc.poll() is None and p2.proc.poll() is None
    r.close()


async def test_drain_on_sigterm(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    draining = start_pod(redis_url, "pod-1", args=["--drain", "3"], wait_ready=False)
    other = start_pod(redis_url, "pod-2", wait_ready=False)
    wait_ready(draining, other)
    watcher = await joined(clients, other.ws_url, "drain", "watcher")
    peers = [await joined(clients, draining.ws_url, "drain", f"p{i}") for i in range(8)]

    sent_at = time.monotonic()
    draining.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: draining.get("/readyz")[0] == 503, 2, "/readyz to fail at once")

    async def reconnect(c: Client) -> tuple[float, int | None]:
        frame = await c.recv_until(lambda f: f["type"] == "reconnect", timeout=10)
        assert frame["resume"] == c.resume_token and isinstance(frame["after_ms"], int)
        got = time.monotonic() - sent_at
        code = await c.wait_closed(5)
        return got, code

    results = await asyncio.gather(*(reconnect(c) for c in peers))
    assert all(code == 1012 for _, code in results)
    times = sorted(t for t, _ in results)
    assert times[-1] - times[0] > 0.3, f"reconnects not spread: {times}"
    assert times[-1] < 3.5
    # Each client comes back elsewhere as the same session.
    for c in peers:
        reply = await c.resume(other.ws_url)
        assert reply["resumed"] is True
    wait_until(lambda: draining.proc.poll() is not None, 10, "the draining pod to exit")
    assert draining.proc.returncode == 0
    r = redis.Redis.from_url(redis_url)
    assert not r.exists(keys.pod("pod-1"))
    assert r.zscore(keys.PODS, "pod-1") is None
    r.close()
    # The room never saw anyone leave.
    await watcher.send({"type": "ping"})
    first = await watcher.recv_until(lambda f: f["type"] in ("pong", "peer-left"))
    assert first["type"] == "pong"


async def test_pod_publishes_its_load_for_the_operator(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(redis_url, "pod-load", args=["--heartbeat", "0.3"])
    await joined(clients, pod.ws_url, "load", "a")
    await joined(clients, pod.ws_url, "load", "b")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_until(
            lambda: r.hget(keys.pod("pod-load"), "connections") == "2",
            10,
            "the heartbeat to carry 2 connections",
        )
        info = r.hgetall(keys.pod("pod-load"))
        assert info["sessions"] == "2" and info["rooms"] == "1" and info["draining"] == "0"
        assert info["url"] == pod.ws_url and float(info["cpu"]) >= 0
        assert 0 < r.ttl(keys.pod("pod-load")) <= keys.POD_TTL_S
        assert r.zscore(keys.PODS, "pod-load") is not None
        assert len(r.smembers(keys.pod_sessions("pod-load"))) == 2
    finally:
        r.close()


async def test_negotiation_is_published_and_defers_a_rebalance(
    redis_url: str, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """An operator `reconnect` waits until the offer has its answer."""
    from roomwire_contract import control

    pod = start_pod(redis_url, "pod-neg", args=["--heartbeat", "0.3", "--control-secret", "k"])
    a = await joined(clients, pod.ws_url, "neg", "a")
    b = await joined(clients, pod.ws_url, "neg", "b")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await a.relay("offer", "b", {"sdp": "o"})
        await b.recv_until(lambda f: f["type"] == "offer")
        wait_until(
            lambda: float(r.hget(keys.session("neg", "b"), "busy") or 0) > time.time(),
            10,
            "b to be published as busy",
        )
        r.publish(
            keys.inbox("pod-neg"),
            json.dumps(
                control.sign("k", {"op": "reconnect", "sids": [b.session_id], "after_ms": 0})
            ),
        )
        # No reconnect while the exchange is open ...
        with pytest.raises(TimeoutError):
            await b.recv_until(lambda f: f["type"] == "reconnect", timeout=1.0)
        # ... and it comes once the answer went back.
        await b.relay("answer", "a", {"sdp": "a"})
        frame = await b.recv_until(lambda f: f["type"] == "reconnect", timeout=5)
        assert frame["resume"] == b.resume_token
        wait_until(
            lambda: float(r.hget(keys.session("neg", "a"), "busy") or 0) == 0,
            10,
            "a to be published as no longer busy",
        )
    finally:
        r.close()


async def test_pod_started_before_redis_stays_alive_and_becomes_ready_when_it_comes(
    tmp_path: Path, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """Liveness never depends on Redis: /healthz from the first second, /readyz 503 and
    joins refused with `unavailable` until Redis answers, ready within 5 s after."""
    port = free_port()
    pod = start_pod(f"redis://127.0.0.1:{port}/0", "early", wait_ready=False)
    started = time.monotonic()
    wait_until(lambda: _status(pod, "/healthz") == 200, 5, "/healthz served without Redis")
    print(f"/healthz 200 after {time.monotonic() - started:.2f}s with no Redis")
    assert _status(pod, "/readyz") == 503
    c = clients(pod.ws_url)
    await c.connect()
    await c.send({"type": "join", "room": "early", "peer": "alice", "role": "participant"})
    err = await c.recv_until(lambda f: f["type"] in ("error", "joined"), timeout=10)
    assert err["type"] == "error" and err["code"] == "unavailable", err

    server = RedisServer(port, spawn_redis(port, str(tmp_path)), str(tmp_path))
    try:
        wait_until(server.ping, 15, "redis-server up")
        up = time.monotonic()
        wait_until(pod.ready, 5, "/readyz 200 within 5 s of Redis")
        print(f"/readyz 200 {time.monotonic() - up:.2f}s after Redis came")
        a = await joined(clients, pod.ws_url, "early", "alice")
        assert a.joined["resumed"] is False
        # Redis gone again: not ready, still alive; back: ready within 5 s.
        server.stop()
        wait_until(lambda: _status(pod, "/readyz") == 503, 10, "/readyz 503 without Redis")
        assert _status(pod, "/healthz") == 200
        server.start()
        up = time.monotonic()
        wait_until(pod.ready, 5, "/readyz 200 within 5 s of Redis's return")
        print(f"/readyz 200 {time.monotonic() - up:.2f}s after Redis returned")
        assert pod.proc.poll() is None, "the pod exited"
    finally:
        server.stop()


def _status(pod: Pod, path: str) -> int:
    try:
        return pod.get(path)[0]
    except OSError:
        return 0


async def test_readyz_fails_within_2s_when_redis_stops_answering(
    redis_server: RedisServer, redis_url: str, start_pod: PodFactory
) -> None:
    """Redis paused (SIGSTOP: its connections stay open, nothing answers): readiness
    must not wait for a dropped connection or the next failed heartbeat."""
    pod = start_pod(redis_url, "pod-stall")
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        paused = time.monotonic()
        wait_until(lambda: _status(pod, "/readyz") == 503, 5, "/readyz 503 with Redis paused")
        took = time.monotonic() - paused
        print(f"/readyz 503 {took:.2f}s after Redis stopped answering")
        assert took <= 2.0, took
        assert _status(pod, "/healthz") == 200
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(pod.ready, 10, "/readyz 200 once Redis answers again")
    print(f"/readyz 200 {time.monotonic() - resumed:.2f}s after Redis answered again")
