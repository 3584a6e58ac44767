"""Signaling pod events: keep the pod cache, and clean up at once after a pod died.

A pod is dead for Redis when it is gone from the API, its phase is Failed/Succeeded,
or its container stopped or restarted (``kill -9``: the node restarts it under the
same name, but every session it held is gone). Cleanup turns its sessions to grace
(resumable anywhere, routed nowhere), removes its heartbeat, and re-homes its rooms.
A pod being deleted gracefully is not dead: it drains and deregisters itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from meetingroom_operator.errors import OperatorError
from meetingroom_operator.handlers.placing import place_rooms
from meetingroom_operator.handlers.state import PodMemory, State
from meetingroom_operator.kube import PodInfo, pod_info

log = logging.getLogger("meetingroom_operator.pods")


def crashed(before: PodMemory | None, now: PodInfo, deleted: bool) -> bool:
    """Did the pod's process die since we last saw it?"""
    if deleted or now.phase in ("Failed", "Succeeded"):
        return True
    if before is None or before.uid != now.uid:
        return False
    if now.restarts > before.restarts:
        return True
    return before.running and not now.running and not now.deleting


async def on_event(state: State, event_type: str | None, body: Mapping[str, Any]) -> None:
    info = pod_info(body)
    if not info.name:
        return
    deleted = event_type == "DELETED"
    before = state.pod_memory.get(info.name)
    if deleted:
        state.pods.pop(info.name, None)
        state.urls.pop(info.name, None)
    else:
        state.pods[info.name] = info
        state.seen_pods.add(info.name)
    dead = crashed(before, info, deleted)
    already = before is not None and before.cleaned
    memory = PodMemory(info.uid, info.restarts, info.running)
    if dead and not already:
        await clean_dead_pod(state, info.name)
        memory.cleaned = True
    elif already and not info.running:
        memory.cleaned = True  # still down: cleaned once is enough
    if deleted:
        state.pod_memory.pop(info.name, None)
    else:
        state.pod_memory[info.name] = memory


async def clean_dead_pod(state: State, pod: str) -> None:
    """Grace the pod's sessions, drop its heartbeat, re-home its rooms. Never raises:
    the balance loop sweeps again if Redis was unreachable."""
    started = time.perf_counter()
    try:
        n = await state.store.clean_dead_pod(pod, state.cfg.grace_ttl_s)
        state.metrics.dead_pods.inc()
        state.metrics.graced.inc(float(n))
        await place_rooms(state)
    except OperatorError as e:
        state.metrics.errors.inc(1.0, "dead-pod")
        log.warning("cleanup of dead pod %s failed (the loop retries): %s", pod, e)
        return
    log.info(
        "pod %s died: %d sessions to grace, rooms re-homed in %.0f ms",
        pod,
        n,
        1000 * (time.perf_counter() - started),
    )
