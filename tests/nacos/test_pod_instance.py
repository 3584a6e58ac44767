"""A signaling pod's own instance in Nacos, against a real rnacos and real pods
(``python -m signaling serve --nacos-server ...``, embedded registry): registered with
its metadata (seen through the open API and through ``nacos-sdk-python``), updated as
its connections change, weight 0 when it drains and gone after; and a Nacos outage of
30 s that no client of the pod notices, with the pod registered again afterwards.
Nothing is faked. The figures measured are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from signaling.client import Client
from tests.conftest import Pod, PodFactory
from tests.nacos.conftest import Rnacos
from tests.support import eventually

SERVICE = "roomwire-signaling"


def nacos_args(rnacos: Rnacos, *extra: str) -> list[str]:
    return [
        "--nacos-server",
        rnacos.address,
        "--nacos-zone",
        "zone-a",
        "--pod-namespace",
        "roomwire",
        "--nacos-interval",
        "1",
        *extra,
    ]


def instance_of(rnacos: Rnacos, pod: Pod) -> dict[str, Any] | None:
    for host in rnacos.instances(SERVICE):
        if host["ip"] == pod.host and int(host["port"]) == pod.port:
            return host
    return None


async def test_a_pod_registers_with_its_metadata_updates_it_and_leaves_when_it_drains(
    rnacos: Rnacos, start_pod: PodFactory
) -> None:
    t0 = time.monotonic()
    pod = start_pod(pod_id="sig-1", args=nacos_args(rnacos, "--drain", "3"), wait_ready=False)
    host = await eventually(
        lambda: asyncio.to_thread(instance_of, rnacos, pod), 20, "the pod in Nacos"
    )
    print(f"\nregistered {time.monotonic() - t0:.2f}s after the pod process started")
    assert pod.ready()
    meta = host["metadata"]
    assert meta["pod"] == "sig-1"
    assert meta["namespace"] == "roomwire"
    assert meta["zone"] == "zone-a"
    assert meta["version"] and meta["version"] != "unknown"
    assert meta["connections"] == "0"
    assert meta["draining"] == "false"
    assert float(host["weight"]) == 100.0
    assert host["healthy"] is True

    # The same through the SDK's gRPC client.
    from v2.nacos import (  # type: ignore[import-untyped]
        ClientConfigBuilder,
        ListInstanceParam,
        NacosNamingService,
    )

    config = ClientConfigBuilder().server_address(rnacos.address).build()
    config.log_dir = config.cache_dir = rnacos.workdir + "/sdk"
    naming = await NacosNamingService.create_naming_service(config)
    try:
        listed = await naming.list_instances(
            ListInstanceParam(service_name=SERVICE, subscribe=False, healthy_only=None)
        )
        [inst] = [i for i in listed if i.ip == pod.host and i.port == pod.port]
        assert inst.metadata["pod"] == "sig-1"
        assert inst.weight == 100.0 and inst.ephemeral and inst.healthy
    finally:
        await naming.shutdown()

    # Connections reach the metadata within an interval.
    alice, bob = Client(pod.ws_url), Client(pod.ws_url)
    for c, name in ((alice, "alice"), (bob, "bob")):
        await c.connect()
        await c.join("room-1", name)

    async def connections(n: str) -> bool:
        host = await asyncio.to_thread(instance_of, rnacos, pod)
        return host is not None and host["metadata"]["connections"] == n

    await eventually(lambda: connections("2"), 10, "connections=2 in Nacos")

    # Drain: weight 0 at once (clients are still being told to reconnect), then gone.
    t_term = time.monotonic()
    pod.proc.send_signal(signal.SIGTERM)

    async def withdrawn() -> dict[str, Any] | None:
        host = await asyncio.to_thread(instance_of, rnacos, pod)
        if host is not None and float(host["weight"]) == 0.0:
            return host
        return None

    host = await eventually(withdrawn, 5, "weight 0 in Nacos")
    t_zero = time.monotonic() - t_term
    assert host["metadata"]["draining"] == "true"
    assert pod.proc.poll() is None, "weight 0 is published while the pod still drains"

    async def gone() -> bool:
        return await asyncio.to_thread(instance_of, rnacos, pod) is None

    await eventually(gone, 15, "the instance gone from Nacos")
    print(f"weight 0 {t_zero:.2f}s after SIGTERM, gone after {time.monotonic() - t_term:.2f}s")
    assert pod.proc.wait(15) == 0
    for c in (alice, bob):
        await c.close()


async def test_a_nacos_outage_is_invisible_to_clients_and_the_pod_registers_again(
    rnacos: Rnacos, start_pod: PodFactory
) -> None:
    pod = start_pod(pod_id="sig-2", args=nacos_args(rnacos))
    await eventually(lambda: asyncio.to_thread(instance_of, rnacos, pod), 20, "the pod in Nacos")
    alice, bob = Client(pod.ws_url), Client(pod.ws_url)
    for c, name in ((alice, "alice"), (bob, "bob")):
        await c.connect()
        await c.join("room-1", name)

    async def round_trip(i: int) -> float:
        """An offer from alice to bob: acked to alice and delivered to bob; seconds."""
        t = time.monotonic()
        await alice.relay("offer", "bob", {"i": i}, frame_id=i)
        ack = await alice.recv_until(lambda f: f["type"] in ("ack", "error"), timeout=5)
        assert ack["type"] == "ack", ack
        got = await bob.recv_until(lambda f: f["type"] == "offer", timeout=5)
        assert got["data"] == {"i": i}
        return time.monotonic() - t

    before = [await round_trip(i) for i in range(20)]

    rnacos.stop()
    outage_s, during, i = 30.0, [], 100
    t_stop = time.monotonic()
    while time.monotonic() - t_stop < outage_s:
        during.append(await round_trip(i))
        i += 1
        status, _ = await asyncio.to_thread(pod.get, "/readyz")
        assert status == 200, "readiness never depends on Nacos"
        await asyncio.sleep(0.2)  # pacing of the traffic, not a wait for a condition
    assert pod.proc.poll() is None
    print(
        f"\n{len(during)} round trips during the outage, max {max(during) * 1000:.1f} ms "
        f"(before: max {max(before) * 1000:.1f} ms over {len(before)})"
    )
    assert max(during) < 1.0, "no frame waits on Nacos"

    t_back = time.monotonic()
    rnacos.start()  # same ports, empty of ephemeral instances
    host = await eventually(
        lambda: asyncio.to_thread(instance_of, rnacos, pod), 30, "the pod in Nacos again"
    )
    print(f"registered again {time.monotonic() - t_back:.2f}s after rnacos came back")
    assert host["metadata"]["pod"] == "sig-2"
    assert host["metadata"]["connections"] == "2"
    assert float(host["weight"]) == 100.0
    assert await round_trip(999) < 1.0
    log = pod.log.read_text()
    assert log.count("nacos unreachable") == 1, "one warning per outage, not one per retry"
    for c in (alice, bob):
        await c.close()
