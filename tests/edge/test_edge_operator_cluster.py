"""``MeetingRoom.status.edge`` on the real control plane: the CRD from ``crds/``, the
workload and the operator from ``manifests/`` (as ``tests/operator`` runs them: pods
as local processes under ``devcluster``), a real Redis, and a real ``signaling edge``
process on loopback that knows only the signaling Service. The room's status shows the
edge linked with its devices and condition ``EdgeConnected``, then lost when the edge
stops. Opt-in: ``-m cluster``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devcluster.pytest_plugin import KubeCluster
from signaling.client import Client
from tests.operator.harness import Obj, room
from tests.operator.test_operator_cluster import crd, make_stack, redis_db_url

from .conftest import EdgeFactory
from .test_edge_upstream_loss import device

pytestmark = pytest.mark.cluster
__all__ = ["crd", "redis_db_url"]  # the operator tests' fixtures


def edge_status(obj: Obj | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    st = (obj or {}).get("status") or {}
    cond = [x for x in st.get("conditions") or [] if x["type"] == "EdgeConnected"]
    return (st.get("edge") or {}, cond[0]) if cond else None


async def test_the_rooms_status_shows_its_edge(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    crd: Obj,
    redis_db_url: str,
    start_edge: EdgeFactory,
    clients: Callable[..., Client],
) -> None:
    stack = make_stack(kube_cluster, kube_namespace, redis_db_url, replicas=2)
    stack.start_operator({"ROOMWIRE_SCALING_ENABLED": "false"})
    stack.apply_rooms([room(kube_namespace, "boardroom", 12, edge=True)])

    def never_linked() -> Any:
        got = edge_status(stack.room_obj("boardroom"))
        return got if got and got[1]["reason"] == "NeverLinked" else None

    kube_cluster.wait_for(never_linked, 30, "boardroom EdgeConnected False, NeverLinked")
    service = stack.service_url().removesuffix("/ws") + "/edge"
    edge = start_edge("boardroom", upstream_urls=[service])
    for peer in ("screen", "panel"):
        await device(clients, edge.ws_url, peer, "participant", "boardroom")

    def linked() -> Any:
        got = edge_status(stack.room_obj("boardroom"))
        if got and got[1]["status"] == "True" and got[0].get("devices") == 2:
            return got
        return None

    shown, cond = kube_cluster.wait_for(linked, 30, "boardroom's edge linked with 2 devices")
    obj = stack.room_obj("boardroom")
    assert obj is not None
    assert shown["connected"] is True and shown["id"] == "edge-boardroom"
    assert shown["pod"] == obj["status"]["homePod"]  # moved to the room's home pod
    assert cond["reason"] == "Linked"
    assert edge.status()["pod"] == shown["pod"]

    edge.proc.terminate()  # the box is switched off
    edge.proc.wait(15)

    def lost() -> Any:
        got = edge_status(stack.room_obj("boardroom"))
        return got if got and got[1]["status"] == "False" and got[1]["reason"] == "Lost" else None

    shown, cond = kube_cluster.wait_for(lost, 30, "boardroom's edge lost")
    assert shown["connected"] is False and shown["devices"] == 0
