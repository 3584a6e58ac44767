"""This pod among the others, in Redis: its heartbeat and load, its session set, the
shared resume secret, and reaping pods that died without a word.

A pod's heartbeat hash expires ``POD_TTL_S`` after its last beat. A pod whose hash
expired while it is still in ``rw:pods`` died without deregistering: whoever notices
first (any pod, or the operator) claims its session set and turns those sessions to
grace, room by room (``roomwire_contract.reaping``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from roomwire_contract import edges, keys, reaping
from roomwire_contract.edges import EdgeRecord
from roomwire_contract.lua import script as shared_script

from ..lua import script
from .model import InboxHandler, PodStats, RegistryError, SessionRecord
from .redis_inbox import Inbox
from .redis_link import LuaScript, RedisLink, s
from .roles import Presence

log = logging.getLogger("signaling.redis")

REFRESH_CHUNK = 500  # sessions per refresh call: about a millisecond of Redis each
# Readiness: Redis counts as not answering once a command waited this long; an idle pod
# sends a PING this often, so that a Redis that stops answering shows within 2 s.
STALL_S, PROBE_S = 1.0, 0.5
RESTORE_CHUNK = 200  # sessions per restore call

SCRIPTS = {name: LuaScript(name, script(name)) for name in ("refresh", "restore")}
SHARED = {name: LuaScript(name, shared_script(name)) for name in ("claim_pod", "grace_sessions")}


class RedisPresence(Presence):
    def __init__(
        self, link: RedisLink, inbox: Inbox, live_ttl: int, grace_s: int, secret: str | None
    ) -> None:
        self.link = link
        self.inbox = inbox
        self.pod_id = link.pod_id
        self.live_ttl = live_ttl
        self.grace_s = grace_s
        self._secret = secret
        self._registered = False
        self._last_members: set[str] = set()  # the session set as the last beat wrote it
        self._prober: asyncio.Task[None] | None = None

    async def start(self, on_inbox: InboxHandler) -> None:
        # Nothing waits for Redis here: the inbox subscribes in the background, and the
        # hub's heartbeat loop reports the registry reachable once it is.
        self.inbox.start(on_inbox)
        self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Keep one command in flight now and then on an idle link: a Redis that stops
        answering (paused, overloaded, a dead connection not yet noticed) is seen by
        ``answering`` within about STALL_S + PROBE_S."""
        while True:
            await asyncio.sleep(PROBE_S)
            if self.link.idle():
                self.link.fire("PING")

    def answering(self) -> bool:
        return self.inbox.subscribed.is_set() and self.link.waited() < STALL_S

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        self.link.close()
        await self.inbox.close()

    async def resume_secret(self) -> str:
        if self._secret is None:
            _, got = await self.link.commands(
                [("SET", keys.RESUME_SECRET, secrets.token_hex(32), "NX"),
                 ("GET", keys.RESUME_SECRET)]
            )  # fmt: skip
            self._secret = s(got)
        return self._secret

    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        with contextlib.suppress(TimeoutError):  # at start-up, the first subscription
            await asyncio.wait_for(self.inbox.subscribed.wait(), 1.0)
        if not self.inbox.subscribed.is_set():
            raise RegistryError("inbox not subscribed")
        if not self._registered:
            await self._reap_previous_run()
        now = time.time()
        pod = keys.pod(self.pod_id)
        [existed] = await self.link.commands([("EXISTS", pod)])
        moved: list[str] = []
        if self._registered and not existed:
            log.warning(
                "registry lost this pod's records (Redis restart, or this pod was "
                "thought dead); restoring %d sessions",
                len(sessions),
            )
            moved = await self._restore(sessions)
            # Frames kept for these sessions meanwhile are recovered, in order, before
            # any inbox message that comes after this one.
            self.inbox.dispatch({"k": "resubscribed"})
        own = keys.pod_sessions(self.pod_id)
        gone = set(moved)
        members = [keys.session_member(r.room, r.peer) for r in sessions if r.sid not in gone]
        gone_now = sorted(self._last_members.difference(members))
        self._last_members = set(members)
        commands: list[tuple[Any, ...]] = [
            ("HSET", pod, "url", stats.url, "connections", stats.connections,
             "sessions", stats.sessions, "rooms", stats.rooms,
             "draining", int(stats.draining), "cpu", stats.cpu, "ts", now),
            ("EXPIRE", pod, keys.POD_TTL_S),
            ("ZADD", keys.PODS, now, self.pod_id),
            # The session set kept in step with what the pod holds: added to, and
            # rid of what the last beat had and this one has not. Never rewritten
            # whole: a session that joined after this beat's records were taken is in
            # the set already (its join added it) and must stay.
            *(("SADD", own, *members[i : i + REFRESH_CHUNK])
              for i in range(0, len(members), REFRESH_CHUNK)),
            *(("SREM", own, *gone_now[i : i + REFRESH_CHUNK])
              for i in range(0, len(gone_now), REFRESH_CHUNK)),
            ("EXPIRE", own, keys.POD_TTL_S * 6),
        ]  # fmt: skip
        if self._secret is not None:
            commands.append(("SET", keys.RESUME_SECRET, self._secret, "NX"))
        await self.link.commands(commands)
        live = [r for r in sessions if r.live and r.sid not in gone]
        claimed: list[SessionRecord] = []
        for i in range(0, len(live), REFRESH_CHUNK):
            chunk = live[i : i + REFRESH_CHUNK]
            got = await self.link.call(
                SCRIPTS["refresh"],
                [keys.session(r.room, r.peer) for r in chunk],
                [self.live_ttl, *("" if r.busy is None else r.busy for r in chunk)],
            )
            claimed += [chunk[int(k) - 1] for k in got]
        if claimed:
            log.warning(
                "%d live sessions of this pod were turned to grace by someone who took it "
                "for dead (its heartbeat was late); taking them back",
                len(claimed),
            )
            moved += await self._restore(claimed)
            # What was kept for them meanwhile is delivered, in order, before any inbox
            # message that comes after this one.
            self.inbox.dispatch({"k": "resubscribed"})
        self._registered = True
        return moved

    async def _reap_previous_run(self) -> None:
        """A pod that starts under the name of one that died (its container restarted in
        place, within the heartbeat TTL) first turns what that run left to grace: its
        sessions would otherwise stay live here, and frames for them would be routed to a
        process that does not know them."""
        [last] = await self.link.commands([("ZSCORE", keys.PODS, self.pod_id)])
        n = await reap(
            self.link, self.pod_id, None if last is None else float(last), self.grace_s, True
        )
        if n:
            log.info(
                "pod %s stopped heartbeating: %d of its sessions now in grace "
                "(left by its previous run, found at start-up)",
                self.pod_id,
                n,
            )

    async def _restore(self, sessions: list[SessionRecord]) -> list[str]:
        moved: list[str] = []
        for i in range(0, len(sessions), RESTORE_CHUNK):
            keys_: list[str] = []
            args: list[Any] = [self.pod_id, self.live_ttl, self.grace_s]
            for rec in sessions[i : i + RESTORE_CHUNK]:
                keys_ += (
                    keys.session(rec.room, rec.peer),
                    keys.room_members(rec.room),
                    keys.room_roles(rec.room),
                )
                args += (rec.sid, rec.peer, rec.role, int(rec.live), rec.seq, rec.rn)
            moved += [s(x) for x in await self.link.call(SCRIPTS["restore"], keys_, args)]
        return moved

    async def reap_dead_pods(self) -> dict[str, int]:
        now = time.time()
        [stale] = await self.link.commands(
            [("ZRANGEBYSCORE", keys.PODS, "-inf", repr(now - keys.POD_TTL_S), "WITHSCORES")]
        )
        out: dict[str, int] = {}
        for i in range(0, len(stale), 2):
            pod, last = s(stale[i]), float(stale[i + 1])
            if pod == self.pod_id:
                continue  # this pod is alive: its next heartbeat restores what it has
            n = await reap(self.link, pod, last, self.grace_s, known_dead=False)
            if n is not None:
                out[pod] = n
        return out

    async def home_url(self, room: str) -> tuple[str, str] | None:
        [home] = await self.link.commands([("HGET", keys.PLACEMENT, room)])
        if not home:
            return None
        pod = s(home)
        [url] = await self.link.commands([("HGET", keys.pod(pod), "url")])
        return (pod, s(url)) if url else None

    async def edges(self, records: list[EdgeRecord]) -> None:
        if records:
            flat: list[str] = []
            for r in records:
                flat += [edges.field(r.room, r.edge), edges.encode(r)]
            await self.link.commands([("HSET", keys.EDGES, *flat)])

    async def deregister(self) -> None:
        await self.link.commands(
            [("DEL", keys.pod(self.pod_id), keys.pod_sessions(self.pod_id)),
             ("ZREM", keys.PODS, self.pod_id)]
        )  # fmt: skip


async def reap(
    link: RedisLink, pod: str, last_heartbeat: float | None, grace_s: int, known_dead: bool
) -> int | None:
    """Claim a dead pod's sessions and turn them to grace; the number turned, or None
    when the pod is alive or had nothing left to claim (someone else claimed it)."""
    r = await link.call(
        SHARED["claim_pod"], [keys.pod(pod), keys.pod_sessions(pod)], ["1" if known_dead else "0"]
    )
    if int(r[0]) == reaping.ALIVE:
        return None
    n: int | None = None
    if int(r[0]) == reaping.CLAIMED:
        left = reaping.grace_left(last_heartbeat, grace_s, time.time())
        n = 0
        for keys_ in reaping.grace_calls(s(m) for m in r[1]):
            n += int(await link.call(SHARED["grace_sessions"], keys_, [pod, left]))
    await link.commands([("ZREM", keys.PODS, pod)])
    return n
