"""What every part of the hub shares: settings, the registry, metrics, the session
index, the open sockets, this pod's flags and its background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ..config import Settings
from ..metrics import Metrics
from ..protocol import Connection, Limits
from ..registry import PodStats, Registry
from .sessions import SessionIndex


class PodState:
    """One pod's shared state. The flags and the settings in force change (``apply``);
    the other objects are never rebound."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.limits = settings.limits
        # Every open connection's protocol core, to retune when the limits change.
        self.connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.registry = registry
        self.pod_id = settings.pod_id
        self.index = SessionIndex()
        self.sockets: set[web.WebSocketResponse] = set()
        self.draining = False
        # False until the registry answered once, and whenever it stops answering:
        # /readyz follows it, /healthz never does (a Redis outage is no reason to restart).
        self.registry_ok = False
        self.resume_secret = ""
        self.metrics = Metrics(
            lambda: len(self.sockets),
            lambda: len(self.index.sessions),
            lambda: len(self.index.rooms),
            lambda: float(self.registry_ok and registry.presence.answering()),
            lambda: float(self.draining),
            lambda: float(registry.routing.history_trimmed),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cpu_mark = (time.monotonic(), time.process_time())

    def apply(self, settings: Settings) -> None:
        """New settings in force (the config center's): limits for every connection open
        and to come; what a connection fixed at its upgrade (frame size, WebSocket ping)
        applies to the next ones."""
        self.settings, self.limits = settings, settings.limits
        for conn in list(self.connections):
            conn.retune(self.limits)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; ``cancel_tasks`` ends it at shutdown."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def stats(self) -> PodStats:
        """This pod's numbers for its heartbeat; CPU is measured since the last call."""
        now, used = time.monotonic(), time.process_time()
        last_now, last_used = self._cpu_mark
        self._cpu_mark = (now, used)
        cpu = (used - last_used) / (now - last_now) if now > last_now else 0.0
        return PodStats(
            self.settings.advertise_url,
            len(self.sockets),
            len(self.index.sessions),
            len(self.index.rooms),
            self.draining,
            round(cpu, 3),
        )


class PodPart:
    """A part of the hub: reads the settings and limits in force through ``pod``."""

    pod: PodState

    @property
    def settings(self) -> Settings:
        return self.pod.settings

    @property
    def limits(self) -> Limits:
        return self.pod.limits
