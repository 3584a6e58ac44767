"""Active rebalancing: the fewest moves that fix skew, whole rooms first, paced.

Load is counted in live sessions per serving pod (a direct client is one session on one
WebSocket; sessions in grace are nobody's load). Balance targets give every pod
``floor(total / pods)`` or one more, the extra ones to the pods that hold the most
already, so that the minimum number of moves is ``sum(max(0, count - target))``.

Moves only ever take a session from a pod above its target to a pod below it:

1. whole rooms: every session of one room on a surplus pod moves to one deficit pod
   (``migrate-room`` with that pod's URL, exact), largest first, best fit; if the
   source was the room's home, the room is re-homed with it;
2. single sessions (``reconnect`` with resume, through the Service, which by then only
   selects pods that accept): for what no room group fits.

Sessions marked ``busy`` (in the middle of an offer/answer exchange) and sessions with
a move already in flight are never picked, and a room group with a busy session does
not move as a whole. Planning is always from what was observed.

A wave is planned only once the pods the Deployment asked for are serving
(``watch_scale_out``, bounded): planned while a scale-out is half up, a wave fills the
pods that are ready, and the next one takes sessions off them again for the pods that
came up later, so the moves add up to more than the minimum for the final pod count.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    pod: str
    room: str
    role: str = "participant"
    busy: bool = False


@dataclass(frozen=True, slots=True)
class RoomMove:
    room: str
    source: str
    target: str
    sids: tuple[str, ...]
    rehome: bool
    """The source was the room's home; the room's home becomes ``target``."""


@dataclass(frozen=True, slots=True)
class SessionMove:
    sid: str
    source: str
    expected_target: str


@dataclass(frozen=True, slots=True)
class MovePlan:
    rooms: tuple[RoomMove, ...]
    sessions: tuple[SessionMove, ...]
    targets: Mapping[str, int]
    minimum: int
    """The fewest session moves that reach the targets."""

    @property
    def moved_sessions(self) -> int:
        return sum(len(m.sids) for m in self.rooms) + len(self.sessions)


def skew(counts: Mapping[str, int]) -> float:
    """max / mean of the counts; 1.0 for no pods or no load."""
    if not counts:
        return 1.0
    total = sum(counts.values())
    if total <= 0:
        return 1.0
    return max(counts.values()) * len(counts) / total


def balance_targets(counts: Mapping[str, int]) -> dict[str, int]:
    """floor/ceil of the mean per pod; the ceil ones go to the pods holding the most."""
    if not counts:
        return {}
    q, r = divmod(sum(counts.values()), len(counts))
    ranked = sorted(counts, key=lambda p: (-counts[p], p))
    return {p: q + (1 if i < r else 0) for i, p in enumerate(ranked)}


def minimum_moves(counts: Mapping[str, int]) -> int:
    """The fewest single-session moves that balance ``counts`` exactly."""
    targets = balance_targets(counts)
    return sum(max(0, c - targets[p]) for p, c in counts.items())


def minimum_moves_within(counts: Mapping[str, int], max_over_mean: float) -> int:
    """The fewest moves that bring max/mean to at most ``max_over_mean``."""
    if not counts:
        return 0
    total = sum(counts.values())
    cap = int(max_over_mean * total / len(counts) + 1e-9)
    return sum(max(0, c - cap) for c in counts.values())


def plan_moves(
    sessions: Iterable[Session],
    pods: Iterable[str],
    *,
    homes: Mapping[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
    max_moves: int | None = None,
) -> MovePlan:
    """Moves that bring the live sessions on ``pods`` to their balance targets."""
    homes = homes or {}
    pod_list = sorted(set(pods))
    by_pod: dict[str, list[Session]] = {p: [] for p in pod_list}
    for s in sessions:
        if s.pod in by_pod:
            by_pod[s.pod].append(s)
    counts = {p: len(v) for p, v in by_pod.items()}
    targets = balance_targets(counts)
    minimum = sum(max(0, c - targets[p]) for p, c in counts.items())
    budget = minimum if max_moves is None else min(minimum, max(max_moves, 0))
    surplus = {p: counts[p] - targets[p] for p in pod_list if counts[p] > targets[p]}
    deficit = {p: targets[p] - counts[p] for p in pod_list if counts[p] < targets[p]}

    room_moves: list[RoomMove] = []
    # 1. Whole room groups, largest first; best fit into a deficit pod.
    groups: list[tuple[str, str, list[Session]]] = []
    for pod in surplus:
        per_room: dict[str, list[Session]] = {}
        for s in by_pod[pod]:
            per_room.setdefault(s.room, []).append(s)
        for room, members in per_room.items():
            if any(s.busy or s.sid in exclude for s in members):
                continue
            groups.append((pod, room, sorted(members, key=lambda s: s.sid)))
    has_edge = {(p, r): any(s.role == "edge" for s in m) for p, r, m in groups}
    groups.sort(key=lambda g: (not has_edge[(g[0], g[1])], -len(g[2]), g[1], g[0]))
    for pod, room, members in groups:
        size = len(members)
        if size > budget or size > surplus.get(pod, 0):
            continue
        fits = [q for q, d in deficit.items() if d >= size]
        if not fits:
            continue
        target = min(fits, key=lambda q: (deficit[q], q))
        room_moves.append(
            RoomMove(room, pod, target, tuple(s.sid for s in members), homes.get(room) == pod)
        )
        surplus[pod] -= size
        deficit[target] -= size
        budget -= size
        if deficit[target] == 0:
            del deficit[target]

    # 2. Single sessions for the rest, from the largest remaining groups of each pod.
    moved = {sid for m in room_moves for sid in m.sids}
    session_moves: list[SessionMove] = []
    for pod in sorted(surplus, key=lambda p: (-surplus[p], p)):
        candidates = [s for s in by_pod[pod] if s.sid not in moved]
        candidates = [s for s in candidates if not s.busy and s.sid not in exclude]
        room_size: dict[str, int] = {}
        for s in candidates:
            room_size[s.room] = room_size.get(s.room, 0) + 1
        candidates.sort(key=lambda s: (s.role == "edge", -room_size[s.room], s.room, s.sid))
        for s in candidates:
            if surplus[pod] <= 0 or budget <= 0 or not deficit:
                break
            target = max(deficit, key=lambda q: (deficit[q], q))
            session_moves.append(SessionMove(s.sid, pod, target))
            surplus[pod] -= 1
            deficit[target] -= 1
            budget -= 1
            if deficit[target] == 0:
                del deficit[target]
    return MovePlan(tuple(room_moves), tuple(session_moves), targets, minimum)


@dataclass(frozen=True, slots=True)
class ScheduledCommand:
    """One command for one pod, to be sent ``at_ms`` after the wave starts."""

    at_ms: int
    pod: str
    cmd: Mapping[str, object]
    sids: tuple[str, ...] = field(default=())


def schedule(
    plan: MovePlan,
    urls: Mapping[str, str],
    rng: random.Random,
    *,
    window_ms: int = 5_000,
    batch: int = 10,
) -> list[ScheduledCommand]:
    """Pace the plan: room migrations spread over the first half of the window, single
    sessions in small batches whose ``after_ms`` are spread with jitter over the whole
    window, so no pod sees a reconnect storm. Sorted by send time."""
    out: list[ScheduledCommand] = []
    half = max(window_ms // 2, 1)
    for m in plan.rooms:
        url = urls.get(m.target)
        if not url:
            continue
        migrate: dict[str, object] = {"op": "migrate-room", "room": m.room, "url": url}
        out.append(ScheduledCommand(rng.randrange(half), m.source, migrate, m.sids))
    by_source: dict[str, list[str]] = {}
    for s in plan.sessions:
        by_source.setdefault(s.source, []).append(s.sid)
    for pod, sids in sorted(by_source.items()):
        for i in range(0, len(sids), max(batch, 1)):
            chunk = tuple(sids[i : i + max(batch, 1)])
            after = rng.randrange(window_ms) if window_ms > 0 else 0
            cmd: dict[str, object] = {"op": "reconnect", "sids": list(chunk), "after_ms": after}
            out.append(ScheduledCommand(0, pod, cmd, chunk))
    out.sort(key=lambda c: (c.at_ms, c.pod))
    return out


@dataclass(frozen=True, slots=True)
class SkewWatch:
    """When skew first went above the threshold (None: it is not above)."""

    since: float | None = None


def watch_skew(
    watch: SkewWatch, value: float, now: float, threshold: float, persist_s: float
) -> tuple[SkewWatch, bool]:
    """Update the watch; True when skew has stayed above ``threshold`` for ``persist_s``."""
    if value <= threshold:
        return SkewWatch(None), False
    since = watch.since if watch.since is not None else now
    return SkewWatch(since), now - since >= persist_s


def pending_moves(
    inflight: Mapping[str, str], where: Mapping[str, tuple[str, str] | None]
) -> set[str]:
    """In-flight moves (sid -> source pod) not yet observed complete. ``where`` maps a
    session id to its ``(pod, state)`` in the registry, or None when it is gone. A move
    is complete once the session is live on another pod, or gone; a session in transit
    (in grace, or still on its source) is pending, so that the next plan never counts
    it as missing."""
    pending: set[str] = set()
    for sid, source in inflight.items():
        now = where.get(sid)
        if now is None:
            continue
        pod, state = now
        if not (state == "live" and pod and pod != source):
            pending.add(sid)
    return pending


@dataclass(frozen=True, slots=True)
class ScaleOutWatch:
    """Since when fewer pods serve than are wanted (None: all that are wanted serve)."""

    since: float | None = None


def watch_scale_out(
    watch: ScaleOutWatch, wanted: int, serving: int, now: float, max_wait_s: float
) -> tuple[ScaleOutWatch, bool]:
    """Update the watch; True while rebalancing should wait for pods still starting:
    fewer than ``wanted`` pods serve, for less than ``max_wait_s`` (a pod that never
    comes up holds no rebalance for longer)."""
    if serving >= wanted:
        return ScaleOutWatch(None), False
    since = watch.since if watch.since is not None else now
    return ScaleOutWatch(since), now - since < max_wait_s
