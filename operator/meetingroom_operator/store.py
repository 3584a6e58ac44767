"""All of the operator's Redis traffic. I/O only: reads observations, writes what the
handlers decided. Key layout, command signing and the dead-pod scripts come from the
contract shared with the pods (``roomwire_contract``), never duplicated here.

Errors surface as ``StoreError`` with the redis-py error as the cause.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from meetingroom_operator.config import RedisTls
from meetingroom_operator.errors import StoreError
from meetingroom_operator.planning.rebalance import Session
from roomwire_contract import control, edges, keys, reaping
from roomwire_contract.edges import EdgeRecord
from roomwire_contract.lua import script


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pod: str
    url: str
    connections: int
    sessions: int
    rooms: int
    draining: bool
    ts: float


@dataclass(frozen=True, slots=True)
class InflightMove:
    sid: str
    source: str
    deadline: float
    key: str = ""  # the session's hash (keys.session), to watch the move


class Store:
    """One Redis connection pool for the operator. ``tls`` secures a ``rediss://`` URL
    (redis-py's ssl_* options); the client sends no CLIENT SETINFO, which the Redis ACL
    of manifests/ does not allow (it only names the client)."""

    def __init__(self, url: str, tls: RedisTls | None = None) -> None:
        options: dict[str, Any] = {}
        if url.startswith("rediss://"):
            tls = tls or RedisTls()
            options = {
                "ssl_ca_certs": tls.ca_file or None,
                "ssl_cert_reqs": "none" if tls.verify == "none" else "required",
                "ssl_check_hostname": tls.verify == "full",
                "ssl_certfile": tls.cert_file or None,
                "ssl_keyfile": tls.key_file or None,
            }
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            driver_info=None,
            **options,
        )
        # The pods' own scripts: whoever claims a dead pod's sessions first, pod or
        # operator, turns them to grace; the other finds nothing left to claim.
        self._claim = self.redis.register_script(script("claim_pod"))
        self._grace = self.redis.register_script(script("grace_sessions"))
        # session id -> its hash, from the last observation (moves are watched by it)
        self._session_keys: dict[str, str] = {}

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False

    # ---- observations ----------------------------------------------------------------

    async def heartbeats(self) -> dict[str, Heartbeat]:
        """Pods with a live heartbeat (their ``rw:pod:{pod}`` hash still exists)."""
        try:
            pods = [str(p) for p in await self.redis.zrange(keys.PODS, 0, -1)]
            pipe = self.redis.pipeline(transaction=False)
            for pod in pods:
                pipe.hgetall(keys.pod(pod))
            rows = await pipe.execute()
        except RedisError as e:
            raise StoreError(f"reading heartbeats: {e}") from e
        out: dict[str, Heartbeat] = {}
        for pod, row in zip(pods, rows, strict=True):
            if not row:
                continue
            out[pod] = Heartbeat(
                pod=pod,
                url=str(row.get("url", "")),
                connections=_int(row.get("connections")),
                sessions=_int(row.get("sessions")),
                rooms=_int(row.get("rooms")),
                draining=str(row.get("draining", "0")) == "1",
                ts=_float(row.get("ts")),
            )
        return out

    async def live_sessions(self, pods: Iterable[str]) -> list[Session]:
        """Live sessions of ``pods`` (the session hash must name the pod and be live)."""
        pods = list(pods)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for pod in pods:
                pipe.smembers(keys.pod_sessions(pod))
            sets = await pipe.execute()
            found = [
                (pod, room, keys.session(room, peer))
                for pod, members in zip(pods, sets, strict=True)
                for m in members
                if (rp := keys.parse_session_member(m)) is not None
                for room, peer in [rp]
            ]
            pipe = self.redis.pipeline(transaction=False)
            for _, _, key in found:
                pipe.hmget(key, "sid", "pod", "role", "state", "busy")
            rows = await pipe.execute()
        except RedisError as e:
            raise StoreError(f"reading sessions: {e}") from e
        out: list[Session] = []
        now = time.time()
        if len(self._session_keys) > SESSION_KEYS_MAX:
            self._session_keys.clear()
        for (pod, room, key), (sid, owner, role, state, busy) in zip(found, rows, strict=True):
            if sid and owner == pod and state == "live":
                # busy: until when the session is in an offer/answer exchange (see keys)
                negotiating = _float(busy) > now
                out.append(Session(sid, pod, room, role or "participant", negotiating))
                self._session_keys[sid] = key
        return out

    async def session_states(
        self, moves: Mapping[str, InflightMove]
    ) -> dict[str, tuple[str, str] | None]:
        """``(pod, state)`` of each moving session, None for sessions that are gone (or
        were replaced by a fresh join of their peer)."""
        sids = list(moves)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for sid in sids:
                pipe.hmget(moves[sid].key or self._session_keys.get(sid, ""), "sid", "pod", "state")
            rows = await pipe.execute()
        except RedisError as e:
            raise StoreError(f"reading sessions: {e}") from e
        out: dict[str, tuple[str, str] | None] = {}
        for sid, (owner, pod, state) in zip(sids, rows, strict=True):
            out[sid] = None if state is None or owner != sid else (str(pod or ""), str(state))
        return out

    async def participants(self, rooms: Iterable[str]) -> dict[str, int]:
        rooms = list(rooms)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for room in rooms:
                pipe.hlen(keys.room_members(room))
            counts = await pipe.execute()
        except RedisError as e:
            raise StoreError(f"reading room members: {e}") from e
        return {r: int(n) for r, n in zip(rooms, counts, strict=True)}

    async def edges(self) -> list[EdgeRecord]:
        """The room edges' links as the pods that hold (or held) them published them."""
        try:
            raw = await self.redis.hgetall(keys.EDGES)  # (the Redis ACL has no HVALS)
        except RedisError as e:
            raise StoreError(f"reading edges: {e}") from e
        return [r for text in raw.values() if (r := edges.decode(text)) is not None]

    # ---- placement (the operator is its only writer) ---------------------------------

    async def placement(self) -> dict[str, str]:
        try:
            raw = await self.redis.hgetall(keys.PLACEMENT)
            return {str(k): str(v) for k, v in raw.items()}
        except RedisError as e:
            raise StoreError(f"reading placement: {e}") from e

    async def write_placement(self, homes: Mapping[str, str], removed: Iterable[str] = ()) -> None:
        removed = list(removed)
        try:
            pipe = self.redis.pipeline(transaction=True)
            if homes:
                mapping: dict[Any, Any] = dict(homes)
                pipe.hset(keys.PLACEMENT, mapping=mapping)
            if removed:
                pipe.hdel(keys.PLACEMENT, *removed)
            if homes or removed:
                await pipe.execute()
        except RedisError as e:
            raise StoreError(f"writing placement: {e}") from e

    # ---- commands to pods ------------------------------------------------------------

    async def command(self, secret: str, pod: str, cmd: Mapping[str, Any]) -> int:
        """Publish a signed command on ``pod``'s inbox; returns the number of listeners."""
        message = control.sign(secret, dict(cmd))
        try:
            return int(await self.redis.publish(keys.inbox(pod), json.dumps(message)))
        except RedisError as e:
            raise StoreError(f"publishing to {pod}: {e}") from e

    # ---- dead pods -------------------------------------------------------------------

    async def clean_dead_pod(self, pod: str, grace_ttl_s: int) -> int:
        """Turn a pod's sessions to grace (the operator knows it is dead: it left the
        API), their grace counted from its last heartbeat; the number turned, 0 when a
        pod got there first."""
        try:
            last = await self.redis.zscore(keys.PODS, pod)
            r = await self._claim(keys=[keys.pod(pod), keys.pod_sessions(pod)], args=["1"])
            n = 0
            if int(r[0]) == reaping.CLAIMED:
                left = reaping.grace_left(last, grace_ttl_s, time.time())
                for keys_ in reaping.grace_calls(r[1]):
                    n += int(await self._grace(keys=keys_, args=[pod, left]))
            await self.redis.zrem(keys.PODS, pod)
        except RedisError as e:
            raise StoreError(f"cleaning up {pod}: {e}") from e
        return n

    # ---- moves in flight (survive an operator restart) -------------------------------

    async def inflight(self) -> dict[str, InflightMove]:
        try:
            raw = await self.redis.hgetall(keys.OPERATOR_MOVES)
        except RedisError as e:
            raise StoreError(f"reading moves in flight: {e}") from e
        out: dict[str, InflightMove] = {}
        for sid, text in raw.items():
            try:
                data = json.loads(text)
                out[str(sid)] = InflightMove(
                    str(sid), str(data["from"]), float(data["until"]), str(data.get("key", ""))
                )
            except (ValueError, KeyError, TypeError):
                continue
        return out

    async def add_inflight(self, moves: Mapping[str, str], until: float) -> None:
        """Record moves (sid -> source pod) before their commands are sent."""
        if not moves:
            return
        mapping: dict[Any, Any] = {
            sid: json.dumps({"from": src, "until": until, "key": self._session_keys.get(sid, "")})
            for sid, src in moves.items()
        }
        try:
            await self.redis.hset(keys.OPERATOR_MOVES, mapping=mapping)
        except RedisError as e:
            raise StoreError(f"recording moves: {e}") from e

    async def drop_inflight(self, sids: Iterable[str]) -> None:
        sids = list(sids)
        if not sids:
            return
        try:
            await self.redis.hdel(keys.OPERATOR_MOVES, *sids)
        except RedisError as e:
            raise StoreError(f"clearing moves: {e}") from e


SESSION_KEYS_MAX = 200_000  # sessions whose keys the store remembers between observations


def now() -> float:
    return time.time()


def _int(v: object) -> int:
    try:
        return int(float(str(v)))
    except (TypeError, ValueError):
        return 0


def _float(v: object) -> float:
    try:
        return float(str(v))
    except (TypeError, ValueError):
        return 0.0
