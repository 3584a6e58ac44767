"""The balance loop's rebalance step with real signaling pods and real Redis, without
Kubernetes: the pod cache that kopf would fill from the API is filled from the started
processes. Clients are real WebSocket clients following ``migrate``/``reconnect``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from meetingroom_operator.config import Config
from meetingroom_operator.handlers import balance
from meetingroom_operator.handlers.state import State
from meetingroom_operator.kube import PodInfo
from meetingroom_operator.metrics import Metrics
from meetingroom_operator.planning.rebalance import minimum_moves, skew
from meetingroom_operator.store import Store
from signaling.client import Client
from tests.conftest import PodFactory, wait_ready

from .harness import SECRET, Follower

ENV = {"SIGNALING_CONTROL_SECRET": SECRET}


def pod(name: str) -> PodInfo:
    return PodInfo(name, f"uid-{name}", "127.0.0.1", "Running", True, False, 0, True)


async def test_rebalance_moves_the_minimum_and_converges(
    redis_url: str, start_pod: PodFactory
) -> None:
    pods = [start_pod(redis_url, f"pod-{i}", env=ENV, wait_ready=False) for i in range(1, 5)]
    wait_ready(*pods, timeout=30)
    followers: list[Follower] = []
    # 10 rooms of 4 on pod-1, 2 rooms of 4 on pod-2; pod-3 and pod-4 are new and empty.
    layout = [(r, pods[0] if r < 10 else pods[1]) for r in range(12)]
    for r, p in layout:
        for i in range(4):
            cl = Client(p.ws_url)
            await cl.connect()
            await cl.join(f"room-{r}", f"r{r}p{i}")
            # "through the Service": the new pods are the accepting ones
            followers.append(Follower(cl, pods[2 + i % 2].ws_url, f"room-{r}", f"r{r}p{i}"))
    for f in followers:
        f.start()
    cfg = Config(redis_url=redis_url, control_secret=SECRET, skew_persist_s=0,
                 move_window_ms=500, move_timeout_s=5)  # fmt: skip
    store = Store(redis_url)
    state = State(cfg=cfg, store=store, kube=None, metrics=Metrics())  # type: ignore[arg-type]
    for p in pods:
        state.pods[p.pod_id] = pod(p.pod_id)
    names = [p.pod_id for p in pods]
    try:

        async def counts() -> Counter[str]:
            c: Counter[str] = Counter({n: 0 for n in names})
            c.update(s.pod for s in await store.live_sessions(names))
            return c

        deadline = time.monotonic() + 10
        while (await counts())[pods[0].pod_id] != 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        before = await counts()
        minimum = minimum_moves(before)
        assert minimum == 28  # targets 12 each: 28 from pod-1 (pod-2 holds 8)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            hb = await store.heartbeats()
            for n, h in hb.items():
                state.urls[n] = h.url
            sessions = await store.live_sessions(names)
            await balance.rebalance(state, sessions, hb, await balance.observe_moves(state))
            now = await counts()
            if sum(now.values()) == 48 and skew(now) <= 1.15 and not await store.inflight():
                break
            await asyncio.sleep(0.3)
        after = await counts()
        moved = sum(f.moves for f in followers)
        assert skew(after) <= 1.15, after
        assert moved <= 1.2 * minimum, (moved, minimum, after)
        assert max(f.moves for f in followers) <= 1
        assert state.metrics.moves.get("room") >= 24  # whole rooms first
    finally:
        for t in list(state.tasks):
            t.cancel()
        for f in followers:
            await f.stop()
        await store.close()
