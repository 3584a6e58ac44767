"""MeetingRoom events: create/update/resume place the room and write its status;
delete removes what the operator created for it (its placement entry)."""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import kopf

from meetingroom_operator.errors import OperatorError
from meetingroom_operator.handlers.placing import place_rooms, pod_url
from meetingroom_operator.handlers.state import RoomEntry, State
from meetingroom_operator.planning.rooms import is_active, room_spec
from meetingroom_operator.planning.status import RoomObservation, build_status


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def room_status(
    state: State, entry: RoomEntry, connections: int, participants: int
) -> dict[str, Any]:
    home = state.homes.get(entry.spec.room)
    if home is not None and home not in state.pods:
        home = None
    obs = RoomObservation(
        home=home,
        endpoint=pod_url(state, home) if home else None,
        connections=connections,
        participants=participants,
        active=is_active(entry.spec, datetime.now(UTC)),
        generation=entry.generation,
    )
    return build_status(obs, entry.conditions, now_iso())


async def reconcile(
    state: State,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    generation: int,
    status: Mapping[str, Any],
    patch: Any,
    body: Any,
) -> None:
    started = time.perf_counter()
    try:
        rs = room_spec(name, spec)
    except ValueError as e:
        raise kopf.PermanentError(f"invalid spec: {e}") from e
    clash = next(
        (e for e in state.rooms.values()
         if e.spec.room == rs.room and (e.namespace, e.name) != (namespace, name)),
        None,
    )  # fmt: skip
    if clash is not None:
        raise kopf.PermanentError(f"room id {rs.room!r} is taken by {clash.namespace}/{clash.name}")
    key = (namespace, name)
    old_home = state.homes.get(rs.room)
    entry = state.rooms.get(key)
    conditions = list(status.get("conditions") or [])
    if entry is None:
        entry = RoomEntry(namespace, name, rs, generation, conditions)
        state.rooms[key] = entry
    else:
        entry.spec, entry.generation = rs, generation
    state.metrics.rooms.set(float(len(state.rooms)))
    try:
        await place_rooms(state)
    except OperatorError as e:
        state.metrics.errors.inc(1.0, "room")
        raise kopf.TemporaryError(f"placing {rs.room}: {e}", delay=2) from e
    new = room_status(
        state, entry, int(status.get("connections") or 0), int(status.get("participants") or 0)
    )
    target: MutableMapping[str, Any] = patch.status
    for k, v in new.items():
        target[k] = v
    entry.conditions = list(new["conditions"])
    entry.last_status = new
    home = new["homePod"]
    if home and home != old_home:
        # kopf.event, not kopf.info: kopf's own INFO chatter is not posted (settings),
        # ours is.
        kopf.event(
            body, type="Normal", reason="Placed", message=f"home pod {home} ({new['endpoint']})"
        )
    elif not home:
        kopf.warn(body, reason="Pending", message="no signaling pod can take rooms yet")
    state.metrics.reconcile.observe(time.perf_counter() - started, "room")


async def delete(state: State, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    entry = state.rooms.pop((namespace, name), None)
    room = entry.spec.room if entry else str(spec.get("roomId") or name)
    state.metrics.rooms.set(float(len(state.rooms)))
    async with state.placement_lock:
        try:
            await state.store.write_placement({}, removed=[room])
        except OperatorError as e:
            raise kopf.TemporaryError(f"removing placement of {room}: {e}", delay=2) from e
        state.homes.pop(room, None)
