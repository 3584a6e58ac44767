"""kopf entry point: decorated handlers only, each handing off in one line.

Run: ``kopf run --standalone --namespace <ns> -m meetingroom_operator.main``.
"""

from __future__ import annotations

from typing import Any

import kopf

from meetingroom_operator import constants as c
from meetingroom_operator.handlers import lifecycle, pods, rooms
from meetingroom_operator.handlers.state import state_of

ROOMS = (c.GROUP, c.VERSION, c.PLURAL)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    await lifecycle.startup(settings, memo)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await lifecycle.cleanup(memo)


@kopf.on.resume(*ROOMS, id=c.HANDLER_ROOM_RECONCILE)
@kopf.on.create(*ROOMS, id=c.HANDLER_ROOM_RECONCILE)
@kopf.on.update(*ROOMS, id=c.HANDLER_ROOM_RECONCILE, field="spec")
async def reconcile_room(memo: kopf.Memo, namespace: str | None, name: str, spec: kopf.Spec,
                         meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch,
                         body: kopf.Body, **_: Any) -> None:  # fmt: skip
    await rooms.reconcile(state_of(memo), namespace or "", name, spec,
                          int(meta.get("generation") or 0), status, patch, body)  # fmt: skip


@kopf.on.delete(*ROOMS, id=c.HANDLER_ROOM_DELETE)
async def delete_room(memo: kopf.Memo, namespace: str | None, name: str, spec: kopf.Spec,
                      **_: Any) -> None:  # fmt: skip
    await rooms.delete(state_of(memo), namespace or "", name, spec)


@kopf.on.event("", "v1", "pods", labels={c.APP_LABEL: c.APP_NAME})
async def pod_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    await pods.on_event(state_of(memo), event.get("type"), event["object"])
