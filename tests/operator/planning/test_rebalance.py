"""Rebalance planner (pure): skew, targets, move minimality, pacing. Table tests and
hypothesis properties; nothing faked (plain values in, plain values out)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from meetingroom_operator.planning.rebalance import (
    MovePlan,
    Session,
    SkewWatch,
    balance_targets,
    minimum_moves,
    minimum_moves_within,
    pending_moves,
    plan_moves,
    schedule,
    skew,
    watch_skew,
)

PODS = [f"p{i}" for i in range(6)]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[Session], list[str]]:
    pods = draw(st.lists(st.sampled_from(PODS), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(0, 120))
    sessions = []
    for i in range(n):
        pod = draw(st.sampled_from(pods))
        room = f"r{draw(st.integers(0, 15))}"
        role = draw(st.sampled_from(["participant", "participant", "screen", "edge"]))
        busy = draw(st.integers(0, 9)) == 0
        sessions.append(Session(f"s{i}", pod, room, role, busy))
    return sessions, sorted(pods)


def apply(sessions: list[Session], plan: MovePlan) -> Counter[str]:
    where = {s.sid: s.pod for s in sessions}
    for m in plan.rooms:
        for sid in m.sids:
            assert where[sid] == m.source
            where[sid] = m.target
    for sm in plan.sessions:
        assert where[sm.sid] == sm.source
        where[sm.sid] = sm.expected_target
    return Counter(where.values())


def test_skew_table() -> None:
    assert skew({}) == 1.0
    assert skew({"a": 0, "b": 0}) == 1.0
    assert skew({"a": 200, "b": 200, "c": 0, "d": 0}) == 2.0
    assert skew({"a": 115, "b": 85}) == 1.15


def test_targets_and_minimum_table() -> None:
    cases = [
        ({"a": 200, "b": 200, "c": 0, "d": 0}, {"a": 100, "b": 100, "c": 100, "d": 100}, 200),
        ({"a": 3, "b": 0}, {"a": 2, "b": 1}, 1),
        ({"a": 5, "b": 5, "c": 1}, {"a": 4, "b": 4, "c": 3}, 2),
        ({"a": 7}, {"a": 7}, 0),
    ]
    for counts, targets, minimum in cases:
        assert balance_targets(counts) == targets
        assert minimum_moves(counts) == minimum
    assert minimum_moves_within({"a": 200, "b": 200, "c": 0, "d": 0}, 1.15) == 170


def test_whole_rooms_first_then_singles() -> None:
    # p0 holds rooms A (4 sessions, with an edge) and B (3); p1 is empty.
    s = [Session(f"a{i}", "p0", "A", "edge" if i == 0 else "participant") for i in range(4)]
    s += [Session(f"b{i}", "p0", "B") for i in range(3)]
    plan = plan_moves(s, ["p0", "p1"], homes={"A": "p0", "B": "p0"})
    # 7 sessions over 2 pods: targets 4/3, minimum 3; room A (4) does not fit, B does.
    assert [(m.room, m.target, m.rehome) for m in plan.rooms] == [("B", "p1", True)]
    assert plan.sessions == () and plan.moved_sessions == plan.minimum == 3
    # With room for it, the edge's room goes first.
    s2 = s + [Session(f"c{i}", "p0", f"C{i}") for i in range(5)]
    plan = plan_moves(s2, ["p0", "p1"], homes={"A": "p0"})
    assert plan.rooms[0].room == "A" and plan.rooms[0].rehome
    assert plan.moved_sessions == plan.minimum == 6


def test_busy_sessions_stay() -> None:
    s = [Session("x", "p0", "A", busy=True), Session("y", "p0", "A"), Session("z", "p0", "A")]
    plan = plan_moves(s, ["p0", "p1"])
    moved = {sid for m in plan.rooms for sid in m.sids} | {m.sid for m in plan.sessions}
    assert "x" not in moved and len(moved) == 1


def test_budget_limits_a_wave() -> None:
    s = [Session(f"s{i}", "p0", f"r{i}") for i in range(40)]
    plan = plan_moves(s, ["p0", "p1", "p2", "p3"], max_moves=10)
    assert plan.moved_sessions == 10 and plan.minimum == 30


def test_2_to_4_pods_e2e_shape() -> None:
    """The integration test's shape: 400 sessions, 100 rooms of 4, on 2 pods; 4 pods."""
    s = [Session(f"s{i}", f"p{i % 2}", f"r{i // 4}") for i in range(400)]
    plan = plan_moves(s, ["p0", "p1", "p2", "p3"])
    after = apply(s, plan)
    assert plan.moved_sessions == plan.minimum == 200
    assert set(after.values()) == {100}
    assert all(len(m.sids) == 2 for m in plan.rooms)  # each room has 2 on each pod


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_moves_are_minimal_and_balance(layout: tuple[list[Session], list[str]]) -> None:
    sessions, pods = layout
    counts = Counter({p: 0 for p in pods})
    counts.update(s.pod for s in sessions)
    plan = plan_moves(sessions, pods)
    targets = balance_targets(counts)
    # Never more than the minimum, each move from above target to below target.
    assert plan.moved_sessions <= plan.minimum == minimum_moves(counts)
    for m in plan.rooms:
        assert counts[m.source] > targets[m.source] and counts[m.target] < targets[m.target]
    moved = [sid for m in plan.rooms for sid in m.sids] + [m.sid for m in plan.sessions]
    assert len(moved) == len(set(moved))
    busy = {s.sid for s in sessions if s.busy}
    assert not busy & set(moved)
    after = apply(sessions, plan)
    for p in pods:
        # nobody ends above its target, nobody is pushed past it from below
        assert after[p] <= max(targets[p], counts[p])
        assert after[p] >= min(targets[p], counts[p])
    if not busy:
        assert plan.moved_sessions == plan.minimum
        assert all(after[p] == targets[p] for p in pods)


