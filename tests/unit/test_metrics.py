"""The workload's and the operator's metrics facades, parsed back by prometheus_client.

No label of either comes from a client today (frame types, error and close codes, paths
and operator places are all fixed sets), so escaping is exercised through the facades
directly: a label value with quotes, a backslash and a newline must come back intact.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from meetingroom_operator.metrics import Metrics as OperatorMetrics
from signaling.metrics import Metrics as WorkloadMetrics

NASTY = 'say "hi"\\\nbye'


def samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [s.value for s in found.get(name, []) if s.labels == labels]
    assert len(matches) == 1, f"{name}{labels}: {found.get(name)}"
    return matches[0]


def test_workload_metrics_parse_back_with_escaped_labels() -> None:
    m = WorkloadMetrics(lambda: 3, lambda: 2, lambda: 1)
    m.messages.inc("offer")
    m.messages.inc("offer")
    m.errors.inc(NASTY)
    m.closes.inc("1013", by=2)
    m.kept.inc()
    m.delivered.inc("local")
    m.relay_latency.observe(0.003)
    found = samples(m.render())
    assert value(found, "roomwire_ws_connections") == 3
    assert value(found, "roomwire_sessions") == 2
    assert value(found, "roomwire_rooms") == 1
    assert value(found, "roomwire_messages_total", type="offer") == 2
    assert value(found, "roomwire_errors_total", code=NASTY) == 1
    assert value(found, "roomwire_closes_total", code="1013") == 2
    assert value(found, "roomwire_grace_kept_total") == 1
    assert value(found, "roomwire_delivered_total", path="local") == 1
    assert value(found, "roomwire_relay_latency_seconds_count") == 1
    assert value(found, "roomwire_relay_latency_seconds_bucket", le="0.005") == 1
    assert value(found, "roomwire_relay_latency_seconds_bucket", le="0.0025") == 0
    assert value(found, "process_resident_memory_bytes") > 0
    assert value(found, "process_cpu_seconds_total") >= 0


def test_each_workload_metrics_has_its_own_registry() -> None:
    first = WorkloadMetrics(lambda: 1, lambda: 1, lambda: 1)
    second = WorkloadMetrics(lambda: 5, lambda: 0, lambda: 0)
    first.messages.inc("ping")
    found = samples(second.render())
    assert value(found, "roomwire_ws_connections") == 5
    assert "roomwire_messages_total" not in found


def test_operator_metrics_parse_back_with_escaped_labels() -> None:
    m = OperatorMetrics()
    m.moves.inc(3, "room")
    m.errors.inc(1.0, NASTY)
    m.skew.set(1.5)
    m.dead_pods.inc()
    m.graced.inc(4.0)
    m.reconcile.observe(0.02, "loop")
    found = samples(m.render())
    assert value(found, "roomwire_operator_moves_total", kind="room") == 3
    assert value(found, "roomwire_operator_errors_total", where=NASTY) == 1
    assert value(found, "roomwire_operator_skew") == 1.5
    assert value(found, "roomwire_operator_dead_pods_total") == 1
    assert value(found, "roomwire_operator_sessions_graced_total") == 4
    assert value(found, "roomwire_operator_reconcile_seconds_bucket", kind="loop", le="0.025") == 1
    assert value(found, "roomwire_operator_reconcile_seconds_count", kind="loop") == 1
    assert value(found, "process_resident_memory_bytes") > 0
    assert m.moves.get("room") == 3 and m.moves.get("session") == 0
    assert m.errors.get(NASTY) == 1 and m.skew.get() == 1.5
    # Two operators in one process do not collide.
    assert OperatorMetrics().moves.get("room") == 0
