"""``signaling.discovery.NacosPicker`` against a real rnacos: instances registered
through ``nacos-sdk-python`` (one client each, as pods do) with chosen weights; the
picker's choices follow them (20,000 draws, a fixed seed, each share within 1.5
percentage points), a weight change reaches it by subscription, and it answers the
fallback URL while Nacos is down and pods again once Nacos is back."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.discovery import NacosPicker
from tests.nacos.conftest import Rnacos
from tests.support import eventually

SERVICE = "roomwire-signaling"
FALLBACK = "ws://signaling.roomwire.svc/ws"
DRAWS = 20_000
TOLERANCE = 0.015


class FakePods:
    """Instances registered by their own SDK client each (the pods themselves are not
    what is under test here)."""

    def __init__(self, rnacos: Rnacos) -> None:
        self.rnacos = rnacos
        self.clients: dict[int, Any] = {}

    async def put(self, port: int, weight: float, draining: bool = False) -> None:
        from v2.nacos import (  # type: ignore[import-untyped]
            ClientConfigBuilder,
            NacosNamingService,
            RegisterInstanceParam,
        )

        if port not in self.clients:
            config = ClientConfigBuilder().server_address(self.rnacos.address).build()
            config.log_dir = config.cache_dir = f"{self.rnacos.workdir}/sdk-{port}"
            self.clients[port] = await NacosNamingService.create_naming_service(config)
        ok = await self.clients[port].register_instance(
            RegisterInstanceParam(
                ip="127.0.0.1",
                port=port,
                weight=weight,
                service_name=SERVICE,
                metadata={"pod": f"pod-{port}", "draining": "true" if draining else "false"},
            )
        )
        assert ok

    async def close(self) -> None:
        for c in self.clients.values():
            await c.shutdown()


@pytest.fixture()
async def pods(rnacos: Rnacos) -> AsyncIterator[FakePods]:
    fake = FakePods(rnacos)
    yield fake
    await fake.close()


def shares(picker: NacosPicker) -> dict[int, float]:
    counts: Counter[int] = Counter()
    for _ in range(DRAWS):
        chosen = picker.pick()
        assert chosen is not None
        counts[chosen.port] += 1
    return {port: n / DRAWS for port, n in counts.items()}


async def test_choices_follow_weights_updates_arrive_and_it_falls_back_without_nacos(
    rnacos: Rnacos, pods: FakePods
) -> None:
    weights = {7001: 100.0, 7002: 50.0, 7003: 20.0, 7004: 0.0}
    for port, w in weights.items():
        await pods.put(port, w)
    await pods.put(7005, 100.0, draining=True)

    picker = NacosPicker(rnacos.address, FALLBACK, rng=random.Random(7))
    await picker.start()
    try:

        async def listed(n: int) -> bool:
            return picker.reachable and len(picker.endpoints) == n

        await eventually(lambda: listed(5), 20, "five instances in the picker")
        got = shares(picker)
        assert set(got) == {7001, 7002, 7003}, "weight 0 and draining are never picked"
        for port in (7001, 7002, 7003):
            assert got[port] == pytest.approx(weights[port] / 170, abs=TOLERANCE), got
        assert picker.pick_url().startswith("ws://127.0.0.1:700")

        # A weight change reaches the picker by subscription.
        t_update = time.monotonic()
        await pods.put(7001, 0.0)

        async def weight_of_7001_is_zero() -> bool:
            return any(e.port == 7001 and e.weight == 0 for e in picker.endpoints)

        await eventually(weight_of_7001_is_zero, 10, "the new weight in the picker")
        print(f"\na weight change reached the picker in {time.monotonic() - t_update:.2f}s")
        got = shares(picker)
        assert set(got) == {7002, 7003}
        assert got[7002] == pytest.approx(50 / 70, abs=TOLERANCE), got

        # Nacos down: the fallback URL, never an error.
        rnacos.stop()
        t_down = time.monotonic()

        async def falls_back() -> bool:
            return picker.pick_url() == FALLBACK

        await eventually(falls_back, 15, "the picker to fall back to the Service URL")
        assert picker.pick() is None
        print(f"falling back {time.monotonic() - t_down:.2f}s after rnacos stopped")

        # Nacos back, empty (its instances were ephemeral): a pod registers again, as
        # signaling pods do on their own (the SDK's own re-registration took up to
        # about 30 s here), and the picker picks it.
        rnacos.start()
        t_back = time.monotonic()

        async def registered_again() -> bool:
            try:
                await pods.put(7002, 40.0)
            except Exception:  # the client is still reconnecting
                return False
            return True

        await eventually(registered_again, 15, "7002 registered again", every=0.2)

        async def picks_a_pod() -> bool:
            return picker.pick_url() in ("ws://127.0.0.1:7002/ws", "ws://127.0.0.1:7003/ws")

        await eventually(picks_a_pod, 15, "the picker to pick a pod again")
        print(f"\npicking pods again {time.monotonic() - t_back:.2f}s after rnacos came back")
    finally:
        await asyncio.wait_for(picker.close(), 10)
