"""MeetingRoom events. Level-triggered, like a kubebuilder reconciler: every event
(added, modified, the initial listing) re-places the room and writes its status only
when it differs from what the object already shows; a deleted room loses its
placement entry. The operator writes nothing but the status subresource (no
finalizers, no bookkeeping annotations): one API write per room, and none when nothing
changed. Placement entries of rooms deleted while the operator was down are collected
at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from meetingroom_operator.errors import KubeNotFound, OperatorError
from meetingroom_operator.handlers.placing import place_rooms, pod_url
from meetingroom_operator.handlers.state import RoomEntry, State
from meetingroom_operator.planning.rooms import is_active, room_spec
from meetingroom_operator.planning.status import (
    RoomObservation,
    build_status,
    invalid_status,
    same_status,
)

log = logging.getLogger("meetingroom_operator.rooms")


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
        edge=state.edges.get(entry.spec.room),
        expect_edge=entry.spec.edge,
    )
    return build_status(obs, entry.conditions, now_iso())


async def on_event(state: State, event_type: str | None, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    if event_type == "DELETED":
        await delete(state, namespace, name, body.get("spec") or {})
        return
    await reconcile(state, namespace, name, body)


async def reconcile(state: State, namespace: str, name: str, body: Mapping[str, Any]) -> None:
    started = time.perf_counter()
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    shown: Mapping[str, Any] = body.get("status") or {}
    generation = int(meta.get("generation") or 0)
    conditions = list(shown.get("conditions") or [])
    try:
        rs = room_spec(name, spec)
        clash = next(
            (e for e in state.rooms.values()
             if e.spec.room == rs.room and (e.namespace, e.name) != (namespace, name)),
            None,
        )  # fmt: skip
        if clash is not None:
            raise ValueError(f"room id {rs.room!r} is taken by {clash.namespace}/{clash.name}")
    except ValueError as e:
        state.rooms.pop((namespace, name), None)
        new = invalid_status("InvalidSpec", str(e), conditions, generation, now_iso())
        if not same_status(new, shown):
            await _write(state, namespace, name, new)
            _post(body, "Warning", "InvalidSpec", str(e))
        return
    key = (namespace, name)
    entry = state.rooms.get(key)
    if entry is None:
        entry = RoomEntry(namespace, name, rs, generation, conditions)
        state.rooms[key] = entry
    else:
        entry.spec, entry.generation = rs, generation
    state.metrics.rooms.set(float(len(state.rooms)))
    try:
        await place_rooms(state)
    except OperatorError as e:  # the balance loop places it on its next tick
        state.metrics.errors.inc(1.0, "room")
        log.warning("placing %s/%s: %s", namespace, name, e)
    new = room_status(
        state, entry, int(shown.get("connections") or 0), int(shown.get("participants") or 0)
    )
    entry.conditions = list(new["conditions"])
    if same_status(new, shown):
        entry.last_status = dict(shown)
    elif await _write(state, namespace, name, new):
        entry.last_status = new
        home = new["homePod"]
        if home and home != shown.get("homePod"):
            _post(body, "Normal", "Placed", f"home pod {home} ({new['endpoint']})")
        elif not home:
            _post(body, "Warning", "Pending", "no signaling pod can take rooms yet")
    state.metrics.reconcile.observe(time.perf_counter() - started, "room")


def _post(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the room (kopf.event: ours are posted whatever kopf's own level)."""
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


async def _write(state: State, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
    try:
        await state.kube.patch_room_status(namespace, name, status)
        return True
    except KubeNotFound:
        return False
    except OperatorError as e:  # the balance loop's status refresh writes it later
        state.metrics.errors.inc(1.0, "status")
        log.warning("status of %s/%s: %s", namespace, name, e)
        return False


async def delete(state: State, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    entry = state.rooms.pop((namespace, name), None)
    room = entry.spec.room if entry else str(spec.get("roomId") or name)
    state.metrics.rooms.set(float(len(state.rooms)))
    async with state.placement_lock:
        try:
            await state.store.write_placement({}, removed=[room])
        except OperatorError as e:
            state.metrics.errors.inc(1.0, "room")
            log.warning("removing placement of %s (collected at the next start): %s", room, e)
            return
        state.homes.pop(room, None)
