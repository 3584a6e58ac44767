"""What scaling counts while the operator's own moves are in flight (pure): each session
once, from the registry's records, never the sum of the pods' heartbeat snapshots.

Nothing is faked and nothing runs: the inputs are what the operator observes (each
pod's last heartbeat, the registry's session records, the moves it recorded in
flight), built for a 3 -> 6 pod scale-out of 400 sessions followed by its rebalance
wave, with the timing the workload has (a heartbeat every 2 s per pod, each at its own
moment; ``reconnect`` closes the old socket at once and the client resumes after its
``after_ms``; ``migrate-room`` opens the new socket first and the old pod closes the
old one up to 2 s later).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from meetingroom_operator.planning.rebalance import (
    ScaleOutWatch,
    Session,
    pending_moves,
    plan_moves,
    watch_scale_out,
)
from meetingroom_operator.planning.scaling import (
    Recommendation,
    ScalingPolicy,
    plan_replicas,
    plan_scale,
    session_demand,
)

OLD = ["p0", "p1", "p2"]
NEW = ["p3", "p4", "p5"]
HEARTBEAT_S = 2.0
PHASE = {"p0": 0.0, "p1": 0.7, "p2": 1.4, "p3": 0.2, "p4": 0.9, "p5": 1.6}
"""When in its 2 s period each pod heartbeats."""
POLICY = ScalingPolicy(per_pod=70, max_replicas=10, window_s=120)
"""400 sessions ask for 6 pods (ceil(400 / 70)); 401 to 420 for 6 too, 421+ for 7."""


@dataclass(frozen=True)
class Move:
    sid: str
    source: str
    target: str
    closed: float
    """When the old socket closes."""
    resumed: float
    """When the session is live on the target (its registry record names it)."""


@dataclass(frozen=True)
class Observed:
    heartbeat_connections: dict[str, int]
    live: list[Session]
    inflight: dict[str, str]
    where: dict[str, tuple[str, str] | None]


def start(per_room: int) -> list[Session]:
    """400 sessions in rooms of ``per_room``, joined through the Service: 134/133/133
    on the three old pods."""
    return [Session(f"s{i:03}", OLD[i % 3], f"r{i // per_room}") for i in range(400)]


def wave(sessions: list[Session], at: float, linger: float) -> list[Move]:
    """The planner's moves to 6 pods, paced: whole rooms by ``migrate-room`` over 1.5 s
    (the client opens its new socket first; the old pod closes the old one ``linger``
    seconds later: when the takeover notice reaches it, or at the latest after 2 s),
    single sessions by ``reconnect`` over 3 s (old socket closed at once, resumed 0 to
    1.5 s later)."""
    plan = plan_moves(sessions, OLD + NEW)
    assert plan.moved_sessions == plan.minimum == 199  # 134/133/133 -> 67 x 4, 66 x 2
    out: list[Move] = []
    for i, m in enumerate(plan.rooms):
        t = at + 1.5 * i / max(len(plan.rooms), 1)
        out += [Move(sid, m.source, m.target, t + 0.05 + linger, t + 0.05) for sid in m.sids]
    for i, sm in enumerate(plan.sessions):
        t = at + 3.0 * i / max(len(plan.sessions), 1)
        out.append(Move(sm.sid, sm.source, sm.expected_target, t, t + 1.5 * (i % 4) / 3))
    return out


def observe(sessions: list[Session], moves: list[Move], wave_at: float, now: float) -> Observed:
    by_sid = {m.sid: m for m in moves}

    def beat(pod: str) -> float:
        """When ``pod`` last heartbeat (new pods heartbeat from t = 0 on too)."""
        return now - (now - PHASE[pod]) % HEARTBEAT_S

    def open_on(s: Session, pod: str, t: float) -> bool:
        m = by_sid.get(s.sid)
        if m is None or t < min(m.closed, m.resumed):
            return s.pod == pod
        return (pod == m.source and t < m.closed) or (pod == m.target and t >= m.resumed)

    heartbeats = {p: sum(open_on(s, p, beat(p)) for s in sessions) for p in OLD + NEW}
    live: list[Session] = []
    where: dict[str, tuple[str, str] | None] = {}
    for s in sessions:
        m = by_sid.get(s.sid)
        if m is not None and now >= m.resumed:
            record = (m.target, "live")
        elif m is not None and now >= m.closed:
            record = ("", "grace")
        else:
            record = (s.pod, "live")
        if record[1] == "live":
            live.append(Session(s.sid, record[0], s.room))
        where[s.sid] = record
    # The operator records a wave's moves before it sends the first command.
    inflight = {m.sid: m.source for m in moves} if now >= wave_at else {}
    return Observed(heartbeats, live, inflight, {sid: where[sid] for sid in inflight})


def demand_now(o: Observed) -> int:
    return session_demand((s.sid for s in o.live), pending_moves(o.inflight, o.where))


def scaling_steps(demands: list[int]) -> list[tuple[int, int]]:
    """The replica writes the operator makes from 3 pods, one tick per demand (0.5 s)."""
    spec, steps = 3, []
    history: tuple[Recommendation, ...] = ()
    for tick, demand in enumerate(demands):
        decision = plan_replicas(0, demand, POLICY, history, tick * 0.5)
        history = decision.history
        step = plan_scale(spec, decision.replicas, [], tick * 0.5, 60.0)
        if step.scale_to is not None:
            steps.append((spec, step.scale_to))
            spec = step.scale_to
    return steps


@pytest.mark.parametrize(
    ("per_room", "linger", "before"),
    [
        # rooms of 4 move whole; old sockets closed on takeover (a tenth of a second)
        (4, 0.1, [(3, 6), (6, 7)]),
        # the same, old sockets open for 2 s beside the new ones
        (4, 2.0, [(3, 6), (6, 7), (7, 8), (8, 9)]),
        # one room of 400 moves session by session (in grace until resumed)
        (400, 0.0, [(3, 6)]),
    ],
)
def test_a_scale_out_and_its_wave_make_one_scaling_step(
    per_room: int, linger: float, before: list[tuple[int, int]]
) -> None:
    """Ticks every 0.5 s: before the wave, during it, after it. Counted from the
    registry, demand is 400 at every tick and the operator scales 3 -> 6 once. The
    heartbeats' sum (what it counted before) goes to 446 mid-wave when rooms migrate
    (597 when old sockets linger), which asks for more pods, and down to ~300 when
    sessions are in grace between two pods (which live records alone would miss)."""
    sessions = start(per_room)
    moves = wave(sessions, 4.0, linger)
    demands, summed, live = [], [], []
    for tick in range(30):
        o = observe(sessions, moves, 4.0, tick * 0.5)
        assert max(Counter(s.sid for s in o.live).values()) == 1
        demands.append(demand_now(o))
        summed.append(sum(o.heartbeat_connections.values()))
        live.append(len(o.live))
    assert demands == [400] * 30
    assert scaling_steps(demands) == [(3, 6)]
    # What this replaces, on the same observations: the sum of the heartbeats.
    assert scaling_steps(summed) == before, (min(summed), max(summed))
    assert summed[0] == summed[-1] == 400
    if per_room == 400:
        assert min(summed) < 350 and min(live) <= 350  # the in-transit ones count


@pytest.mark.parametrize(
    ("case", "live", "in_transit", "want"),
    [
        ("steady", ["a", "b", "c"], [], 3),
        ("moved, old socket still open", ["a", "b", "c"], ["c"], 3),
        ("in grace between two pods", ["a", "b"], ["c"], 3),
        ("the same session on two pods' sets", ["a", "b", "c", "c"], [], 3),
        ("several in grace", ["a"], ["b", "c", "d"], 4),
        ("nothing", [], [], 0),
    ],
)
def test_session_demand_counts_each_session_once(
    case: str, live: list[str], in_transit: list[str], want: int
) -> None:
    assert session_demand(live, in_transit) == want, case


def test_in_transit_is_what_pending_moves_says() -> None:
    """A session the client dropped on its own (in grace, no move recorded) is
    nobody's load, as before; one whose move the operator recorded is counted until it
    resumes; one whose record expired is gone."""
    live = ["a", "b"]
    where: dict[str, tuple[str, str] | None] = {
        "a": ("p3", "live"),  # moved, arrived
        "c": ("", "grace"),  # moving
        "gone": None,
    }
    inflight = {"a": "p0", "c": "p0", "gone": "p1"}
    assert session_demand(live, pending_moves(inflight, where)) == 3  # a, b, c


@pytest.mark.parametrize(
    ("wanted", "serving", "since", "now", "hold", "since_after"),
    [
        (6, 6, None, 10.0, False, None),  # all serve
        (6, 4, None, 10.0, True, 10.0),  # scale-out half up: wait
        (6, 5, 10.0, 40.0, True, 10.0),
        (6, 5, 10.0, 70.0, False, 10.0),  # a pod never came up: wait no longer
        (6, 6, 10.0, 71.0, False, None),  # all up: the watch resets
        (3, 4, None, 5.0, False, None),  # more serve than wanted (scale-down drains)
    ],
)
def test_rebalance_waits_for_a_scale_out_bounded(
    wanted: int,
    serving: int,
    since: float | None,
    now: float,
    hold: bool,
    since_after: float | None,
) -> None:
    watch, held = watch_scale_out(ScaleOutWatch(since), wanted, serving, now, 60.0)
    assert (held, watch.since) == (hold, since_after)
