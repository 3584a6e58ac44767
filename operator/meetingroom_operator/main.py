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


@kopf.on.event(*ROOMS)
async def room_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    await rooms.on_event(state_of(memo), event.get("type"), event["object"])


@kopf.on.event("", "v1", "pods", labels={c.APP_LABEL: c.APP_NAME})
async def pod_event(memo: kopf.Memo, event: kopf.RawEvent, **_: Any) -> None:
    await pods.on_event(state_of(memo), event.get("type"), event["object"])