@settings(max_examples=100, deadline=None)
@given(layouts(), st.integers(0, 50))
def test_budget_respected(layout: tuple[list[Session], list[str]], budget: int) -> None:
    sessions, pods = layout
    plan = plan_moves(sessions, pods, max_moves=budget)
    assert plan.moved_sessions <= budget


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_replanning_after_the_plan_is_a_no_op(layout: tuple[list[Session], list[str]]) -> None:
    sessions, pods = layout
    if any(s.busy for s in sessions):
        return
    plan = plan_moves(sessions, pods)
    where = {s.sid: s.pod for s in sessions}
    for m in plan.rooms:
        for sid in m.sids:
            where[sid] = m.target
    for sm in plan.sessions:
        where[sm.sid] = sm.expected_target
    moved = [Session(s.sid, where[s.sid], s.room, s.role) for s in sessions]
    assert plan_moves(moved, pods).moved_sessions == 0


def test_excluded_sessions_are_not_moved_twice() -> None:
    s = [Session(f"s{i}", "p0", f"r{i}") for i in range(10)]
    first = plan_moves(s, ["p0", "p1"])
    inflight = frozenset(m.sid for m in first.sessions) | frozenset(
        sid for m in first.rooms for sid in m.sids
    )
    second = plan_moves(s, ["p0", "p1"], exclude=inflight)
    again = {m.sid for m in second.sessions} | {sid for m in second.rooms for sid in m.sids}
    assert not again & inflight


def test_schedule_is_paced_and_jittered() -> None:
    s = [Session(f"s{i}", "p0", "big") for i in range(30)] + [Session("solo", "p0", "solo")]
    plan = plan_moves(s, ["p0", "p1", "p2"])
    urls = {p: f"ws://{p}/ws" for p in ["p0", "p1", "p2"]}
    cmds = schedule(plan, urls, random.Random(7), window_ms=4000, batch=5)
    reconnects = [c for c in cmds if c.cmd["op"] == "reconnect"]
    migrates = [c for c in cmds if c.cmd["op"] == "migrate-room"]
    assert all(len(c.sids) <= 5 for c in reconnects)
    afters = [c.cmd["after_ms"] for c in reconnects]
    assert len(set(afters)) > 1 and all(0 <= int(str(a)) < 4000 for a in afters)
    assert all(m.cmd["url"] in urls.values() for m in migrates)
    assert [c.at_ms for c in cmds] == sorted(c.at_ms for c in cmds)
    sent = sorted(sid for c in cmds for sid in c.sids)
    assert len(sent) == plan.moved_sessions == len(set(sent))
    # Same seed, same schedule: deterministic.
    assert cmds == schedule(plan, urls, random.Random(7), window_ms=4000, batch=5)


def test_watch_skew_needs_persistence() -> None:
    w, fire = watch_skew(SkewWatch(), 1.5, 100.0, 1.1, 3.0)
    assert not fire and w.since == 100.0
    w, fire = watch_skew(w, 1.5, 102.0, 1.1, 3.0)
    assert not fire
    w, fire = watch_skew(w, 1.5, 103.5, 1.1, 3.0)
    assert fire
    w, fire = watch_skew(w, 1.05, 104.0, 1.1, 3.0)
    assert not fire and w.since is None


def test_pending_moves() -> None:
    inflight = {"on-source": "p0", "arrived": "p0", "in-grace": "p0", "gone": "p0"}
    where = {
        "on-source": ("p0", "live"),
        "arrived": ("p1", "live"),
        "in-grace": ("", "grace"),
        "gone": None,
    }
    assert pending_moves(inflight, where) == {"on-source", "in-grace"}
