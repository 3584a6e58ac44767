"""Detach, grace and leave: what becomes of a session when its connection goes, and when
the room hears ``peer-left``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..protocol import peer_left
from ..registry import RegistryError
from .delivery import Delivery
from .sessions import LocalSession
from .state import PodPart, PodState

log = logging.getLogger("signaling")


class Grace(PodPart):
    """A session without a connection waits out its grace period, or leaves at once."""

    def __init__(self, pod: PodState, delivery: Delivery) -> None:
        self.pod = pod
        self.registry = pod.registry.sessions
        self.index = pod.index
        self.sessions = pod.index.sessions
        self.delivery = delivery

    async def detach(self, s: LocalSession) -> None:
        """The connection dropped: frames for the session are kept until it resumes or
        its grace period ends."""
        s.attachment = None
        if self.pod.draining or s.sid not in self.sessions:
            # Draining: the session waits for its peer in the registry, not here.
            with contextlib.suppress(RegistryError):
                await self.registry.detach(s.sid, s.room, s.peer, s.seq, list(s.recent))
            self.index.remove(s)
            return
        try:
            await self.registry.detach(s.sid, s.room, s.peer, s.seq, list(s.recent))
        except RegistryError as e:
            log.warning("detach of %s not registered: %s", s.sid, e)
        loop = asyncio.get_running_loop()
        s.grace_timer = loop.call_later(
            self.limits.grace_s, lambda: self.pod.spawn(self._grace_over(s))
        )

    async def _grace_over(self, s: LocalSession) -> None:
        if self.sessions.get(s.sid) is not s or s.attachment is not None:
            return
        self.index.remove(s)
        try:
            removed = await self.registry.remove(s.sid, s.room, s.peer)
        except RegistryError:
            removed = True
        if removed:
            await self.delivery.room_notice(s.room, peer_left(s.peer, s.role.value), s.sid, s.edge)

    async def leave(self, s: LocalSession) -> None:
        """The peer sent ``leave``: the session ends now."""
        self.index.remove(s)
        s.attachment = None
        try:
            await self.registry.remove(s.sid, s.room, s.peer)
        except RegistryError as e:
            log.warning("leave of %s not registered: %s", s.sid, e)
        await self.delivery.room_notice(s.room, peer_left(s.peer, s.role.value), s.sid, s.edge)
