"""``/metrics`` of a real signaling process, parsed by prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from signaling.client import Client
from tests.conftest import PodFactory

from .conftest import joined


async def test_metrics_scrape_parses(start_pod: PodFactory, clients: Callable[..., Client]) -> None:
    pod = start_pod()
    a = await joined(clients, pod.ws_url, "scrape", "a")
    b = await joined(clients, pod.ws_url, "scrape", "b")
    await a.relay("offer", "b", {"x": 1})
    await b.recv_until(lambda f: f["type"] == "offer")
    await a.send_raw("{bad")
    await a.recv_until(lambda f: f["type"] == "error")
    status, body = pod.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert families["roomwire_ws_connections"].type == "gauge"
    assert got[("roomwire_ws_connections", ())] == 2
    assert got[("roomwire_sessions", ())] == 2
    assert got[("roomwire_rooms", ())] == 1
    assert got[("roomwire_registry_up", ())] == 1  # the embedded registry always answers
    assert got[("roomwire_draining", ())] == 0
    assert families["roomwire_messages"].type == "counter"
    assert got[("roomwire_messages_total", (("type", "offer"),))] == 1
    assert got[("roomwire_errors_total", (("code", "bad-json"),))] == 1
    assert got[("roomwire_delivered_total", (("path", "local"),))] >= 1
    assert families["roomwire_relay_latency_seconds"].type == "histogram"
    assert got[("roomwire_relay_latency_seconds_count", ())] >= 1
    # The process collector of the pod itself.
    assert got[("process_resident_memory_bytes", ())] > 0
    assert got[("process_open_fds", ())] > 0
    assert ("process_cpu_seconds_total", ()) in got
