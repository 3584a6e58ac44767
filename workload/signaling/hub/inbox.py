"""The inbox handler: what other pods and the operator publish to this pod. Frames for
sessions attached here are delivered at once (the hot path); the rest is handled in
order: frames to keep, takeovers, recovery after an inbox outage, operator commands."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from roomwire_contract.inbox import InboxFrame

from .commands import Commands
from .delivery import Delivery
from .join import Joins
from .state import PodState

log = logging.getLogger("signaling")


class Inbox:
    """The handler the registry calls with each decoded inbox message, in order."""

    def __init__(self, pod: PodState, delivery: Delivery, joins: Joins, commands: Commands) -> None:
        self.registry_sessions = pod.registry.sessions
        self.sessions = pod.index.sessions
        self._attached = pod.index.attached
        self.deliver = delivery.deliver
        self.keep = delivery.keep
        self.joins = joins
        self.commands = commands

    def on_message(self, msg: dict[str, Any]) -> Awaitable[None] | None:
        """A message from another pod or the operator. Frames for sessions live here are
        delivered at once; the rest is returned as a coroutine to await, in order."""
        if msg.get("k") == "batch":
            # The hot path: frames from other pods, each for one session here.
            frames, sent_at = msg["frames"], msg["t"]
            for i, (_, _, sid, n, text) in enumerate(frames):
                if (s := self._attached(sid)) is None:
                    return self._frames(frames[i:], sent_at)
                self.deliver(s, text, sent_at, n)
            return None
        return self._other(msg)

    async def _frames(self, frames: list[InboxFrame], sent_at: float) -> None:
        for room, peer, sid, n, text in frames:
            if (s := self._attached(sid)) is not None:
                self.deliver(s, text, sent_at, n)
            else:
                # Detached, moved or gone: the registry forwards or keeps it. Awaited, so
                # that a takeover handled after this message finds it passed on.
                await self.keep(sid, room, peer, text, n)

    async def _other(self, msg: dict[str, Any]) -> None:
        kind = msg.get("k")
        if kind == "takeover":
            sid, new_pod = str(msg.get("sid")), str(msg.get("pod"))
            await self.joins.hand_over(sid, new_pod, bool(msg.get("replaced")))
        elif kind == "resubscribed":
            # Awaited: the frames that arrive from now on wait behind the recovered ones.
            await self._recover_kept()
        elif kind == "takeover-done":
            self.joins.takeover_done(str(msg.get("sid")), msg.get("recent") or [])
        elif kind == "cmd":
            await self.commands.on_message(msg)

    async def _recover_kept(self) -> None:
        """After the inbox was down: deliver, in order, the frames kept for sessions live
        here meanwhile and those the lost connection swallowed (past each last rn)."""
        live = [s for s in self.sessions.values() if s.live]
        found = await asyncio.gather(
            *(self.registry_sessions.take_kept(s.sid, s.room, s.peer, s.last_rn) for s in live),
            return_exceptions=True,
        )
        for s, frames in zip(live, found, strict=True):
            if isinstance(frames, BaseException):
                log.warning("could not recover frames for %s: %s", s.sid, frames)
                continue
            for n, text in frames:
                self.deliver(s, text, None, n)
