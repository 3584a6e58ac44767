"""All of the operator's own Kubernetes API traffic (kopf's watches aside). I/O only.

The official ``kubernetes`` client is synchronous; every call runs in a worker thread.
Writes are idempotent merge patches; 404 and 409 become ``KubeNotFound`` and
``KubeConflict`` (the handlers log them and re-plan from a fresh observation), anything
else ``KubeError``, with the client's exception as the cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from meetingroom_operator import constants as c
from meetingroom_operator.errors import KubeConflict, KubeError, KubeNotFound

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A signaling pod as the API shows it."""

    name: str
    uid: str
    ip: str
    phase: str
    ready: bool
    deleting: bool
    restarts: int
    running: bool
    """Every container is running (false after a crash until it is restarted)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.phase in ("Pending", "Running") and not self.deleting

    @property
    def accepting(self) -> bool:
        return self.labels.get(c.ACCEPTING_LABEL, "true") == "true"

    @property
    def draining_since(self) -> float | None:
        raw = self.annotations.get(c.DRAINING_ANNOTATION)
        try:
            return float(raw) if raw else None
        except ValueError:
            return None


def pod_info(body: Mapping[str, Any]) -> PodInfo:
    """A ``PodInfo`` from a pod's JSON (as kopf or the API hands it over)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    containers = status.get("containerStatuses") or []
    conditions = status.get("conditions") or []
    return PodInfo(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        ip=str(status.get("podIP") or ""),
        phase=str(status.get("phase") or "Pending"),
        ready=any(x.get("type") == "Ready" and x.get("status") == "True" for x in conditions),
        deleting=bool(meta.get("deletionTimestamp")),
        restarts=sum(int(x.get("restartCount") or 0) for x in containers),
        running=bool(containers) and all("running" in (x.get("state") or {}) for x in containers),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


class Kube:
    """The operator's Kubernetes writer for one namespace."""

    def __init__(self, namespace: str, api_client: Any | None = None) -> None:
        if api_client is None:
            try:
                kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
            api_client = kubernetes.client.ApiClient()
        self.namespace = namespace
        self.client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except ApiException as e:
            if e.status == 404:
                raise KubeNotFound(f"{what}: not found") from e
            if e.status == 409:
                raise KubeConflict(f"{what}: conflict") from e
            raise KubeError(f"{what}: {e.status} {e.reason}") from e
        except Exception as e:  # urllib3 / connection errors
            raise KubeError(f"{what}: {e}") from e

    async def list_pods(self, selector: str) -> list[PodInfo]:
        res = await self._call(
            "list pods",
            lambda: self.core.list_namespaced_pod(self.namespace, label_selector=selector),
        )
        items = self.client.sanitize_for_serialization(res).get("items") or []
        return [pod_info(p) for p in items]

    async def patch_pod(
        self,
        name: str,
        labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> None:
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        if not meta:
            return
        body = {"metadata": meta}
        await self._call(
            f"patch pod {name}", lambda: self.core.patch_namespaced_pod(name, self.namespace, body)
        )

    async def get_replicas(self, deployment: str) -> int:
        scale = await self._call(
            f"read scale of {deployment}",
            lambda: self.apps.read_namespaced_deployment_scale(deployment, self.namespace),
        )
        return int(scale.spec.replicas or 0) if scale.spec else 0

    async def set_replicas(self, deployment: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        await self._call(
            f"scale {deployment} to {replicas}",
            lambda: self.apps.patch_namespaced_deployment_scale(deployment, self.namespace, body),
        )

    async def patch_room_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        body = {"status": dict(status)}
        await self._call(
            f"status of {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, c.PLURAL, name, body
            ),
        )

    async def list_room_ids(self) -> set[str]:
        """Room ids of every MeetingRoom in the namespace (``spec.roomId`` or the name)."""
        res = await self._call(
            "list meetingrooms",
            lambda: self.custom.list_namespaced_custom_object(
                c.GROUP, c.VERSION, self.namespace, c.PLURAL
            ),
        )
        items = res.get("items") or [] if isinstance(res, dict) else []
        return {str((o.get("spec") or {}).get("roomId") or o["metadata"]["name"]) for o in items}

    async def post_event(
        self, kind: str, api_version: str, name: str, reason: str, message: str
    ) -> None:
        """A Warning Event about an object of this namespace (``kubectl describe`` shows
        it), from the operator."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        body: Any = {  # the client takes a plain dict for its CoreV1Event
            "metadata": {"generateName": f"{name}.", "namespace": self.namespace},
            "involvedObject": {
                "kind": kind,
                "apiVersion": api_version,
                "name": name,
                "namespace": self.namespace,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "meetingroom-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call(
            f"event {reason} on {kind} {name}",
            lambda: self.core.create_namespaced_event(self.namespace, body),
        )
