"""An edge that finds its cloud pod through Nacos (``--upstream nacos://...``): real
rnacos, two real pods registered in it, the operator's weight command steering the
choice, a real ``signaling edge`` process. And the fallback URL when Nacos is away."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable

from meetingroom_operator.store import Store
from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.nacos.conftest import Rnacos, nacos_ports, rnacos_binary
from tests.nacos.test_pod_instance import instance_of, nacos_args
from tests.support import eventually, free_port, wait_until

from .conftest import EdgeFactory, metric

SECRET = "test-control-secret-0123456789abcdef"


async def test_an_edge_links_to_the_pod_nacos_weighs_and_falls_back_without_it(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    workdir = tempfile.mkdtemp(prefix="rw-rnacos-")
    rnacos = Rnacos(await asyncio.to_thread(rnacos_binary), *nacos_ports(), workdir)
    await asyncio.to_thread(rnacos.start)
    store = Store(redis_url)
    try:
        args = nacos_args(rnacos, "--control-secret", SECRET)
        pod1 = start_pod(redis_url, "pod-1", args=args, wait_ready=False)
        pod2 = start_pod(redis_url, "pod-2", args=args, wait_ready=False)
        await asyncio.to_thread(wait_ready, pod1, pod2)
        # The operator takes pod-1 out of the choice: weight 0 on its instance.
        await store.command(SECRET, "pod-1", {"op": "weight", "weight": 0})

        async def weights() -> bool:
            hosts = [await asyncio.to_thread(instance_of, rnacos, p) for p in (pod1, pod2)]
            return [None if h is None else float(h["weight"]) for h in hosts] == [0.0, 100.0]

        await eventually(weights, 20, "weights 0 and 100 in Nacos")

        edge = start_edge("huddle", upstream_urls=[f"nacos://{rnacos.address}"])
        laptop = clients(edge.ws_url)
        await laptop.connect()
        await laptop.join("huddle", "laptop")
        wait_until(lambda: edge.linked(1), 15, "the edge linked through Nacos")
        assert edge.status()["pod"] == "pod-2"
        assert metric(pod2, "roomwire_sessions") == 1 and metric(pod1, "roomwire_sessions") == 0
        remote = clients(pod1.ws_url)
        await remote.connect()
        j = await remote.join("huddle", "remote")
        assert j["peers"] == [{"peer": "laptop", "role": "participant"}]
        await remote.relay("offer", "laptop", {"sdp": "v=0"}, frame_id=1)
        got = await laptop.recv_until(lambda f: f["type"] == "offer")
        assert got["from"] == "remote" and got["data"] == {"sdp": "v=0"}

        # Nacos unreachable: the fallback URL (here pod-1's) serves.
        nowhere = f"127.0.0.1:{free_port()}"
        fallback = f"ws://127.0.0.1:{pod1.port}/ws"
        edge2 = start_edge("annex", upstream_urls=[f"nacos://{nowhere}?fallback={fallback}"])
        screen = clients(edge2.ws_url)
        await screen.connect()
        await screen.join("annex", "screen", "screen")
        wait_until(lambda: edge2.linked(1), 20, "the edge linked through the fallback")
        assert edge2.status()["pod"] == "pod-1"
    finally:
        await store.close()
        await asyncio.to_thread(rnacos.stop)
        shutil.rmtree(workdir, ignore_errors=True)
