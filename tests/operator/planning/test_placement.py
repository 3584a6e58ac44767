"""Placement planner (pure): table tests and hypothesis properties. Nothing is faked:
the planner takes plain values and returns plain values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meetingroom_operator.planning.placement import (
    Placement,
    Ring,
    RoomDemand,
    load_bound,
    plan_placement,
)

rooms_st = st.dictionaries(
    st.text("abcdefghijklmnop0123456789-", min_size=1, max_size=8),
    st.integers(1, 50),
    min_size=0,
    max_size=60,
).map(lambda d: [RoomDemand(r, c) for r, c in sorted(d.items())])
pods_st = st.sets(st.sampled_from([f"pod-{i}" for i in range(12)]), min_size=1, max_size=8)


def check_invariants(rooms: list[RoomDemand], pods: set[str], p: Placement) -> None:
    assert set(p.homes) == {r.room for r in rooms}
    assert set(p.homes.values()) <= pods
    cap = {r.room: r.capacity for r in rooms}
    for pod in pods:
        assert p.load[pod] == sum(cap[r] for r, h in p.homes.items() if h == pod)


def test_table() -> None:
    cases = [
        # (rooms, pods, current, expect_home_of_r1)
        ([RoomDemand("r1", 10)], ["a"], {}, "a"),
        ([RoomDemand("r1", 10)], ["a", "b"], {"r1": "b"}, "b"),  # sticky
        ([RoomDemand("r1", 10)], ["a"], {"r1": "gone"}, "a"),  # orphan re-homed
    ]
    for rooms, pods, current, want in cases:
        assert plan_placement(rooms, pods, current).homes["r1"] == want


def test_no_pods_places_nothing() -> None:
    p = plan_placement([RoomDemand("r", 3)], [], {"r": "x"})
    assert p.homes == {} and p.orphaned == frozenset({"r"})


def test_orphans_and_moves_are_reported() -> None:
    rooms = [RoomDemand(f"r{i}", 10) for i in range(8)]
    current = {f"r{i}": "a" for i in range(8)}
    p = plan_placement(rooms, ["a", "b"], current, balance=1.0)
    assert p.load == {"a": 40, "b": 40}
    assert len(p.moved) == 4 and not p.orphaned
    q = plan_placement(rooms, ["b"], p.homes)
    assert q.orphaned == frozenset(r for r, h in p.homes.items() if h == "a")


def test_shed_cheapest_rooms_first() -> None:
    rooms = [RoomDemand(f"r{i}", 10) for i in range(4)]
    current = dict.fromkeys(["r0", "r1", "r2", "r3"], "a")
    live = {"r0": 9, "r1": 0, "r2": 7, "r3": 0}
    p = plan_placement(rooms, ["a", "b"], current, live=live, balance=1.0)
    assert p.moved == frozenset({"r1", "r3"})


def test_ring_walk_visits_each_pod_once() -> None:
    ring = Ring(["a", "b", "c"], vnodes=8)
    assert sorted(ring.walk("x")) == ["a", "b", "c"]
    assert list(Ring([], 8).walk("x")) == []


def test_load_bound() -> None:
    assert load_bound(100, 4, 10, 1.25) == 32
    assert load_bound(10, 4, 9, 1.0) == 9  # the largest room must fit
    assert load_bound(0, 3, 0, 1.25) == 1


@settings(max_examples=100, deadline=None)
@given(rooms_st, pods_st)
def test_balanced_and_complete(rooms: list[RoomDemand], pods: set[str]) -> None:
    p = plan_placement(rooms, pods, {})
    check_invariants(rooms, pods, p)
    # The ring walk only falls back to the least loaded pod when nothing fits; with the
    # bound >= largest room and >= 1.25 x mean that never exceeds the bound by more than
    # the largest room.
    biggest = max((r.capacity for r in rooms), default=0)
    assert all(load <= p.bound + biggest for load in p.load.values())


@settings(max_examples=100, deadline=None)
@given(rooms_st, pods_st, st.randoms(use_true_random=False))
def test_independent_of_input_order(rooms: list[RoomDemand], pods: set[str], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(rooms)
    rnd.shuffle(shuffled)
    assert plan_placement(rooms, pods, {}).homes == plan_placement(shuffled, pods, {}).homes


@settings(max_examples=100, deadline=None)
@given(rooms_st, pods_st)
def test_idempotent(rooms: list[RoomDemand], pods: set[str]) -> None:
    first = plan_placement(rooms, pods, {})
    again = plan_placement(rooms, pods, first.homes)
    assert again.homes == first.homes and not again.moved


@settings(max_examples=100, deadline=None)
@given(rooms_st, pods_st.filter(lambda s: len(s) >= 2), st.data())
def test_removing_a_pod_moves_only_its_rooms(rooms, pods, data) -> None:  # type: ignore[no-untyped-def]
    before = plan_placement(rooms, pods, {})
    gone = data.draw(st.sampled_from(sorted(pods)))
    after = plan_placement(rooms, pods - {gone}, before.homes)
    changed = {r for r in after.homes if after.homes[r] != before.homes[r]}
    assert changed == {r for r, h in before.homes.items() if h == gone}
    assert not after.moved


@settings(max_examples=100, deadline=None)
@given(rooms_st, pods_st, st.sampled_from([f"new-{i}" for i in range(3)]))
def test_adding_a_pod_moves_only_what_must_move(rooms, pods, new) -> None:  # type: ignore[no-untyped-def]
    before = plan_placement(rooms, pods, {})
    after = plan_placement(rooms, pods | {new}, before.homes)
    cap = {r.room: r.capacity for r in rooms}
    # Only rooms of pods above the new bound move, and such a pod sheds no more than
    # its excess plus one room.
    for pod in pods:
        shed = [r for r, h in before.homes.items() if h == pod and after.homes[r] != pod]
        if not shed:
            continue
        excess = before.load[pod] - after.bound
        assert excess > 0
        assert sum(cap[r] for r in shed) < excess + max(cap[r] for r in shed) + after.bound
        assert after.load[pod] <= after.bound + max(cap.values())
    # Moved rooms never go between old pods unless a pod had to shed.
    moved_cap = sum(cap[r] for r in after.moved)
    total = sum(cap.values())
    if total:
        over = sum(max(0, before.load[p] - after.bound) for p in pods)
        assert moved_cap <= over + len(pods) * max(cap.values())


def test_adding_pods_moves_a_fair_share() -> None:
    """1,000 rooms on 4 pods, then 5: about 1/5 of the capacity moves, not more."""
    rooms = [RoomDemand(f"room-{i}", 5 + i % 20) for i in range(1000)]
    four = plan_placement(rooms, [f"p{i}" for i in range(4)], {}, balance=1.05)
    five = plan_placement(rooms, [f"p{i}" for i in range(5)], four.homes, balance=1.05)
    total = sum(r.capacity for r in rooms)
    moved = sum(r.capacity for r in rooms if r.room in five.moved)
    assert moved <= 0.25 * total
    assert max(five.load.values()) <= five.bound
