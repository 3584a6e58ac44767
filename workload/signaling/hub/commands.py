"""Operator commands and drain: reconnect, migrate-room and drain; each client is told
where to go (``reconnect`` or ``migrate``) before its socket closes with 1012. And
weight: the operator's weight (0..100) for this pod's Nacos instance, if it has one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from roomwire_contract import control

from ..edge import framing
from ..protocol import CloseCode, migrate, reconnect
from ..registry import RegistryError
from .attachment import DeviceAttachment, EdgeLinkPort
from .delivery import Delivery
from .sessions import LocalSession
from .state import PodPart, PodState

log = logging.getLogger("signaling")


class Commands(PodPart):
    """What the operator asks of this pod, and the pod's own drain on SIGTERM."""

    def __init__(self, pod: PodState, delivery: Delivery) -> None:
        self.pod = pod
        self.presence = pod.registry.presence
        self.sessions = pod.index.sessions
        self.index = pod.index
        self.delivery = delivery
        # Told the moment the pod starts draining (e.g. its Nacos instance drops to 0).
        self.on_drain: list[Callable[[], None]] = []
        # Told the operator's weight (0..100), e.g. the Nacos instance; none: ignored.
        self.on_weight: list[Callable[[float], None]] = []

    async def on_message(self, msg: dict[str, Any]) -> None:
        """A signed command from the inbox; one with a bad signature is ignored."""
        cmd = control.verify(self.pod.settings.control_secret, msg)
        if cmd is None:
            log.warning("ignored an operator command with a bad signature")
            return
        await self.run(cmd)

    async def run(self, cmd: dict[str, Any]) -> None:
        op = cmd.get("op")
        if op == "weight":  # sent on change and every 30 s: not worth a line each
            self._weight(cmd.get("weight"))
            return
        log.info("operator command %s", op)
        if op == "reconnect":
            after = int(cmd.get("after_ms", 0))
            links: dict[str, EdgeLinkPort] = {}
            for sid in cmd.get("sids") or []:
                s = self.sessions.get(str(sid))
                if s is not None and s.attachment is not None:
                    if (link := _link(s)) is not None:
                        links[link.key] = link  # a device: its edge moves, all at once
                        continue
                    self.pod.spawn(self._send_reconnect(s, after, 0.0, wait_negotiation=True))
            for link in links.values():
                self.pod.spawn(link.move(framing.reconnect(after), 0.5))
        elif op == "migrate-room":
            room, url = str(cmd.get("room")), str(cmd.get("url"))
            links = {}
            for s in self.index.room_members(room):
                if s.attachment is not None:
                    if (link := _link(s)) is not None:
                        links[link.key] = link
                        continue
                    self.delivery.send_direct(s.attachment, migrate(url, s.resume_token))
                    self.pod.spawn(self._close_later(s, 2.0))
            # An edge moves its upstream itself (make before break) and closes this link;
            # the pod closes it after a while if it has not.
            for link in links.values():
                self.pod.spawn(link.move(framing.migrate(url), 10.0))
        elif op == "drain":
            self.pod.spawn(self.drain())

    def _weight(self, weight: Any) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return
        if not 0 <= weight <= 100:  # also NaN
            return
        for tell in self.on_weight:
            tell(float(weight))

    async def _send_reconnect(
        self, s: LocalSession, after_ms: int, delay_s: float, wait_negotiation: bool = False
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        # A rebalance waits (bounded) for an offer/answer exchange to finish.
        while wait_negotiation and s.negotiating:
            await asyncio.sleep(0.1)
        att = s.attachment
        if att is None or att.closing:
            return
        self.delivery.send_direct(att, reconnect(after_ms, s.resume_token))
        await self.delivery.close_socket(att, CloseCode.SERVICE_RESTART, "reconnect")

    async def _move_later(self, link: EdgeLinkPort, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await link.move(framing.reconnect(random.randint(0, 500)), 0.5)

    async def _close_later(self, s: LocalSession, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        att = s.attachment
        if att is not None:
            await self.delivery.close_socket(att, CloseCode.SERVICE_RESTART, "migrated")

    async def drain(self) -> None:
        """Stop taking connections; ask clients to reconnect, spread over the window."""
        pod = self.pod
        if pod.draining:
            return
        pod.draining = True
        for tell in self.on_drain:
            tell()
        log.info("draining %d sessions over %.1fs", len(self.sessions), self.limits.drain_s)
        with contextlib.suppress(RegistryError):
            await self.presence.heartbeat(pod.stats(), [])
        window = self.limits.drain_s * 0.8
        jobs = []
        links: dict[str, EdgeLinkPort] = {}
        for s in list(self.sessions.values()):
            if s.attachment is not None:
                if (link := _link(s)) is not None:
                    links[link.key] = link
                    continue
                delay = random.uniform(0, window)
                jobs.append(self._send_reconnect(s, random.randint(0, 500), delay))
        for link in links.values():
            jobs.append(self._move_later(link, random.uniform(0, window)))
        if jobs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*jobs, return_exceptions=True), self.limits.drain_s
                )
        # Give the last closes a moment to reach their clients, bounded.
        deadline = time.monotonic() + 2.0
        while pod.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _link(s: LocalSession) -> EdgeLinkPort | None:
    """The edge link a device's session is attached through; None for a direct client."""
    att = s.attachment
    return att.link if isinstance(att, DeviceAttachment) else None
