"""Reading a namespace for the live view: the Kubernetes API (pods, the signaling
Deployment, MeetingRooms), each pod's and the operator's ``/metrics``, and the
operator's moves in flight in Redis. Read-only; every read bounded in time; a source
that does not answer shows as unknown, never as zero."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from roomwire_contract import keys

from ..addresses import LOCAL_IP_ANNOTATION
from ..kube import ApiError, Kube
from .model import (
    OperatorView,
    PodView,
    RoomView,
    Snapshot,
    metric_sum,
    moving_out,
    parse_metrics,
    sessions_by_room,
)

SIGNALING = "app.kubernetes.io/name=signaling"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"
ACCEPTING_LABEL = "rtc.roomwire.io/accepting"
WEIGHT_ANNOTATION = "rtc.roomwire.io/weight"
DRAINING_ANNOTATION = "rtc.roomwire.io/draining"
SCRAPE_TIMEOUT_S = 1.0
ROOM_SESSIONS_MAX = 5000  # larger session sets are not read each second

Obj = dict[str, Any]


def pod_address(pod: Mapping[str, Any]) -> str:
    """Where a pod listens: the local cluster's loopback address (its node agent's
    annotation), else the pod IP."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(LOCAL_IP_ANNOTATION) or (pod.get("status") or {}).get("podIP") or "")


def container_port(pod: Mapping[str, Any], name: str, default: int) -> int:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    return default


def is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@dataclass
class Collector:
    kube: Kube
    namespace: str
    redis_url: str = ""
    deployment: str = "signaling"
    _redis: Any = None
    _http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _get(self, path: str, **query: str) -> Obj | None:
        try:
            return await asyncio.to_thread(self.kube.get, path, **query)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def scrape(self, url: str) -> dict[str, float] | None:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
            )
        try:
            async with self._http.get(url) as r:
                if r.status != 200:
                    return None
                return parse_metrics(await r.text())
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    def _client(self) -> Any:
        """The Redis client (made on first use), or None without a Redis URL."""
        if not self.redis_url:
            return None
        if self._redis is None:
            self._redis = aioredis.from_url(
                self.redis_url, decode_responses=True, socket_timeout=SCRAPE_TIMEOUT_S
            )
        return self._redis

    async def moves_in_flight(self, now: float) -> dict[str, str] | None:
        """Session id -> source pod of the operator's moves not yet past their deadline."""
        client = self._client()
        if client is None:
            return None
        try:
            raw: dict[str, str] = await client.hgetall(keys.OPERATOR_MOVES)
        except (RedisError, OSError, TimeoutError):
            return None
        out = {}
        for sid, text in raw.items():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                data = json.loads(text)
                if float(data["until"]) >= now:
                    out[sid] = str(data["from"])
        return out

    async def room_sessions(
        self, sessions: Mapping[str, int | None]
    ) -> dict[str, dict[str, int] | None]:
        """Per pod, its sessions per room (its session set in Redis, kept in step by its
        heartbeat); None for a pod not read: Redis not reachable, or a set larger than
        ``ROOM_SESSIONS_MAX`` (the view stays light)."""
        out: dict[str, dict[str, int] | None] = {p: None for p in sessions}
        wanted = [p for p, n in sessions.items() if n is not None and n <= ROOM_SESSIONS_MAX]
        client = self._client()
        if client is None or not wanted:
            return out
        try:
            pipe = client.pipeline(transaction=False)
            for p in wanted:
                pipe.smembers(keys.pod_sessions(p))
            sets = await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            return out
        for p, members in zip(wanted, sets, strict=True):
            out[p] = sessions_by_room(members)
        return out

    async def snapshot(self) -> Snapshot:
        ns = self.namespace
        now = time.time()
        pods_obj, op_obj, dep, rooms_obj, moves = await asyncio.gather(
            self._get(f"/api/v1/namespaces/{ns}/pods", labelSelector=SIGNALING),
            self._get(f"/api/v1/namespaces/{ns}/pods", labelSelector=OPERATOR),
            self._get(f"/apis/apps/v1/namespaces/{ns}/deployments/{self.deployment}"),
            self._get(f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{ns}/meetingrooms"),
            self.moves_in_flight(now),
        )
        pods: list[Obj] = list((pods_obj or {}).get("items") or [])
        urls = {
            p["metadata"][
                "name"
            ]: f"http://{pod_address(p)}:{container_port(p, 'http', 8080)}/metrics"
            for p in pods
            if pod_address(p)
        }
        operators = [p for p in (op_obj or {}).get("items") or [] if is_ready(p)]
        op_url = (
            f"http://{pod_address(operators[0])}:"
            f"{container_port(operators[0], 'metrics', 9090)}/metrics"
            if operators
            else ""
        )
        names = list(urls)
        scraped = await asyncio.gather(
            *(self.scrape(urls[n]) for n in names), self.scrape(op_url) if op_url else _none()
        )
        metrics = dict(zip(names, scraped[:-1], strict=True))
        op = scraped[-1]
        out_moves = moving_out((moves or {}).values())
        per_room = await self.room_sessions(
            {n: _int(metrics.get(n), "roomwire_sessions") for n in names}
        )
        views = []
        for p in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
            meta = p["metadata"]
            name = str(meta["name"])
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            m = metrics.get(name)
            weight = annotations.get(WEIGHT_ANNOTATION)
            views.append(
                PodView(
                    name=name,
                    ready=is_ready(p) and not meta.get("deletionTimestamp"),
                    accepting=labels.get(ACCEPTING_LABEL) == "true",
                    draining=bool(annotations.get(DRAINING_ANNOTATION))
                    or bool(m and m.get("roomwire_draining")),
                    weight=int(float(weight)) if weight not in (None, "") else None,
                    connections=_int(m, "roomwire_ws_connections"),
                    sessions=_int(m, "roomwire_sessions"),
                    rooms=_int(m, "roomwire_rooms"),
                    address=pod_address(p),
                    moving_out=out_moves.get(name, 0),
                    room_sessions=per_room.get(name),
                )
            )
        rooms = []
        for r in (rooms_obj or {}).get("items") or []:
            status = r.get("status") or {}
            rooms.append(
                RoomView(
                    name=str(r["metadata"]["name"]),
                    home=str(status.get("homePod") or ""),
                    phase=str(status.get("phase") or ""),
                    capacity=int((r.get("spec") or {}).get("capacity") or 0),
                    connections=int(status.get("connections") or 0),
                )
            )
        operator = OperatorView(
            up=op is not None,
            desired_replicas=_int(op, "roomwire_operator_desired_replicas"),
            skew=op.get("roomwire_operator_skew") if op else None,
            moves_room=int(op.get('roomwire_operator_moves_total{kind="room"}', 0)) if op else 0,
            moves_session=int(op.get('roomwire_operator_moves_total{kind="session"}', 0))
            if op
            else 0,
        )
        replicas = int(dep["spec"]["replicas"]) if dep else None
        return Snapshot(
            at=now,
            namespace=ns,
            replicas=replicas,
            pods=tuple(views),
            rooms=tuple(sorted(rooms, key=lambda r: r.name)),
            operator=operator,
            moves_in_flight=len(moves) if moves is not None else None,
        )


def _int(samples: Mapping[str, float] | None, name: str) -> int | None:
    if samples is None:
        return None
    if not any(k == name or k.startswith(name + "{") for k in samples):
        return None
    return int(metric_sum(samples, name))


async def _none() -> None:
    return None
