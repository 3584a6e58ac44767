"""The live view's pure model (``devcluster.liveview.model``): the Prometheus text parsed,
decisions read from two snapshots, the bounded history. No I/O, nothing faked."""

from __future__ import annotations

from dataclasses import replace

from devcluster.liveview.model import (
    HISTORY_POINTS,
    LiveState,
    OperatorView,
    PodView,
    RoomView,
    Snapshot,
    decisions,
    metric_sum,
    parse_metrics,
    sessions_by_room,
)
from roomwire_contract import keys

METRICS = """\
# HELP roomwire_ws_connections Open WebSocket connections of this process.
# TYPE roomwire_ws_connections gauge
roomwire_ws_connections 7.0
roomwire_sessions 8.0
roomwire_operator_moves_total{kind="room"} 3.0
roomwire_operator_moves_total{kind="session"} 2.0
roomwire_relay_latency_seconds_bucket{le="0.001"} 10.0
"""


def pod(name: str, connections: int = 0, accepting: bool = True, draining: bool = False) -> PodView:
    return PodView(name, True, accepting, draining, 100, connections, connections, 1)


def snap(
    at: float,
    pods: list[PodView],
    replicas: int = 2,
    moves: tuple[int, int] = (0, 0),
    rooms: tuple[RoomView, ...] = (),
) -> Snapshot:
    operator = OperatorView(True, replicas, 1.2, moves[0], moves[1])
    return Snapshot(at, "ns", replicas, tuple(pods), rooms, operator, 0)


def test_parse_metrics_reads_plain_and_labelled_samples_and_skips_comments() -> None:
    got = parse_metrics(METRICS)
    assert got["roomwire_ws_connections"] == 7.0
    assert got['roomwire_operator_moves_total{kind="room"}'] == 3.0
    assert metric_sum(got, "roomwire_operator_moves_total") == 5.0
    assert metric_sum(got, "roomwire_missing") == 0.0
    assert not any(k.startswith("#") for k in got)


def test_no_decisions_from_the_first_snapshot_or_an_unchanged_one() -> None:
    s = snap(1, [pod("a"), pod("b")])
    assert decisions(None, s) == []
    assert decisions(s, replace(s, at=2)) == []


def test_scale_rebalance_accepting_draining_pods_and_rehoming_are_seen() -> None:
    room = RoomView("boardroom", "a", "Ready", 20, 5)
    before = snap(1, [pod("a", 6), pod("b", 2)], replicas=2, rooms=(room,))
    after = snap(
        2,
        [pod("a", 6, accepting=False), pod("b", 2, draining=True), pod("c")],
        replicas=3,
        moves=(2, 1),
        rooms=(replace(room, home="c"),),
    )
    texts = {d.kind: d.text for d in decisions(before, after)}
    assert texts["scale"] == "scale 2 → 3 (the operator wants 3)"
    assert texts["rebalance"].startswith("rebalance: 3 sessions ordered to move (2 with")
    assert texts["accepting"] == "a stops accepting"
    assert texts["draining"] == "b drains"
    assert texts["pod"] == "pod c appeared"
    assert texts["rehome"] == "room boardroom re-homed a → c"
    gone = decisions(after, snap(3, [pod("a")], replicas=3, moves=(2, 1)))
    assert [d.text for d in gone if d.kind == "pod"] == ["pod b gone", "pod c gone"]


def test_a_restarted_operator_counting_from_zero_is_no_rebalance() -> None:
    before = snap(1, [pod("a")], moves=(5, 5))
    after = snap(2, [pod("a")], moves=(0, 0))
    assert decisions(before, after) == []


def test_history_is_bounded_and_served_after_since() -> None:
    state = LiveState()
    for i in range(HISTORY_POINTS + 10):
        state.add(snap(float(i), [pod("a", i % 5)]))
    assert len(state.history) == HISTORY_POINTS
    served = state.to_json(since=float(HISTORY_POINTS + 7))
    assert [h["at"] for h in served["history"]] == [HISTORY_POINTS + 8.0, HISTORY_POINTS + 9.0]
    assert served["snapshot"]["pods"][0]["name"] == "a"


def test_unscraped_pods_are_left_out_of_the_history_not_counted_as_zero() -> None:
    state = LiveState()
    state.add(snap(1, [pod("a", 3), replace(pod("b"), connections=None)]))
    assert state.history[-1] == (1, {"a": 3})


def test_a_pods_session_set_is_counted_per_room() -> None:
    members = [keys.session_member("boardroom", f"p{i}") for i in range(3)]
    members += [keys.session_member("huddle-2", "a"), "not-a-member"]
    assert sessions_by_room(members) == {"boardroom": 3, "huddle-2": 1}
