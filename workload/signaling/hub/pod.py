"""The hub: one pod's parts assembled, started in the background and stopped."""

from __future__ import annotations

import contextlib
import logging

from aiohttp import WSCloseCode

from ..config import Settings
from ..config_center import ConfigCenter
from ..metrics import Metrics
from ..nacos import NacosInstance, PodLoad
from ..registry import Registry
from .commands import Commands
from .delivery import Delivery
from .edgelink import EdgeLinks
from .grace import Grace
from .heartbeat import Heartbeat
from .inbox import Inbox
from .join import Joins
from .relay import Relays
from .state import PodState
from .websocket import WebSocketHandler


class Hub:
    """Sessions held by this process, and everything that happens to them."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.state = pod = PodState(settings, registry)
        self._budget(settings)
        self.delivery = Delivery(pod)
        self.joins = Joins(pod, self.delivery)
        self.grace = Grace(pod, self.delivery)
        self.relays = Relays(pod, self.delivery)
        self.commands = Commands(pod, self.delivery)
        self.heartbeat = Heartbeat(pod, self.delivery)
        self.inbox = Inbox(pod, self.delivery, self.joins, self.commands)
        self.edges = EdgeLinks(pod, self.delivery, self.joins, self.grace, self.relays)
        self.websocket = WebSocketHandler(
            pod, self.delivery, self.joins, self.grace, self.relays, self.edges
        )
        self.handle_ws = self.websocket.handle
        self.handle_edge = self.websocket.handle_edge
        # This pod's Nacos instance (--nacos-server), kept beside the registry: never
        # part of readiness.
        self.nacos: NacosInstance | None = None
        if settings.nacos_server:
            self.nacos = NacosInstance(settings, self._load)
            self.commands.on_drain.append(self.nacos.wake)
            self.commands.on_weight.append(self.nacos.set_weight)
        # Live settings from the Nacos config center (--nacos-config-data-id).
        self.config_center: ConfigCenter | None = None
        if settings.nacos_server and settings.nacos_config_data_id:
            self.config_center = ConfigCenter(
                settings, self.apply, self.state.metrics.config_updates
            )

    def apply(self, settings: Settings, changed: tuple[str, ...]) -> None:
        """Settings in force from now on (the config center's, validated)."""
        self.state.apply(settings)
        self._budget(settings)
        if "log_level" in changed:
            logging.getLogger().setLevel(settings.log_level.upper())

    def _budget(self, settings: Settings) -> None:
        """The room budget the registry applies (its bounds travel with each call)."""
        budget = settings.room_budget
        self.state.registry.routing.budget = budget
        self.state.registry.sessions.budget = budget

    def _load(self) -> PodLoad:
        return PodLoad(len(self.state.sockets), self.state.draining)

    @property
    def metrics(self) -> Metrics:
        return self.state.metrics

    @property
    def draining(self) -> bool:
        return self.state.draining

    @property
    def registry_ok(self) -> bool:
        """The last heartbeat went through and Redis answers right now."""
        return self.state.registry_ok and self.state.registry.presence.answering()

    async def start(self) -> None:
        """Returns at once: the registry is reached in the background, with back-off, so
        the pod serves /healthz from its first second whether Redis is up or not."""
        await self.state.registry.presence.start(self.inbox.on_message)
        self.state.spawn(self.heartbeat.run())
        self.state.spawn(self.edges.run())
        if self.nacos is not None:
            self.nacos.start()
        if self.config_center is not None:
            self.config_center.start()

    async def drain(self) -> None:
        await self.commands.drain()
        if self.nacos is not None:
            await self.nacos.withdraw()

    async def stop(self) -> None:
        pod = self.state
        if self.config_center is not None:
            await self.config_center.close()
        if self.nacos is not None:
            await self.nacos.close()
        await pod.cancel_tasks()
        for ws in list(pod.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        with contextlib.suppress(Exception):
            await pod.registry.presence.deregister()
        await pod.registry.presence.close()
