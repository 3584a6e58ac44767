"""The scheduler's part: every unscheduled pod that uses the default scheduler is bound to
the one Node (``POST .../pods/<name>/binding``), once."""

from __future__ import annotations

from collections.abc import Callable

from ..kube import ApiError, Kube, Obj

DEFAULT_SCHEDULER = "default-scheduler"


def wants_binding(pod: Obj) -> bool:
    """True for a pod no node runs yet, for the default scheduler, not being deleted."""
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
        and not pod["metadata"].get("deletionTimestamp")
    )


def binding(pod: Obj, node: str) -> Obj:
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": str(meta["uid"])},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


class Binder:
    """Binds each pod once; a pod another binder got first (409) or that is gone (404) is
    left alone, any other failure is retried on the pod's next event."""

    def __init__(
        self,
        kube: Kube,
        node: str,
        event: Callable[[Obj, str, str, str], None],
        log: Callable[[str], None],
    ) -> None:
        self.kube = kube
        self.node = node
        self.event = event
        self.log = log
        self.bound: set[str] = set()

    def bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        if uid in self.bound:
            return
        self.bound.add(uid)
        try:
            self.kube.post(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                binding(pod, self.node),
            )
            self.event(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node}",
            )
        except ApiError as e:
            if not (e.conflict or e.not_found):
                self.bound.discard(uid)
                self.log(f"binding {meta['name']} failed: {e}")

    def forget(self, uid: str) -> None:
        self.bound.discard(uid)
