"""Apply a placement plan: Redis first (pods and edges read it), then memory, then
``migrate-room`` for rooms whose previous home is still alive. Shared by the room,
pod and balance handlers; the placement lock makes the operator its one writer."""

from __future__ import annotations

import logging

from meetingroom_operator.handlers.state import State
from meetingroom_operator.planning.placement import RoomDemand, plan_placement

log = logging.getLogger("meetingroom_operator.placement")


def pod_url(state: State, pod: str) -> str:
    """The WebSocket URL of a pod: what it publishes, else built from its IP."""
    url = state.urls.get(pod)
    if url:
        return url
    info = state.pods.get(pod)
    if info is not None and info.ip:
        return f"ws://{info.ip}:{state.cfg.signaling_port}/ws"
    return ""


async def place_rooms(state: State, live: dict[str, int] | None = None) -> dict[str, str]:
    """Re-plan every room's home on the serving pods; returns the changed homes."""
    async with state.placement_lock:
        serving = [p.name for p in state.serving_pods()]
        if not serving or not state.redis_synced.is_set():
            return {}
        demands = [RoomDemand(e.spec.room, e.spec.capacity) for e in state.rooms.values()]
        before = dict(state.homes)
        plan = plan_placement(
            demands, serving, before, live=live, balance=state.cfg.placement_balance
        )
        changes = plan.changes(before)
        if not changes:
            return {}
        await state.store.write_placement(changes)
        state.homes.update(changes)
        for room in sorted(plan.moved):
            old, new = before[room], plan.homes[room]
            url = pod_url(state, new)
            if url:
                await state.store.command(
                    state.cfg.control_secret, old, {"op": "migrate-room", "room": room, "url": url}
                )
        if plan.moved:
            state.metrics.moves.inc(float(len(plan.moved)), "rehome")
            log.info("re-homed %d rooms from live pods", len(plan.moved))
        return changes


async def rehome(state: State, wanted: dict[str, str]) -> dict[str, str]:
    """Move the home of rooms whose sessions the rebalancer moved, where the placement
    bound allows (else the placement planner would move them back next tick)."""
    if not wanted:
        return {}
    async with state.placement_lock:
        serving = [p.name for p in state.serving_pods()]
        demands = [RoomDemand(e.spec.room, e.spec.capacity) for e in state.rooms.values()]
        candidate = {**state.homes, **wanted}
        plan = plan_placement(demands, serving, candidate, balance=state.cfg.placement_balance)
        applied = {r: p for r, p in wanted.items() if plan.homes.get(r) == p}
        if applied:
            await state.store.write_placement(applied)
            state.homes.update(applied)
        return applied
