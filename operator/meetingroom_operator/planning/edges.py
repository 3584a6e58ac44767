"""Room edges as the operator sees them, pure: the records pods publish
(``roomwire_contract.edges``) turned into ``MeetingRoom.status.edge``, and the sessions
behind an edge marked for the rebalance planner (an edge's room moves whole).

A record says connected only while its pod is alive and kept refreshing it: a pod that
died (SIGKILL, a node lost) leaves a record that says connected; it counts as lost from
its last refresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from meetingroom_operator.planning.rebalance import Session
from roomwire_contract.edges import EdgeRecord

STALE_S = 10.0  # a record not refreshed for this long (5 heartbeats): its pod is gone


@dataclass(frozen=True, slots=True)
class EdgeView:
    edge: str
    connected: bool
    since: float
    pod: str
    devices: int

    def status(self) -> dict[str, object]:
        """``MeetingRoom.status.edge``."""
        return {
            "id": self.edge,
            "connected": self.connected,
            "since": datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pod": self.pod,
            "devices": self.devices,
        }


def latest(records: Iterable[EdgeRecord]) -> dict[str, EdgeRecord]:
    """Per room, its edge's newest record (a room has one edge; if two ever linked, the
    one heard from last)."""
    out: dict[str, EdgeRecord] = {}
    for r in records:
        old = out.get(r.room)
        if old is None or (r.connected, r.at) > (old.connected, old.at):
            out[r.room] = r
    return out


def view(record: EdgeRecord, alive: Iterable[str], now: float) -> EdgeView:
    """What the record says, unless its pod died or stopped refreshing it."""
    fresh = now - record.at < STALE_S and record.pod in set(alive)
    if record.connected and fresh:
        return EdgeView(record.edge, True, record.since, record.pod, record.devices)
    since = record.since if not record.connected else record.at
    return EdgeView(record.edge, False, since, record.pod, 0)


def mark_edge_sessions(sessions: Iterable[Session], edges: Mapping[str, EdgeView]) -> list[Session]:
    """The live sessions, those of devices behind a connected edge with role ``edge``:
    the planner moves such a room whole (the edge's upstream moves it in one step) and
    moves its sessions one by one only last. Their pods are the edge link's."""
    out = []
    for s in sessions:
        e = edges.get(s.room)
        if e is not None and e.connected and e.pod == s.pod and s.role != "edge":
            s = dataclasses.replace(s, role="edge")
        out.append(s)
    return out
