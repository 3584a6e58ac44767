"""The operator's weights in Nacos, without Kubernetes: two real signaling pods
(``--nacos-server``, one Redis, a control secret) and a real rnacos. The operator's
balance step runs on a pod cache filled from the started processes (kopf would fill it
from the API), with a recording stand-in for the API's pod patches; its weights travel
as signed ``weight`` commands (``Store.command``) and the pods publish them on their own
instances, read back through rnacos's open API. And what becomes of the instance of a
pod killed with SIGKILL. The figures measured are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping
from typing import Any

from meetingroom_operator import constants as c
from meetingroom_operator.config import Config
from meetingroom_operator.handlers import balance
from meetingroom_operator.handlers.state import State
from meetingroom_operator.kube import PodInfo
from meetingroom_operator.metrics import Metrics
from meetingroom_operator.store import Store
from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready
from tests.nacos.conftest import Rnacos
from tests.nacos.test_pod_instance import instance_of, nacos_args
from tests.support import eventually

SECRET = "test-control-secret-0123456789abcdef"


class PatchLog:
    """Stands in for the API's pod patches (the one Kubernetes call of the weights step)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Mapping[str, str] | None, Mapping[str, str] | None]] = []

    async def patch_pod(
        self, name: str, labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
    ) -> None:
        self.patches.append((name, labels, annotations))


def pod_info(name: str) -> PodInfo:
    return PodInfo(name, f"uid-{name}", "127.0.0.1", "Running", True, False, 0, True)


async def weight_of(rnacos: Rnacos, pod: Pod) -> float | None:
    host = await asyncio.to_thread(instance_of, rnacos, pod)
    return None if host is None else float(host["weight"])


async def weights_become(rnacos: Rnacos, pods: dict[str, Pod], want: dict[str, float]) -> float:
    """Until every pod's instance shows its wanted weight; seconds taken."""
    t = time.monotonic()

    async def check() -> bool:
        got = {name: await weight_of(rnacos, p) for name, p in pods.items()}
        assert all(w != 1.0 for w in got.values()), f"a weight of exactly 1.0: {got}"
        return got == want

    await eventually(check, 10, f"weights {want} in Nacos")
    return time.monotonic() - t


async def test_the_operators_weights_reach_nacos_and_follow_the_load(
    rnacos: Rnacos, redis_url: str, start_pod: PodFactory
) -> None:
    args = nacos_args(rnacos, "--heartbeat", "0.3", "--control-secret", SECRET)
    pods = {n: start_pod(redis_url, n, args=args, wait_ready=False) for n in ("sig-1", "sig-2")}
    wait_ready(*pods.values(), timeout=30)
    await weights_become(rnacos, pods, {"sig-1": 100.0, "sig-2": 100.0})

    cfg = Config(redis_url=redis_url, control_secret=SECRET)
    store = Store(redis_url)
    kube = PatchLog()
    state = State(cfg=cfg, store=store, kube=kube, metrics=Metrics())  # type: ignore[arg-type]
    for name in pods:
        state.pods[name] = pod_info(name)
    clients: list[Client] = []

    async def tick() -> dict[str, Any]:
        heartbeats = await store.heartbeats()
        alive = [p for p in state.pods.values() if p.alive and p.running]
        await balance.publish_weights(state, alive, heartbeats)
        return heartbeats

    try:
        # The load: 6 clients on sig-1, none on sig-2 -> weights 50 and 100.
        for i in range(6):
            cl = Client(pods["sig-1"].ws_url)
            await cl.connect()
            await cl.join("room-1", f"p{i}")
            clients.append(cl)

        async def six_on_sig_1() -> bool:
            hb = await store.heartbeats()
            return "sig-1" in hb and hb["sig-1"].connections == 6

        await eventually(six_on_sig_1, 10, "6 connections in sig-1's heartbeat")
        t = time.monotonic()
        await tick()
        assert state.pods["sig-1"].annotations[c.WEIGHT_ANNOTATION] == "50"
        await weights_become(rnacos, pods, {"sig-1": 50.0, "sig-2": 100.0})
        print(f"\nweight 100 -> 50 in Nacos {(time.monotonic() - t) * 1000:.0f} ms after the tick")

        # Unchanged weights are not sent again before the refresh.
        sent_before = dict(state.weight_sends.sent)
        await tick()
        assert state.weight_sends.sent == sent_before

        # All but one leave sig-1 and sig-2 takes 3: a mean of 2 -> sig-1 100, sig-2 65.
        for cl in clients[1:]:
            await cl.close()
        for i in range(3):
            cl = Client(pods["sig-2"].ws_url)
            await cl.connect()
            await cl.join("room-2", f"q{i}")
            clients.append(cl)

        async def moved() -> bool:
            hb = await store.heartbeats()
            return (hb["sig-1"].connections, hb["sig-2"].connections) == (1, 3)

        await eventually(moved, 10, "1 and 3 connections in the heartbeats")
        t = time.monotonic()
        await tick()
        await weights_become(rnacos, pods, {"sig-1": 100.0, "sig-2": 65.0})
        print(f"weights follow the load (100, 65) {(time.monotonic() - t) * 1000:.0f} ms later")

        # The operator drains sig-2: weight 0 in Nacos (the pod itself is not told to
        # drain here: only the weight changes, its metadata still says draining=false).
        p2 = state.pods["sig-2"]
        state.pods["sig-2"] = PodInfo(
            p2.name, p2.uid, p2.ip, p2.phase, p2.ready, p2.deleting, p2.restarts, p2.running,
            p2.labels, {**p2.annotations, c.DRAINING_ANNOTATION: f"{time.time():.3f}"},
        )  # fmt: skip
        t = time.monotonic()
        await tick()
        await weights_become(rnacos, pods, {"sig-1": 100.0, "sig-2": 0.0})
        print(
            f"draining -> weight 0 in Nacos {(time.monotonic() - t) * 1000:.0f} ms after the tick"
        )

        # Straight through the Store as the operator sends it: 40, then 1 (published as
        # 2, never exactly 1.0), then a weight out of range and a bad signature: ignored.
        await store.command(SECRET, "sig-1", {"op": "weight", "weight": 40})
        await weights_become(rnacos, pods, {"sig-1": 40.0, "sig-2": 0.0})
        await store.command(SECRET, "sig-1", {"op": "weight", "weight": 1})
        await weights_become(rnacos, pods, {"sig-1": 2.0, "sig-2": 0.0})
        await store.command(SECRET, "sig-1", {"op": "weight", "weight": 500})
        await store.command("not-the-secret-0123456789", "sig-1", {"op": "weight", "weight": 70})
        await store.command(SECRET, "sig-1", {"op": "weight", "weight": 30})  # a marker
        await weights_become(rnacos, pods, {"sig-1": 30.0, "sig-2": 0.0})
        assert "bad signature" in pods["sig-1"].log.read_text()

        # rnacos restarted empty (its ephemeral instances gone with it): each pod
        # registers again with the weight the operator last set, not a default 100.
        await asyncio.to_thread(rnacos.stop)
        await asyncio.to_thread(rnacos.start)
        took = await weights_become(rnacos, pods, {"sig-1": 30.0, "sig-2": 0.0})
        print(f"rnacos back: the operator's weights (30, 0) registered again in {took:.2f} s")
        assert all(p.ready() for p in pods.values())
    finally:
        for cl in clients:
            await cl.close()
        await store.close()


