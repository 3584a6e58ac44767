"""Routing in Redis: a frame for a peer on another pod, room frames, takeover notices.

A relay looks the peer's session up and publishes to its pod's inbox in one script run
(``lua/relay.lua``, many relays per run); when nobody listens on that inbox (the pod
died, or the session is in its grace period) the frame is kept in the session's box
for its resume. A room frame goes to the members this pod believes the room has; the
script checks that belief atomically and, when members changed, answers with the new
list to try again with.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from functools import partial
from typing import Any

from roomwire_contract import inbox, keys

from ..lua import script
from .model import RegistryError, RelayDone, RelayResult
from .redis_link import LuaScript, RedisLink, s
from .redis_sessions import ROOM_TTL_S
from .roles import Routing

# Members that keep changing under a room frame: tried again at once, then after a short
# random pause growing each time (a room whose members all leave at once, their grace
# periods ending together, settles within a few of them), then given up (about 1.3 s).
FAN_OUT_TRIES = 8
FAN_OUT_PAUSE_S = 0.005
MEMBER_CACHE_MAX = 10_000  # rooms whose member lists this pod remembers

RELAY = LuaScript("relay", script("relay"))
SCRIPTS = {name: LuaScript(name, script(name)) for name in ("keep", "fan_out")}
INBOX_PREFIX = keys.inbox("")


class RedisRouting(Routing):
    def __init__(self, link: RedisLink, keep_max: int, hold_s: int) -> None:
        self.link = link
        self.pod_id = link.pod_id
        self.keep_max = keep_max
        self.hold_s = hold_s  # how long kept and routed frames are held
        self._members: dict[str, list[str]] = {}  # room -> its members, as last seen
        link.relay_args = self.relay_args

    def relay_args(self) -> list[Any]:
        """The relay script's leading ARGV (see ``lua/relay.lua``)."""
        return [self.pod_id, repr(time.time()), self.keep_max, self.hold_s, INBOX_PREFIX]

    def relay(self, room: str, peer: str, text: str, done: RelayDone, resend: bool = False) -> None:
        self.link.relay(room, peer, text, partial(self._relayed, done), resend)

    def _relayed(self, done: RelayDone, result: RelayResult) -> None:
        """While Redis is rebuilt after it came back empty, "no such peer" is not known
        (the peer's pod puts its session back at its next heartbeat): it is answered as
        the registry not answering, so that the client resends (docs/protocol.md)."""
        if result == RelayResult.NO_PEER and self.link.rebuilding():
            result = RelayResult.FAILED
        done(result)

    def backlog(self) -> int:
        return self.link.backlog()

    def caught_up(self) -> Any:
        return self.link.caught_up()

    async def keep(self, sid: str, room: str, peer: str, text: str, n: int | None = None) -> bool:
        k = keys.session_keys(room, peer)
        r = await self.link.call(
            SCRIPTS["keep"],
            [k.hash, k.box, k.routed],
            [sid, text, self.pod_id, self.keep_max, self.hold_s, repr(time.time()),
             "" if n is None else n, room, peer, INBOX_PREFIX],
        )  # fmt: skip
        return int(r) == 3

    async def fan_out(
        self,
        room: str,
        text: str,
        *,
        screens_only: bool,
        exclude_sid: str,
        replay: bool,
        resend: bool = False,
    ) -> str:
        members = self._members.get(room)
        if members is None:
            [raw] = await self.link.commands([("HKEYS", keys.room_members(room))])
            members = [s(p) for p in raw]
        for attempt in range(FAN_OUT_TRIES):
            if attempt > 1:
                await asyncio.sleep(random.uniform(0, FAN_OUT_PAUSE_S * 2**attempt))
            keys_ = [keys.room_members(room), keys.room_meta(room), keys.room_events(room)]
            for peer in members:
                k = keys.session_keys(room, peer)
                keys_ += (k.hash, k.box, k.routed)
            r = await self.link.call(
                SCRIPTS["fan_out"],
                keys_,
                [text, "1" if screens_only else "0", exclude_sid, "1" if replay else "0",
                 self.pod_id, repr(time.time()), self.keep_max, self.hold_s,
                 secrets.token_hex(4), self.budget.history, ROOM_TTL_S, room, INBOX_PREFIX,
                 "1" if resend else "", self.budget.history_bytes, *members],
            )  # fmt: skip
            if int(r[0]) == 1:
                self._remember(room, members)
                if len(r) > 2:
                    self.history_trimmed += int(r[2])
                return s(r[1])
            members = [s(p) for p in r[1]]
        raise RegistryError(f"the members of room {room} kept changing")

    def _remember(self, room: str, members: list[str]) -> None:
        if room not in self._members and len(self._members) >= MEMBER_CACHE_MAX:
            self._members.pop(next(iter(self._members)))  # the oldest entry
        self._members[room] = members

    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        return await self._publish(old_pod, inbox.takeover(sid, self.pod_id, replaced))

    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        await self._publish(new_pod, inbox.takeover_done(sid, recent))

    async def _publish(self, pod_id: str, msg: str) -> int:
        [n] = await self.link.commands([("PUBLISH", keys.inbox(pod_id), msg)])
        return int(n)
