"""Scaling, weights, room specs and status (pure): table tests and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meetingroom_operator.planning.rooms import is_active, room_spec
from meetingroom_operator.planning.scaling import (
    DELETION_COST_DRAINED,
    PodLoad,
    Recommendation,
    ScalingPolicy,
    deletion_costs,
    pick_emptiest,
    plan_replicas,
    plan_scale,
    raw_replicas,
)
from meetingroom_operator.planning.status import RoomObservation, build_status
from meetingroom_operator.planning.weights import plan_weights


@pytest.mark.parametrize(
    ("capacity", "live", "policy", "want"),
    [
        (0, 0, ScalingPolicy(per_pod=100), 1),
        (250, 0, ScalingPolicy(per_pod=100), 3),
        (100, 350, ScalingPolicy(per_pod=100), 4),  # live connections win when larger
        (200, 0, ScalingPolicy(per_pod=100, buffer_pods=1), 3),
        (200, 0, ScalingPolicy(per_pod=100, buffer_percent=50), 3),
        (10_000, 0, ScalingPolicy(per_pod=100, max_replicas=8), 8),
        (0, 0, ScalingPolicy(per_pod=100, min_replicas=2), 2),
    ],
)
def test_raw_replicas(capacity: int, live: int, policy: ScalingPolicy, want: int) -> None:
    assert raw_replicas(capacity, live, policy) == want


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(per_pod=0)
    with pytest.raises(ValueError):
        ScalingPolicy(per_pod=1, min_replicas=5, max_replicas=2)


def test_stabilisation_window() -> None:
    policy = ScalingPolicy(per_pod=100, window_s=30)
    d = plan_replicas(400, 0, policy, (), now=0.0)
    assert d.replicas == 4
    d = plan_replicas(100, 0, policy, d.history, now=10.0)  # demand fell: hold
    assert d.replicas == 4 and d.raw == 1
    d = plan_replicas(100, 0, policy, d.history, now=29.0)
    assert d.replicas == 4
    d = plan_replicas(100, 0, policy, d.history, now=31.0)  # window passed
    assert d.replicas == 1
    d = plan_replicas(900, 0, policy, d.history, now=32.0)  # up: at once
    assert d.replicas == 9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.floats(0, 5)), min_size=1, max_size=30))
def test_never_below_any_recent_recommendation(steps: list[tuple[int, float]]) -> None:
    policy = ScalingPolicy(per_pod=100, max_replicas=50, window_s=10)
    history: tuple[Recommendation, ...] = ()
    now = 0.0
    for demand, dt in steps:
        now += dt
        d = plan_replicas(demand, 0, policy, history, now)
        history = d.history
        recent = [r.replicas for r in history if now - r.at < policy.window_s]
        assert d.replicas == max(recent) >= d.raw
        assert policy.min_replicas <= d.replicas <= policy.max_replicas


def test_scale_up_is_immediate() -> None:
    step = plan_scale(2, 4, [PodLoad("a", 10), PodLoad("b", 10)], 0.0, 30.0)
    assert step.scale_to == 4 and step.drain == ()
    assert plan_scale(2, 2, [], 0.0, 30.0).scale_to is None


def test_scale_down_drains_emptiest_first_then_scales() -> None:
    pods = [PodLoad("a", 50), PodLoad("b", 3), PodLoad("c", 20)]
    step = plan_scale(3, 2, pods, 100.0, 30.0)
    assert step.drain == ("b",) and step.scale_to is None
    draining = [PodLoad("a", 50), PodLoad("b", 1, draining_since=100.0), PodLoad("c", 20)]
    step = plan_scale(3, 2, draining, 110.0, 30.0)
    assert step.drain == () and step.scale_to is None and step.waiting_for == ("b",)
    empty = [PodLoad("a", 50), PodLoad("b", 0, draining_since=100.0), PodLoad("c", 20)]
    assert plan_scale(3, 2, empty, 111.0, 30.0).scale_to == 2
    # The drain deadline bounds the wait.
    assert plan_scale(3, 2, draining, 131.0, 30.0).scale_to == 2


def test_deletion_costs() -> None:
    costs = deletion_costs([PodLoad("a", 7), PodLoad("b", 0, draining_since=1.0)])
    assert costs == {"a": 7, "b": DELETION_COST_DRAINED}
    assert pick_emptiest([PodLoad("a", 7), PodLoad("b", 2), PodLoad("c", 2)], 2) == ["b", "c"]


def test_weights_table() -> None:
    w = plan_weights({"a": 200, "b": 200, "c": 0, "d": 0})
    assert [w[p].accepting for p in "abcd"] == [False, False, True, True]
    assert w["a"].weight == 50 and w["c"].weight == 100
    # Hysteresis: a pod out of rotation comes back only near the mean.
    w = plan_weights({"a": 105, "b": 95}, accepting_now={"a": False})
    assert not w["a"].accepting
    w = plan_weights({"a": 101, "b": 99}, accepting_now={"a": False})
    assert w["a"].accepting
    # Small absolute excess does not flip a pod.
    assert plan_weights({"a": 3, "b": 2})["a"].accepting
    # Draining pods weigh 0; someone always accepts.
    w = plan_weights({"a": 10, "b": 0}, draining=frozenset({"b"}))
    assert w["b"] == type(w["b"])("b", 0, False) and w["a"].accepting


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 1000), min_size=1))
def test_someone_accepts_and_weights_are_bounded(counts: dict[str, int]) -> None:
    w = plan_weights(counts, accepting_now=dict.fromkeys(counts, False))
    assert any(x.accepting for x in w.values())
    assert all(0 <= x.weight <= 100 for x in w.values())
    # monotone: more connections never means a larger weight
    ordered = sorted(counts, key=lambda p: counts[p])
    weights = [w[p].weight for p in ordered]
    assert weights == sorted(weights, reverse=True)


def test_room_spec_and_activity() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    s = room_spec("room-a", {"capacity": 12, "displayName": "A"})
    assert s.room == "room-a" and is_active(s, now)
    sched = {"start": "2030-01-01T12:10:00Z", "end": "2030-01-01T13:00:00Z"}
    s = room_spec("b", {"capacity": 5, "roomId": "x", "schedule": {**sched, "prewarmSeconds": 900}})
    assert s.room == "x" and is_active(s, now)
    s = room_spec("b", {"capacity": 5, "schedule": {**sched, "prewarmSeconds": 60}})
    assert not is_active(s, now)
    assert not is_active(s, now + timedelta(hours=2))
    assert not is_active(room_spec("p", {"capacity": 1, "paused": True}), now)
    with pytest.raises(ValueError):
        room_spec("bad", {"capacity": 0})


def test_status_keeps_transition_times() -> None:
    obs = RoomObservation("pod-1", "ws://x/ws", 3, 4, True, 2)
    s1 = build_status(obs, [], "T1")
    assert s1["phase"] == "Ready" and s1["homePod"] == "pod-1"
    assert {c["type"] for c in s1["conditions"]} == {"Ready", "Placed"}
    s2 = build_status(obs, s1["conditions"], "T2")
    assert all(c["lastTransitionTime"] == "T1" for c in s2["conditions"])
    s3 = build_status(RoomObservation(None, None, 0, 0, True, 3), s2["conditions"], "T3")
    assert s3["phase"] == "Pending"
    assert all(c["lastTransitionTime"] == "T3" for c in s3["conditions"])
    idle = build_status(RoomObservation("p", "u", 0, 0, False, 1), [], "T")
    assert idle["phase"] == "Idle"
