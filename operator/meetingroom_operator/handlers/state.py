"""What the operator keeps in memory between events (rebuilt from the API and Redis
after a restart; nothing here is the only copy of anything)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from meetingroom_operator.config import Config
from meetingroom_operator.config_center import ConfigCenter
from meetingroom_operator.kube import Kube, PodInfo
from meetingroom_operator.metrics import Metrics
from meetingroom_operator.planning.edges import EdgeView
from meetingroom_operator.planning.rebalance import ScaleOutWatch, SkewWatch
from meetingroom_operator.planning.rooms import RoomSpec
from meetingroom_operator.planning.scaling import Recommendation
from meetingroom_operator.planning.weight_sends import WeightSends
from meetingroom_operator.store import Store

RoomKey = tuple[str, str]
"""(namespace, name) of a MeetingRoom."""


@dataclass
class RoomEntry:
    namespace: str
    name: str
    spec: RoomSpec
    generation: int
    conditions: list[dict[str, Any]] = field(default_factory=list)
    last_status: dict[str, Any] = field(default_factory=dict)


@dataclass
class PodMemory:
    """What was last seen of a pod, to tell a crash from an ordinary update."""

    uid: str
    restarts: int
    running: bool
    cleaned: bool = False


@dataclass
class State:
    cfg: Config
    store: Store
    kube: Kube
    metrics: Metrics
    rooms: dict[RoomKey, RoomEntry] = field(default_factory=dict)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    # Every signaling pod this operator has seen in the API. A pod that heartbeats in
    # Redis but was never seen belongs to someone else (another namespace sharing the
    # Redis, or a pod newer than the watch): it is never "cleaned" as dead.
    seen_pods: set[str] = field(default_factory=set)
    pod_memory: dict[str, PodMemory] = field(default_factory=dict)
    homes: dict[str, str] = field(default_factory=dict)
    """room id -> home pod, mirrored from ``rw:placement`` (the operator writes both)."""
    edges: dict[str, EdgeView] = field(default_factory=dict)
    """room id -> its edge's link, from the records pods publish (``rw:edges``)."""
    urls: dict[str, str] = field(default_factory=dict)
    """pod -> WebSocket URL, from the pods' heartbeats."""
    placement_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    history: tuple[Recommendation, ...] = ()
    skew_watch: SkewWatch = field(default_factory=SkewWatch)
    scale_out_watch: ScaleOutWatch = field(default_factory=ScaleOutWatch)
    spec_replicas: int | None = None
    """The signaling Deployment's replicas as last read or written (None: not read)."""
    rng: random.Random = field(default_factory=random.Random)
    weight_sends: WeightSends = field(default_factory=WeightSends)
    """The last weight sent to each pod (the ``weight`` command, for its Nacos instance)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    pods_synced: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once placement was read from Redis: nothing is placed before (an operator that
    # started while Redis was away would otherwise re-place every room from nothing).
    redis_synced: asyncio.Event = field(default_factory=asyncio.Event)
    metrics_runner: Any = None
    config_center: ConfigCenter | None = None
    """Moves ``cfg`` to the config center's live settings (ROOMWIRE_NACOS_SERVER)."""

    def room_ids(self) -> dict[str, RoomEntry]:
        return {e.spec.room: e for e in self.rooms.values()}

    def serving_pods(self) -> list[PodInfo]:
        """Pods that may take rooms and connections: alive, running, ready, not draining."""
        return [
            p
            for p in self.pods.values()
            if p.alive and p.running and p.ready and p.draining_since is None
        ]

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def state_of(memo: Any) -> State:
    """The operator state kept in kopf's memo by the startup handler."""
    state = getattr(memo, "state", None)
    if not isinstance(state, State):
        raise RuntimeError("operator state missing: the startup handler did not run")
    return state
