"""Room placement: sticky bounded-load consistent hashing over room capacities.

A room keeps its home pod while that pod is alive and under the load bound, so adding
or removing a pod moves only what must move:

- a removed pod's rooms, and nothing else (the bound only grows when pods go away);
- on adding pods, only rooms of pods that are now over the (smaller) bound, the
  cheapest ones (fewest live connections) first.

Rooms without a valid home walk the consistent-hash ring (``vnodes`` points per pod)
from their own hash and take the first pod whose load stays within
``bound = ceil(balance * total_capacity / pods)`` (Mirrokni et al., "Consistent Hashing
with Bounded Loads"). The result does not depend on the order of the inputs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meetingroom_operator.planning.hashing import h64

DEFAULT_BALANCE = 1.25
DEFAULT_VNODES = 64


@dataclass(frozen=True, slots=True)
class RoomDemand:
    """A room to place: its id and the capacity (expected devices) it weighs."""

    room: str
    capacity: int


@dataclass(frozen=True, slots=True)
class Placement:
    """The planned homes. ``moved`` holds rooms whose home changed from a live pod."""

    homes: Mapping[str, str]
    load: Mapping[str, int]
    bound: int
    moved: frozenset[str]
    orphaned: frozenset[str]
    """Rooms whose previous home is gone (re-homed, nothing to migrate)."""

    def changes(self, current: Mapping[str, str]) -> dict[str, str]:
        """Rooms whose home differs from ``current`` (new rooms included)."""
        return {r: p for r, p in self.homes.items() if current.get(r) != p}


class Ring:
    """A consistent-hash ring of pods with virtual nodes."""

    def __init__(self, pods: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        points = sorted((h64(f"{pod}#{i}"), pod) for pod in set(pods) for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._pods = [p for _, p in points]
        self.size = len(set(self._pods))

    def walk(self, key: str) -> Iterable[str]:
        """Distinct pods in ring order, starting at ``key``'s position."""
        if not self._pods:
            return
        start = bisect.bisect_right(self._hashes, h64(key))
        seen: set[str] = set()
        n = len(self._pods)
        for i in range(n):
            pod = self._pods[(start + i) % n]
            if pod not in seen:
                seen.add(pod)
                yield pod
                if len(seen) == self.size:
                    return


def load_bound(total: int, pods: int, max_room: int, balance: float) -> int:
    """The most capacity one pod may hold: ``ceil(balance * total / pods)``, and never
    less than the largest room (which must fit somewhere)."""
    if pods <= 0:
        return 0
    return max(math.ceil(balance * total / pods), max_room, 1)


def plan_placement(
    rooms: Sequence[RoomDemand],
    pods: Iterable[str],
    current: Mapping[str, str],
    *,
    live: Mapping[str, int] | None = None,
    balance: float = DEFAULT_BALANCE,
    vnodes: int = DEFAULT_VNODES,
) -> Placement:
    """Homes for ``rooms`` on ``pods`` (the pods that may take rooms), keeping ``current``
    homes where possible. ``live`` (room -> live connections on its home) decides which
    rooms a pod over the bound sheds first: the cheapest to move."""
    if balance < 1.0:
        raise ValueError("balance must be >= 1.0")
    pod_set = set(pods)
    live = live or {}
    by_room = {r.room: r for r in rooms}
    demands = sorted(by_room.values(), key=lambda r: (h64(r.room), r.room))
    if not pod_set:
        return Placement({}, {}, 0, frozenset(), frozenset(r for r in by_room if r in current))
    total = sum(max(r.capacity, 0) for r in demands)
    max_room = max((r.capacity for r in demands), default=0)
    bound = load_bound(total, len(pod_set), max_room, balance)
    load = dict.fromkeys(sorted(pod_set), 0)
    homes: dict[str, str] = {}

    # 1. Keep current homes on live pods, most expensive to move first, within the bound.
    keep: dict[str, list[RoomDemand]] = {}
    for r in demands:
        pod = current.get(r.room)
        if pod in pod_set:
            keep.setdefault(pod, []).append(r)
    for pod, kept in keep.items():
        kept.sort(key=lambda r: (-live.get(r.room, 0), -r.capacity, h64(r.room), r.room))
        for r in kept:
            if load[pod] + r.capacity <= bound:
                homes[r.room] = pod
                load[pod] += r.capacity

    # 2. Everything else walks the ring; largest rooms first for a tighter packing.
    ring = Ring(pod_set, vnodes)
    rest = [r for r in demands if r.room not in homes]
    rest.sort(key=lambda r: (-r.capacity, h64(r.room), r.room))
    for r in rest:
        choice = next((p for p in ring.walk(r.room) if load[p] + r.capacity <= bound), None)
        if choice is None:  # only when the capacities do not pack: least loaded pod
            choice = min(load, key=lambda p: (load[p], p))
        homes[r.room] = choice
        load[choice] += r.capacity

    moved = frozenset(r for r, p in homes.items() if current.get(r) in pod_set and current[r] != p)
    orphaned = frozenset(r for r in homes if r in current and current[r] not in pod_set)
    return Placement(homes, load, bound, moved, orphaned)
