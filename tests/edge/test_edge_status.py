"""The edge in ``MeetingRoom.status``: what pods publish about edge links and what the
operator makes of it. The decisions (a record turned into ``status.edge`` and the
``EdgeConnected`` condition; sessions behind an edge marked for the planner) are pure
and tested with tables; the records are tested end to end against a real pod, a real
edge process and a real Redis, read with the operator's own ``Store``. The kopf
handlers that write the status on a cluster are not run here."""

from __future__ import annotations

import time
from collections.abc import Callable

from meetingroom_operator import constants as c
from meetingroom_operator.planning.edges import EdgeView, latest, mark_edge_sessions, view
from meetingroom_operator.planning.rebalance import Session, plan_moves
from meetingroom_operator.planning.status import RoomObservation, build_status
from meetingroom_operator.store import Store
from roomwire_contract.edges import EdgeRecord, decode, encode
from signaling.client import Client
from tests.conftest import PodFactory
from tests.support import eventually

from .conftest import EdgeFactory
from .test_edge_upstream_loss import device

NOW = 1_800_000_000.0


def rec(connected: bool, at: float = NOW, pod: str = "p1", devices: int = 3) -> EdgeRecord:
    return EdgeRecord("r", "edge-r", pod, connected, NOW - 60, devices, at)


def test_records_round_trip_and_bad_ones_are_skipped() -> None:
    r = rec(True)
    assert decode(encode(r)) == r
    assert decode("{}") is None and decode("nope") is None


def test_view_of_a_record() -> None:
    assert view(rec(True), ["p1"], NOW + 1) == EdgeView("edge-r", True, NOW - 60, "p1", 3)
    # lost: since is when it was lost
    assert view(rec(False, at=NOW), ["p1"], NOW + 1) == EdgeView("edge-r", False, NOW - 60, "p1", 0)
    # its pod died: not connected, from the last refresh
    assert view(rec(True), ["p2"], NOW + 1) == EdgeView("edge-r", False, NOW, "p1", 0)
    assert not view(rec(True), ["p1"], NOW + 11).connected  # no refresh for 11 s
    # the newest record per room; a connected one wins over a lost one
    older, newer = rec(True, at=NOW - 5, pod="p0"), rec(False, at=NOW, pod="p1")
    assert latest([older, newer]) == {"r": older}
    assert latest([rec(False, at=NOW - 5), newer]) == {"r": newer}


def test_status_shows_the_edge_and_its_condition() -> None:
    def status(edge: EdgeView | None, expect: bool) -> dict[str, object]:
        obs = RoomObservation("p1", "ws://p1/ws", 3, 3, True, 1, edge, expect)
        return build_status(obs, [], "2027-01-15T08:00:00Z")

    s = status(EdgeView("edge-r", True, NOW, "p1", 3), True)
    assert s["edge"] == {
        "id": "edge-r", "connected": True, "since": "2027-01-15T08:00:00Z", "pod": "p1",
        "devices": 3,
    }  # fmt: skip
    cond = [x for x in s["conditions"] if x["type"] == c.COND_EDGE]  # type: ignore[attr-defined]
    assert [(x["status"], x["reason"]) for x in cond] == [("True", "Linked")]
    s = status(EdgeView("edge-r", False, NOW, "p1", 0), True)
    cond = [x for x in s["conditions"] if x["type"] == c.COND_EDGE]  # type: ignore[attr-defined]
    assert [(x["status"], x["reason"]) for x in cond] == [("False", "Lost")]
    s = status(None, True)
    assert "edge" not in s
    cond = [x for x in s["conditions"] if x["type"] == c.COND_EDGE]  # type: ignore[attr-defined]
    assert [(x["status"], x["reason"]) for x in cond] == [("False", "NeverLinked")]
    s = status(None, False)  # a room without an edge: nothing about one
    assert "edge" not in s and len(s["conditions"]) == 2  # type: ignore[arg-type]


def test_the_planner_moves_an_edge_room_whole() -> None:
    # p0 holds room E (4 devices behind an edge) and room D (4 direct clients); p1 none.
    sessions = [Session(f"e{i}", "p0", "E") for i in range(4)]
    sessions += [Session(f"d{i}", "p0", "D") for i in range(4)]
    edges = {"E": EdgeView("edge-E", True, NOW, "p0", 4)}
    marked = mark_edge_sessions(sessions, edges)
    assert [s.role for s in marked] == ["edge"] * 4 + ["participant"] * 4
    plan = plan_moves(marked, ["p0", "p1"])
    assert [(m.room, m.target) for m in plan.rooms] == [("E", "p1")]
    assert plan.sessions == ()
    # An edge that is not connected (or on another pod) marks nothing.
    lost = {"E": EdgeView("edge-E", False, NOW, "p0", 0)}
    assert all(s.role == "participant" for s in mark_edge_sessions(sessions, lost))


async def test_pods_publish_the_edge_link_for_the_operator(
    start_pod: PodFactory,
    redis_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    pod = start_pod(redis_url, "pod-1", args=["--heartbeat", "0.5"])
    edge = start_edge("hall", [pod])
    for peer in ("screen", "laptop", "panel"):
        await device(clients, edge.ws_url, peer, "participant")
    store = Store(redis_url)
    try:

        async def seen(connected: bool, devices: int) -> EdgeView | None:
            found = latest(await store.edges()).get("hall")
            v = view(found, ["pod-1"], time.time()) if found else None
            return v if v and (v.connected, v.devices) == (connected, devices) else None

        v = await eventually(lambda: seen(True, 3), 10, "the edge seen linked with 3 devices")
        assert (v.edge, v.pod) == ("edge-hall", "pod-1")
        assert time.time() - v.since < 30
        edge.proc.terminate()  # the edge goes (its box switched off)
        edge.proc.wait(10)
        v = await eventually(lambda: seen(False, 0), 10, "the edge seen lost")
        assert time.time() - v.since < 10
    finally:
        await store.close()
