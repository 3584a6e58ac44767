"""Sessions in Redis: membership of rooms, join, resume, detach and leave, the sweep.

Each operation is one script over one room's keys (hash tag ``{<room>}``), so it is one
round trip and atomic; the pod's session set, in its own slot, is added to right after
in the same write. Key layout: ``roomwire_contract.keys``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from roomwire_contract import keys

from ..lua import script
from ..protocol import Role
from .model import JoinOutcome, PeerInfo, ResumeBusy, ResumeOutcome, RoomFull
from .redis_link import LuaScript, RedisLink, s
from .roles import Sessions

ROOM_TTL_S = 24 * 3600  # room streams and metadata outlive any one pod's members

# How long a resume attempt holds its session against other resumes unless it finishes
# first (it does, within a second: this bounds only an attempt whose pod died).
RESUME_HOLD_MS = 5000

SCRIPTS = {
    name: LuaScript(name, script(name))
    for name in ("join", "resume", "resumed", "detach", "remove", "members", "sweep", "take")
}


def peers(flat: list[Any]) -> list[PeerInfo]:
    """``[peer, role, peer, role, ...]`` from a script, as PeerInfo."""
    return [PeerInfo(s(flat[i]), s(flat[i + 1])) for i in range(0, len(flat), 2)]


def _fields(entry: Any) -> dict[str, Any]:
    """A stream entry's fields as a dict."""
    _entry_id, raw = entry
    return {s(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}


class RedisSessions(Sessions):
    def __init__(self, link: RedisLink, live_ttl: int, grace_s: int) -> None:
        self.link = link
        self.pod_id = link.pod_id
        self.live_ttl = live_ttl
        self.grace_s = grace_s
        self._own = keys.pod_sessions(self.pod_id)

    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        k = keys.session_keys(room, peer)
        r = await self.link.call(
            SCRIPTS["join"],
            [keys.room_members(room), keys.room_roles(room), keys.room_meta(room), *k],
            [sid, peer, role.value, self.pod_id, max_peers, self.live_ttl,
             secrets.token_hex(4), ROOM_TTL_S],
        )  # fmt: skip
        if int(r[0]) < 0:
            raise RoomFull(f"room {room} has {max_peers} peers")
        self.link.fire("SADD", self._own, keys.session_member(room, peer))
        old_sid, old_pod = s(r[1]), s(r[2])
        return JoinOutcome(peers(r[5]), s(r[3]), int(r[4]), old_sid or None, old_pod or None)

    async def members(self, room: str) -> list[PeerInfo]:
        return peers(
            await self.link.call(
                SCRIPTS["members"], [keys.room_members(room), keys.room_roles(room)], []
            )
        )

    async def resume(
        self,
        sid: str,
        room: str,
        peer: str,
        role: Role,
        last_rn: int | None = None,
        attempt: str = "",
    ) -> ResumeOutcome | None:
        r = await self.link.call(
            SCRIPTS["resume"],
            [*keys.session_keys(room, peer), keys.room_members(room)],
            [sid, self.pod_id, self.live_ttl, peer, -1 if last_rn is None else last_rn,
             attempt or secrets.token_hex(8), int(time.time() * 1000), RESUME_HOLD_MS],
        )  # fmt: skip
        if r == 0:
            raise ResumeBusy(f"session {sid} is resuming elsewhere")
        if not r:
            return None
        self.link.fire("SADD", self._own, keys.session_member(room, peer))
        kept: dict[int, str] = {}
        for entry in r[3]:
            f = _fields(entry)
            kept[int(f["n"])] = s(f["f"])
        recent = []
        for item in r[4]:
            seq, _, text = s(item).partition(":")
            recent.append((int(seq), text))
        # Published to the old pod but maybe never delivered: past the client's last_rn.
        for item in r[5]:
            n_text, _, text = s(item).partition(":")
            n = int(n_text)
            if last_rn is not None and n > last_rn:
                kept.setdefault(n, text)
        return ResumeOutcome(int(r[1]), sorted(kept.items()), s(r[0]), int(r[2]), recent)

    async def resumed(self, room: str, peer: str, attempt: str) -> None:
        await self.link.call(SCRIPTS["resumed"], [keys.session(room, peer)], [attempt])

    async def detach(
        self, sid: str, room: str, peer: str, seq: int, recent: list[tuple[int, str]]
    ) -> None:
        await self.link.call(
            SCRIPTS["detach"],
            [keys.session(room, peer), keys.session_recent(room, peer)],
            [sid, self.pod_id, seq, self.grace_s, *(f"{q}:{t}" for q, t in recent)],
        )

    async def take_kept(
        self, sid: str, room: str, peer: str, after_rn: int
    ) -> list[tuple[int, str]]:
        box, routed = await self.link.call(
            SCRIPTS["take"], [keys.session_box(room, peer), keys.session_routed(room, peer)], []
        )
        out: dict[int, str] = {}
        for entry in box:
            f = _fields(entry)
            out[int(f["n"])] = s(f["f"])
        for item in routed:
            n_text, _, text = s(item).partition(":")
            if int(n_text) > after_rn:
                out.setdefault(int(n_text), text)
        return sorted(out.items())

    async def remove(self, sid: str, room: str, peer: str) -> bool:
        r = await self.link.call(
            SCRIPTS["remove"],
            [
                *keys.session_keys(room, peer),
                keys.room_members(room),
                keys.room_roles(room),
                keys.room_meta(room),
                keys.room_events(room),
            ],
            [sid, peer, self.pod_id, self.budget.idle_s],
        )
        if int(r) != 0:
            self.link.fire("SREM", self._own, keys.session_member(room, peer))
        return int(r) == 1

    async def sweep(self, room: str) -> list[PeerInfo]:
        """Two steps: read who the members are, then let the script check each (it
        checks again, atomically; a member who joined in between waits for the next
        sweep)."""
        [flat] = await self.link.commands([("HGETALL", keys.room_members(room))])
        if not flat:
            return []
        keys_: list[str] = [
            keys.room_members(room), keys.room_roles(room),
            keys.room_meta(room), keys.room_events(room),
        ]  # fmt: skip
        args: list[Any] = [self.budget.idle_s]
        for i in range(0, len(flat), 2):
            peer, sid = s(flat[i]), s(flat[i + 1])
            keys_ += keys.session_keys(room, peer)
            args += (peer, sid)
        return peers(await self.link.call(SCRIPTS["sweep"], keys_, args))