async def test_the_instance_of_a_pod_killed_with_sigkill_goes_with_its_connection(
    rnacos: Rnacos, start_pod: PodFactory
) -> None:
    """No pod backs the instance any more: rnacos drops an ephemeral instance when its
    gRPC connection closes, so nobody has to remove it."""
    killed = start_pod(pod_id="sig-k", args=nacos_args(rnacos))
    other = start_pod(pod_id="sig-o", args=nacos_args(rnacos))
    for p in (killed, other):

        async def listed(p: Pod = p) -> dict[str, Any] | None:
            return await asyncio.to_thread(instance_of, rnacos, p)

        await eventually(listed, 20, f"{p.pod_id} in Nacos")
    t = time.monotonic()
    killed.kill9()

    async def gone() -> bool:
        return await asyncio.to_thread(instance_of, rnacos, killed) is None

    await eventually(gone, 60, "the killed pod's instance gone from Nacos")
    print(f"\nSIGKILL -> instance gone from the open API after {time.monotonic() - t:.2f}s")
    assert await asyncio.to_thread(instance_of, rnacos, other) is not None


async def test_the_instance_of_a_frozen_pod_goes_when_rnacos_stops_hearing_from_it(
    rnacos: Rnacos, start_pod: PodFactory
) -> None:
    """A pod whose connection stays open but which answers nothing (SIGSTOP: a hung
    process, or a node cut off without a reset) loses its instance by rnacos's own
    timeout of the connection; measured here."""
    frozen = start_pod(pod_id="sig-f", args=nacos_args(rnacos))
    await eventually(lambda: asyncio.to_thread(instance_of, rnacos, frozen), 20, "sig-f")
    t = time.monotonic()
    frozen.proc.send_signal(signal.SIGSTOP)
    try:

        async def gone() -> bool:
            return await asyncio.to_thread(instance_of, rnacos, frozen) is None

        await eventually(gone, 120, "the frozen pod's instance gone from Nacos", every=0.5)
        print(f"\nSIGSTOP -> instance gone from the open API after {time.monotonic() - t:.1f}s")
        t = time.monotonic()
        frozen.proc.send_signal(signal.SIGCONT)  # it wakes up: registered again
        await eventually(
            lambda: asyncio.to_thread(instance_of, rnacos, frozen), 30, "sig-f back in Nacos"
        )
        print(f"SIGCONT -> instance back after {time.monotonic() - t:.1f}s")
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
