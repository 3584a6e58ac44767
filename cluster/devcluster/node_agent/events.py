"""Events about pods (Scheduled, Started, Killing, Unhealthy, Failed), as the kubelet and the
scheduler record them; a Warning is also written to the agent's log."""

from __future__ import annotations

from collections.abc import Callable

from ..kube import ApiError, Kube, Obj
from .clock import now_iso

AGENT = "devcluster-node-agent"


def pod_event(pod: Obj, kind: str, reason: str, message: str, node: str, at: str) -> Obj:
    """The Event object: ``kind`` is ``Normal`` or ``Warning``, reported by ``node``'s agent."""
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": AGENT, "host": node},
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
        "reportingComponent": AGENT,
        "reportingInstance": node,
    }


class PodEvents:
    """Records Events about pods; an Event the API refuses is logged, never raised."""

    def __init__(self, kube: Kube, node: str, log: Callable[[str], None]) -> None:
        self.kube = kube
        self.node = node
        self.log = log

    def record(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        ev = pod_event(pod, kind, reason, message, self.node, now_iso())
        try:
            self.kube.post(f"/api/v1/namespaces/{meta['namespace']}/events", ev)
        except (ApiError, OSError) as e:
            self.log(f"event not recorded: {e}")
        if kind == "Warning":
            self.log(f"{meta['namespace']}/{meta['name']}: {reason}: {message}")
