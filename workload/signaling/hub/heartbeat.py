"""Heartbeat and sweep: this pod's stats and session records to the registry, sessions
that resumed elsewhere dropped, dead pods reaped, peers whose sessions expired announced."""

from __future__ import annotations

import asyncio
import logging

from ..protocol import CloseCode, peer_left
from ..registry import RegistryError, SessionRecord
from .delivery import Delivery
from .sessions import busy_change
from .state import PodState

log = logging.getLogger("signaling")

SWEEP_EVERY = 3  # heartbeats between sweeps of rooms for expired sessions
RETRY_MIN_S, RETRY_MAX_S = 0.5, 2.0  # back-off while the registry does not answer


class Heartbeat:
    """The pod's background beat; also how it learns the registry is (un)reachable."""

    def __init__(self, pod: PodState, delivery: Delivery) -> None:
        self.pod = pod
        self.presence = pod.registry.presence
        self.registry_sessions = pod.registry.sessions
        self.sessions = pod.index.sessions
        self.rooms = pod.index.rooms
        self.delivery = delivery

    async def run(self) -> None:
        pod = self.pod
        beats, retry_s, reported = 0, RETRY_MIN_S, False
        while True:
            beats += 1
            if pod.registry_ok and beats % SWEEP_EVERY == 0:
                await self._sweep()
            records = await self._records()
            try:
                moved = await self.presence.heartbeat(pod.stats(), records)
                # After the first beat, which settles what an earlier run of this pod left:
                # no join is taken (none can be without the secret) before that.
                if not pod.resume_secret:
                    pod.resume_secret = await self.presence.resume_secret()
                if not pod.registry_ok:
                    log.info("registry reachable")
                pod.registry_ok, retry_s, reported = True, RETRY_MIN_S, False
            except RegistryError as e:
                if pod.registry_ok or not reported:
                    log.warning("registry unreachable: %s (retrying)", e)
                pod.registry_ok, reported = False, True
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)
                continue
            for sid in moved:
                if (s := self.sessions.get(sid)) is not None:
                    await self.delivery.drop(s, CloseCode.REPLACED, "session resumed elsewhere")
            await self._reap_dead_pods()
            await asyncio.sleep(pod.settings.heartbeat_s)

    async def _reap_dead_pods(self) -> None:
        """Pods whose heartbeat expired died without cleaning up: their sessions go to
        grace (once, whoever notices first: any pod or the operator), so that they can
        resume anywhere and frames for them are kept, not refused."""
        try:
            reaped = await self.presence.reap_dead_pods()
        except RegistryError as e:
            log.warning("could not reap dead pods: %s", e)
            return
        for pod, n in reaped.items():
            log.info("pod %s stopped heartbeating: %d of its sessions now in grace", pod, n)

    async def _records(self) -> list[SessionRecord]:
        """Every session's record for the heartbeat, built a few hundred per loop turn: a
        pod holding thousands of sessions would otherwise stall them all at each beat."""
        records = []
        for i, s in enumerate(list(self.sessions.values())):
            records.append(
                SessionRecord(
                    s.sid, s.room, s.peer, s.role.value, s.live, s.seq, busy_change(s), s.last_rn
                )
            )
            if i % 500 == 499:
                await asyncio.sleep(0)
        return records

    async def _sweep(self) -> None:
        """Tell local members about peers whose sessions expired with no pod to say so."""
        for room in list(self.rooms):
            try:
                gone = await self.registry_sessions.sweep(room)
            except RegistryError:
                return
            for peer in gone:
                await self.delivery.room_notice(room, peer_left(peer.peer, peer.role), "")
