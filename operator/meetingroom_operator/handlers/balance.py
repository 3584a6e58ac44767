"""The balance loop: one tick a second observes pods (API cache + Redis heartbeats and
sessions) and, in this order, sweeps dead pods, places rooms, publishes weights, scales,
rebalances and refreshes room statuses. Each step decides through ``planning``.

Scaling counts sessions from the registry, each once, with the operator's own moves
still in transit (``planning.scaling.session_demand``), never the sum of the pods'
heartbeat connection counts, which counts a moving session on both pods. Rebalancing
waits (bounded) for a scale-out's pods to serve before it plans a wave."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from meetingroom_operator import constants as c
from meetingroom_operator.errors import KubeNotFound, OperatorError
from meetingroom_operator.handlers.placing import place_rooms, pod_url, rehome
from meetingroom_operator.handlers.pods import clean_dead_pod
from meetingroom_operator.handlers.rooms import room_status
from meetingroom_operator.handlers.state import State
from meetingroom_operator.kube import PodInfo
from meetingroom_operator.planning import edges
from meetingroom_operator.planning.rebalance import (
    ScheduledCommand,
    Session,
    SkewWatch,
    pending_moves,
    plan_moves,
    schedule,
    skew,
    watch_scale_out,
    watch_skew,
)
from meetingroom_operator.planning.rooms import is_active
from meetingroom_operator.planning.scaling import (
    PodLoad,
    ScalingPolicy,
    deletion_costs,
    plan_replicas,
    plan_scale,
    session_demand,
)
from meetingroom_operator.planning.status import same_status
from meetingroom_operator.planning.weights import plan_weights
from meetingroom_operator.store import Heartbeat, InflightMove

log = logging.getLogger("meetingroom_operator.balance")

SCALE_OUT_WAIT_S = 60.0
"""The longest a rebalance waits for the pods of a scale-out to serve."""


@dataclass(frozen=True, slots=True)
class Moves:
    """The operator's moves in flight (``keys.OPERATOR_MOVES`` in Redis) and where their
    sessions are now."""

    inflight: dict[str, InflightMove] = field(default_factory=dict)
    where: dict[str, tuple[str, str] | None] = field(default_factory=dict)

    def pending(self) -> set[str]:
        """Moves not yet observed complete (their session still on its source or in
        grace between two pods)."""
        return pending_moves({sid: m.source for sid, m in self.inflight.items()}, self.where)


async def observe_moves(state: State) -> Moves:
    inflight = await state.store.inflight()
    if not inflight:
        return Moves()
    return Moves(inflight, await state.store.session_states(inflight))


async def run(state: State) -> None:
    """Tick until cancelled; a failing tick is logged and counted, never fatal."""
    last_status = 0.0
    while True:
        started = time.perf_counter()
        try:
            refresh = time.monotonic() - last_status >= state.cfg.status_interval_s
            await tick(state, refresh_status=refresh)
            if refresh:
                last_status = time.monotonic()
        except OperatorError as e:
            state.metrics.errors.inc(1.0, "loop")
            log.warning("balance tick failed: %s", e)
        except Exception:
            state.metrics.errors.inc(1.0, "loop")
            log.exception("balance tick crashed")
        elapsed = time.perf_counter() - started
        state.metrics.reconcile.observe(elapsed, "loop")
        await asyncio.sleep(max(state.cfg.interval_s - elapsed, 0.05))


async def tick(state: State, refresh_status: bool = True) -> None:
    heartbeats = await state.store.heartbeats()
    for pod, hb in heartbeats.items():
        if hb.url:
            state.urls[pod] = hb.url
    if state.pods_synced.is_set():
        for pod in heartbeats:
            # heartbeating, but gone from the API (a pod never seen expires by its TTL)
            if pod not in state.pods and pod in state.seen_pods:
                await clean_dead_pod(state, pod)
    alive = [p for p in state.pods.values() if p.alive and p.running]
    with_hb = [p.name for p in alive if p.name in heartbeats]
    sessions = await state.store.live_sessions(with_hb)
    try:
        records = await state.store.edges()
    except OperatorError as e:  # the status keeps what it showed
        log.warning("reading edges: %s", e)
    else:
        now, names = time.time(), [p.name for p in alive]
        state.edges = {room: edges.view(r, names, now) for room, r in edges.latest(records).items()}
    sessions = edges.mark_edge_sessions(sessions, state.edges)
    on_home = Counter(s.room for s in sessions if state.homes.get(s.room) == s.pod)
    await place_rooms(state, live=dict(on_home))
    await publish_weights(state, alive, heartbeats)
    moves = Moves()
    if state.cfg.scaling_enabled or state.cfg.rebalance_enabled:
        moves = await observe_moves(state)
    if state.cfg.scaling_enabled:
        await scale(state, alive, heartbeats, sessions, moves)
    if state.cfg.rebalance_enabled:
        await rebalance(state, sessions, heartbeats, moves)
    if refresh_status:
        await refresh_statuses(state, sessions)


# ---- weights -------------------------------------------------------------------------


async def publish_weights(
    state: State, alive: list[PodInfo], heartbeats: dict[str, Heartbeat]
) -> None:
    counts = {p.name: heartbeats[p.name].connections if p.name in heartbeats else 0 for p in alive}
    draining = frozenset(
        p.name
        for p in alive
        if p.draining_since is not None or (p.name in heartbeats and heartbeats[p.name].draining)
    )
    weights = plan_weights(
        counts,
        draining=draining,
        accepting_now={p.name: p.accepting for p in alive},
        high=state.cfg.accept_high,
        low=state.cfg.accept_low,
    )
    state.metrics.pods.set(float(len(counts) - len(draining)))
    for p in alive:
        w = weights[p.name]
        label = "true" if w.accepting else "false"
        labels = {c.ACCEPTING_LABEL: label} if p.labels.get(c.ACCEPTING_LABEL) != label else {}
        weight = str(w.weight)
        notes = (
            {c.WEIGHT_ANNOTATION: weight}
            if p.annotations.get(c.WEIGHT_ANNOTATION) != weight
            else {}
        )
        if labels or notes:
            await patch_pod(state, p, labels, notes)
    await send_weights(state, {name: w.weight for name, w in weights.items()})


async def send_weights(state: State, planned: dict[str, int]) -> None:
    """The same weights to the pods themselves (the ``weight`` command), which publish
    them on their Nacos instances: on change, and every ``refresh_s`` even when not."""
    sends = state.weight_sends
    sends.keep_only(planned)
    now = time.monotonic()
    for pod, weight in sends.due(planned, now).items():
        try:
            listeners = await state.store.command(
                state.cfg.control_secret, pod, {"op": "weight", "weight": weight}
            )
        except OperatorError as e:
            state.metrics.errors.inc(1.0, "command")
            log.warning("weight to %s failed: %s", pod, e)
            return  # Redis is away: the next tick tries again
        if listeners:  # none: the pod is not listening yet, tried again next tick
            sends.record(pod, weight, now)


async def patch_pod(
    state: State, p: PodInfo, labels: dict[str, str], annotations: dict[str, str]
) -> None:
    """Patch a pod and update the cache at once (the watch event follows)."""
    try:
        await state.kube.patch_pod(p.name, labels or None, annotations or None)
    except KubeNotFound:
        return
    state.pods[p.name] = replace(
        p, labels={**p.labels, **labels}, annotations={**p.annotations, **annotations}
    )


# ---- scaling -------------------------------------------------------------------------


async def scale(
    state: State,
    alive: list[PodInfo],
    heartbeats: dict[str, Heartbeat],
    sessions: list[Session],
    moves: Moves,
) -> None:
    cfg = state.cfg
    policy = ScalingPolicy(
        per_pod=cfg.per_pod,
        min_replicas=cfg.min_replicas,
        max_replicas=cfg.max_replicas,
        buffer_pods=cfg.buffer_pods,
        buffer_percent=cfg.buffer_percent,
        window_s=cfg.scale_down_window_s,
    )
    now = time.time()
    when = datetime.now(UTC)
    active_capacity = sum(e.spec.capacity for e in state.rooms.values() if is_active(e.spec, when))
    # Each session once, moving or not (see planning.scaling): not the heartbeats' sum.
    in_transit = [sid for sid in moves.pending() if moves.inflight[sid].deadline >= now]
    demand = session_demand((s.sid for s in sessions), in_transit)
    decision = plan_replicas(active_capacity, demand, policy, state.history, now)
    state.history = decision.history
    state.metrics.replicas.set(float(decision.replicas))
    try:
        spec_replicas = await state.kube.get_replicas(cfg.deployment)
    except KubeNotFound:
        return
    state.spec_replicas = spec_replicas
    loads = [
        PodLoad(
            p.name,
            heartbeats[p.name].connections if p.name in heartbeats else 0,
            p.draining_since,
            p.name in heartbeats,
        )
        for p in alive
    ]
    step = plan_scale(spec_replicas, decision.replicas, loads, now, cfg.drain_deadline_s)
    for name in step.drain:
        p = state.pods[name]
        await patch_pod(
            state, p, {c.ACCEPTING_LABEL: "false"}, {c.DRAINING_ANNOTATION: f"{now:.3f}"}
        )
        log.info("draining %s before scaling down to %d", name, decision.replicas)
    if step.drain:
        await place_rooms(state)  # draining pods take no rooms: re-home theirs first
        for name in step.drain:
            await state.store.command(cfg.control_secret, name, {"op": "drain"})
    loads = [replace(x, draining_since=state.pods[x.name].draining_since) for x in loads]
    for name, cost in deletion_costs(loads, step=max(cfg.per_pod // 20, 1)).items():
        p = state.pods[name]
        if p.annotations.get(c.DELETION_COST_ANNOTATION) != str(cost):
            await patch_pod(state, p, {}, {c.DELETION_COST_ANNOTATION: str(cost)})
    if step.scale_to is not None:
        log.info(
            "scaling %s from %d to %d: %d sessions (%d of them moving), room capacity %d",
            cfg.deployment,
            spec_replicas,
            step.scale_to,
            demand,
            len(in_transit),
            active_capacity,
        )
        await state.kube.set_replicas(cfg.deployment, step.scale_to)
        state.spec_replicas = step.scale_to


# ---- rebalance -----------------------------------------------------------------------


def wanted_serving(state: State) -> int:
    """How many pods should serve: every live pod not draining, and at least what the
    Deployment asks for beyond the draining ones (pods not created yet count too)."""
    live = [p for p in state.pods.values() if p.alive]
    draining = sum(1 for p in live if p.draining_since is not None)
    wanted = len(live) - draining
    if state.spec_replicas is not None:
        wanted = max(wanted, state.spec_replicas - draining)
    return wanted


async def rebalance(
    state: State, sessions: list[Session], heartbeats: dict[str, Heartbeat], moves: Moves
) -> None:
    cfg = state.cfg
    now = time.time()
    if moves.inflight:
        left = moves.pending()
        done = [sid for sid, m in moves.inflight.items() if sid not in left or m.deadline < now]
        await state.store.drop_inflight(done)
        if len(done) < len(moves.inflight):
            return  # a wave is still moving: re-plan only from its outcome
    pods = [p.name for p in state.serving_pods() if p.name in heartbeats]
    wanted = wanted_serving(state)
    waiting = state.scale_out_watch.since is not None
    state.scale_out_watch, hold = watch_scale_out(
        state.scale_out_watch, wanted, len(pods), now, SCALE_OUT_WAIT_S
    )
    if hold:
        if not waiting:
            log.info("rebalance waits for pods starting: %d of %d serve", len(pods), wanted)
        return
    if len(pods) < 2:
        state.skew_watch = SkewWatch()
        return
    mine = [s for s in sessions if s.pod in pods]
    counts = Counter({p: 0 for p in pods})
    counts.update(s.pod for s in mine)
    value = skew(counts)
    state.metrics.skew.set(value)
    state.skew_watch, fire = watch_skew(
        state.skew_watch, value, now, cfg.skew_threshold, cfg.skew_persist_s
    )
    if not fire:
        return
    plan = plan_moves(mine, pods, homes=state.homes, max_moves=cfg.max_moves_per_wave)
    if plan.moved_sessions == 0:
        return
    urls = {p: pod_url(state, p) for p in pods}
    commands = schedule(plan, urls, state.rng, window_ms=cfg.move_window_ms, batch=cfg.move_batch)
    moving = {sid: cmd.pod for cmd in commands for sid in cmd.sids}
    until = now + cfg.move_window_ms / 1000 + cfg.move_timeout_s
    await state.store.add_inflight(moving, until)  # before sending: a restart sees them
    await rehome(state, {m.room: m.target for m in plan.rooms if m.rehome})
    rooms_moved = sum(len(m.sids) for m in plan.rooms)
    state.metrics.moves.inc(float(rooms_moved), "room")
    state.metrics.moves.inc(float(len(moving) - rooms_moved), "session")
    state.skew_watch = SkewWatch()
    log.info(
        "rebalance: skew %.2f, %d rooms (%d sessions) + %d single sessions; minimum %d",
        value,
        len(plan.rooms),
        rooms_moved,
        len(plan.sessions),
        plan.minimum,
    )
    state.spawn(send_paced(state, commands))


async def send_paced(state: State, commands: list[ScheduledCommand]) -> None:
    start = time.monotonic()
    for cmd in commands:
        delay = start + cmd.at_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await state.store.command(state.cfg.control_secret, cmd.pod, dict(cmd.cmd))
        except OperatorError as e:
            state.metrics.errors.inc(1.0, "command")
            log.warning("command to %s failed: %s", cmd.pod, e)


# ---- statuses ------------------------------------------------------------------------


async def refresh_statuses(state: State, sessions: list[Session]) -> None:
    entries = list(state.rooms.values())
    if not entries:
        return
    participants = await state.store.participants(e.spec.room for e in entries)
    conns = Counter(s.room for s in sessions)
    gate = asyncio.Semaphore(16)

    async def one(entry: Any) -> None:
        new = room_status(state, entry, conns[entry.spec.room], participants[entry.spec.room])
        if same_status(new, entry.last_status):
            return
        async with gate:
            try:
                await state.kube.patch_room_status(entry.namespace, entry.name, new)
            except KubeNotFound:
                return
        entry.last_status = new
        entry.conditions = list(new["conditions"])

    await asyncio.gather(*(one(e) for e in entries))
