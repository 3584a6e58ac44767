"""The Redis registry: sessions, rooms, pod inboxes and room streams shared by all pods.

Every operation that must be consistent is one Lua script, so it is one round trip
and atomic: a relay looks the peer up and publishes to its pod's inbox in one step, and
when nobody listens on that inbox (the pod died, or the session is in its grace period)
the frame is kept in the session's box for its resume. Key layout: ``signaling.keys``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from roomwire_contract import inbox, keys
from roomwire_contract.inbox import decode_inbox
from roomwire_contract.lua import script

from .protocol import Role
from .registry import (
    InboxHandler,
    JoinOutcome,
    PeerInfo,
    PodStats,
    Registry,
    RegistryError,
    RelayDone,
    RelayResult,
    ResumeOutcome,
    RoomFull,
    SessionRecord,
)
from .resp import RespPipe, open_pipe

log = logging.getLogger("signaling.redis")

ROOM_TTL_S = 24 * 3600  # room streams and metadata outlive any one pod's members
ROOM_STREAM_MAXLEN = 1000
BATCH_TIMEOUT_S = 5.0
INBOX_PING_S = 5.0

RELAY_GROUP_MAX = 256  # relays per script run: a bound on how long one run holds Redis

# (script, keys, args, the caller's future); a plain command when script is None
_Call = tuple[Any, list[str], list[Any], "asyncio.Future[Any]"]
# (room, peer, frame, the caller's callback)
_RelayCall = tuple[str, str, str, RelayDone]

# Shared helpers, prepended to the scripts that route frames. Their `grace` is how long
# kept and routed frames are held: the live-session TTL (a pod's heartbeat TTL plus the
# grace period), so that frames for a session whose pod died are still there when the
# session, turned to grace by whoever noticed, resumes; the sweep frees them when the
# session ends.
_ROUTE_LIB = """
-- n orders a session's frames across pods: assigned once, when a frame is first routed
local function next_n(sid, n)
  if n ~= nil and n ~= '' then return n end
  return redis.call('HINCRBY', 'rw:session:' .. sid, 'n', 1)
end
local function keep(sid, text, keep_max, grace, n)
  local box = 'rw:session:' .. sid .. ':box'
  if redis.call('XLEN', box) >= keep_max then
    redis.call('HINCRBY', 'rw:session:' .. sid, 'dropped', 1)
  end
  redis.call('XADD', box, 'MAXLEN', keep_max, '*', 'n', next_n(sid, n), 'f', text)
  redis.call('EXPIRE', box, grace)
end
-- the last frames published to a session's pod: if that pod dies with them in flight,
-- a resume finds them here (the client says which it got with last_rn)
local function routed(sid, n, text, grace)
  local key = 'rw:session:' .. sid .. ':routed'
  -- at least the last 64, trimmed once per 32 frames rather than on every one
  if redis.call('LPUSH', key, n .. ':' .. text) > 96 then redis.call('LTRIM', key, 0, 63) end
  redis.call('EXPIRE', key, grace)
end
-- deliver to a session: publish to its pod when live there and listening, else keep
local function route(sid, text, me, keep_max, grace, now, n)
  local s = redis.call('HMGET', 'rw:session:' .. sid, 'pod', 'state')
  if not s[1] then return 0 end
  -- live on the calling pod itself: it delivers (a resume raced the frame)
  if s[2] == 'live' and s[1] == me then return 3 end
  n = next_n(sid, n)
  if s[2] == 'live' and s[1] ~= '' then
    -- compact framing (see keys): the frame rides as it is, never re-escaped
    local msg = 'b\\31' .. now .. '\\30' .. sid .. '\\31' .. n .. '\\31' .. text
    if redis.call('PUBLISH', 'rw:inbox:' .. s[1], msg) > 0 then
      routed(sid, n, text, grace)
      return 1
    end
  end
  keep(sid, text, keep_max, grace, n)
  return 2
end
"""

_JOIN = """
local members, skey, psess, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, peer, role, room, pod = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxp, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local all = redis.call('HGETALL', members)
local peers = {}
local old_sid, old_pod, count = '', '', 0
for i = 1, #all, 2 do
  local p, s = all[i], all[i + 1]
  local info = redis.call('HMGET', 'rw:session:' .. s, 'role', 'pod')
  -- a member whose session expired is left to the sweep, which announces it once
  if not info[1] then
  elseif p == peer then
    old_sid, old_pod = s, info[2] or ''
  else
    count = count + 1
    table.insert(peers, p)
    table.insert(peers, info[1])
  end
end
if old_sid == '' and count >= maxp then return {-1} end
if old_sid ~= '' then
  redis.call('DEL', 'rw:session:' .. old_sid, 'rw:session:' .. old_sid .. ':box')
  if old_pod ~= '' then redis.call('SREM', 'rw:pod:' .. old_pod .. ':sessions', old_sid) end
end
redis.call('HSET', members, peer, sid)
redis.call('HSET', KEYS[5], peer, role)
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('HSET', skey, 'pod', pod, 'room', room, 'peer', peer, 'role', role,
  'state', 'live', 'seq', 0, 'n', 0)
redis.call('EXPIRE', skey, ttl)
redis.call('SADD', psess, sid)
redis.call('HSETNX', meta, 'epoch', ARGV[8])
redis.call('EXPIRE', meta, ARGV[9])
local epoch = redis.call('HGET', meta, 'epoch')
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
return {count, old_sid, old_pod, epoch, offset, peers}
"""

_RESUME = """
local skey, box, psess, members = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, pod, ttl, peer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local s = redis.call('HMGET', skey, 'pod', 'seq', 'room', 'dropped')
if not s[3] then return false end
local old = s[1] or ''
redis.call('HSET', skey, 'pod', pod, 'state', 'live', 'dropped', 0)
redis.call('EXPIRE', skey, ttl)
redis.call('SADD', psess, sid)
if old ~= '' and old ~= pod then redis.call('SREM', 'rw:pod:' .. old .. ':sessions', sid) end
redis.call('HSET', members, peer, sid)
local entries = redis.call('XRANGE', box, '-', '+')
local recent = redis.call('LRANGE', KEYS[5], 0, -1)
local routed = {}
if tonumber(ARGV[5]) >= 0 then routed = redis.call('LRANGE', KEYS[6], 0, -1) end
redis.call('DEL', box, KEYS[5], KEYS[6])
return {old, s[2] or '0', s[4] or '0', entries, recent, routed}
"""

_DETACH = """
if redis.call('HGET', KEYS[1], 'pod') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'grace', 'seq', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
if #ARGV > 3 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

_REMOVE = """
local skey, box, members, psess = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, peer, me = ARGV[1], ARGV[2], ARGV[3]
local owner = redis.call('HGET', skey, 'pod')
if owner and owner ~= '' and owner ~= me then return 0 end
redis.call('DEL', skey, box, skey .. ':recent', skey .. ':routed')
redis.call('SREM', psess, sid)
if redis.call('HGET', members, peer) == sid then
  redis.call('HDEL', members, peer)
  redis.call('HDEL', KEYS[5], peer)
end
return 1
"""

# Relays of one pod, in call order, as one script: ARGV is me, now, keep_max, grace, then
# (room, peer, frame) per relay. Look-ups are made once per target in the batch, and the
# frames for one pod leave in one PUBLISH, so Redis and the receiving pod handle one
# message per batch instead of one per frame. Returns one code per relay (RelayResult).
_RELAY_BATCH = (
    _ROUTE_LIB
    + """
local me, now, keep_max, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- few tables, whatever the batch size: most batches are a frame or two
local codes, found = {}, {}
local dpod, dsid, dn, dtext, dk = {}, {}, {}, {}, {}
local k = 0
for i = 5, #ARGV, 3 do
  k = k + 1
  local members, peer, text = 'rw:room:' .. ARGV[i] .. ':members', ARGV[i + 1], ARGV[i + 2]
  local who = members .. '\\31' .. peer
  local f = found[who]
  if f == nil then
    f = false
    local sid = redis.call('HGET', members, peer)
    if sid then
      local s = redis.call('HMGET', 'rw:session:' .. sid, 'pod', 'state')
      if s[1] then
        f = s
        f[3] = sid
      end
    end
    found[who] = f
  end
  if not f then
    codes[k] = 0
  elseif f[2] == 'live' and f[1] == me then
    codes[k] = 3
  elseif f[2] == 'live' and f[1] ~= '' then
    local j = #dsid + 1
    dpod[j], dsid[j], dtext[j], dk[j] = f[1], f[3], text, k
    dn[j] = redis.call('HINCRBY', 'rw:session:' .. f[3], 'n', 1)
    codes[k] = 1
  else
    keep(f[3], text, keep_max, grace, nil)
    codes[k] = 2
  end
end
-- one PUBLISH per destination pod, in first-seen order
local m, sent = #dsid, {}
for j = 1, m do
  local pod = dpod[j]
  if not sent[pod] then
    sent[pod] = true
    local parts = {'b\\31' .. now}
    for q = j, m do
      if dpod[q] == pod then
        parts[#parts + 1] = dsid[q] .. '\\31' .. dn[q] .. '\\31' .. dtext[q]
      end
    end
    local listening = redis.call('PUBLISH', 'rw:inbox:' .. pod, table.concat(parts, '\\30')) > 0
    for q = j, m do
      if dpod[q] == pod then
        if listening then
          routed(dsid[q], dn[q], dtext[q], grace)
        else
          keep(dsid[q], dtext[q], keep_max, grace, dn[q])
          codes[dk[q]] = 2
        end
      end
    end
  end
end
return codes
"""
)

_KEEP = (
    _ROUTE_LIB
    + """
return route(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7])
"""
)

_FAN_OUT = (
    _ROUTE_LIB
    + """
local members, meta, events = KEYS[1], KEYS[2], KEYS[3]
local text, screens_only, exclude, replay = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4] == '1'
local me, now, keep_max, grace = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local out = text
if replay then
  redis.call('HSETNX', meta, 'epoch', ARGV[9])
  local epoch = redis.call('HGET', meta, 'epoch')
  local offset = redis.call('HINCRBY', meta, 'offset', 1)
  out = string.sub(text, 1, -2) .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
  redis.call('XADD', events, 'MAXLEN', '~', ARGV[10], '*', 'f', out)
  redis.call('EXPIRE', events, ARGV[11])
  redis.call('EXPIRE', meta, ARGV[11])
end
local all = redis.call('HGETALL', members)
local bypod = {}
for i = 1, #all, 2 do
  local sid = all[i + 1]
  if sid ~= exclude then
    local info = redis.call('HMGET', 'rw:session:' .. sid, 'pod', 'state', 'role')
    if not info[1] then
      -- expired: left to the sweep, which announces it once
    elseif (not screens_only or info[3] == 'screen') and info[1] ~= me then
      if info[2] == 'live' and info[1] ~= '' then
        bypod[info[1]] = bypod[info[1]] or {{}, {}}
        table.insert(bypod[info[1]][1], sid)
        table.insert(bypod[info[1]][2], next_n(sid, nil))
      else
        keep(sid, out, keep_max, grace, nil)
      end
    end
  end
end
for pod, batch in pairs(bypod) do
  local msg = 'r\\31' .. now .. '\\31' .. table.concat(batch[1], ',') .. '\\31' ..
    table.concat(batch[2], ',') .. '\\31' .. out
  if redis.call('PUBLISH', 'rw:inbox:' .. pod, msg) == 0 then
    for i, sid in ipairs(batch[1]) do keep(sid, out, keep_max, grace, batch[2][i]) end
  else
    for i, sid in ipairs(batch[1]) do routed(sid, batch[2][i], out, grace) end
  end
end
return out
"""
)

# Refresh the TTL of this pod's live sessions (ARGV: ttl, then session ids): a few calls
# per heartbeat, where a command per session cost a pod with thousands of them a stall.
_REFRESH = """
for i = 2, #ARGV do redis.call('EXPIRE', 'rw:session:' .. ARGV[i], ARGV[1]) end
return #ARGV - 1
"""

REFRESH_CHUNK = 500  # sessions per refresh call: about a millisecond of Redis each

_SWEEP = """
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #all, 2 do
  local skey = 'rw:session:' .. all[i + 1]
  if redis.call('EXISTS', skey) == 0 then
    -- HDEL decides which sweeping pod announces it: only one removes it
    if redis.call('HDEL', KEYS[1], all[i]) == 1 then
      -- its grace period is over: what was kept for it is freed now, not at its TTL
      redis.call('DEL', skey .. ':box', skey .. ':recent', skey .. ':routed')
      table.insert(gone, all[i])
      table.insert(gone, redis.call('HGET', KEYS[2], all[i]) or 'participant')
      redis.call('HDEL', KEYS[2], all[i])
    end
  end
end
return gone
"""

# Re-register this pod's sessions after the registry lost them (Redis restart) or turned
# them to grace while this pod was thought dead (its heartbeat stalled past the TTL).
# ARGV: me, live TTL, grace TTL, then per session: sid, room, peer, role, live ("1"/"0"),
# seq, rn. Returns the ids of sessions that live on another pod now (they resumed there):
# those are not restored.
_RESTORE = """
local me, live_ttl, grace_ttl = ARGV[1], ARGV[2], ARGV[3]
local moved = {}
for i = 4, #ARGV, 7 do
  local sid, room, peer, live = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 4] == '1'
  local skey = 'rw:session:' .. sid
  local owner = redis.call('HGET', skey, 'pod')
  if owner and owner ~= '' and owner ~= me then
    table.insert(moved, sid)
  else
    redis.call('HSET', skey, 'pod', me, 'room', room, 'peer', peer, 'role', ARGV[i + 3],
      'state', live and 'live' or 'grace', 'seq', ARGV[i + 5])
    -- numbering goes on from what the registry still has, else from the last delivered
    redis.call('HSETNX', skey, 'n', ARGV[i + 6])
    redis.call('EXPIRE', skey, live and live_ttl or grace_ttl)
    redis.call('SADD', 'rw:pod:' .. me .. ':sessions', sid)
    redis.call('HSETNX', 'rw:room:' .. room .. ':members', peer, sid)
  end
end
return moved
"""

RESTORE_CHUNK = 200  # sessions per restore call

_TAKE = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
redis.call('DEL', KEYS[1])
return {entries, redis.call('LRANGE', KEYS[2], 0, -1)}
"""

_MEMBERS = """
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local role = redis.call('HGET', 'rw:session:' .. all[i + 1], 'role')
  if role then
    table.insert(out, all[i])
    table.insert(out, role)
  end
end
return out
"""


def _peers(flat: list[str]) -> list[PeerInfo]:
    """``[peer, role, peer, role, ...]`` from a script, as PeerInfo."""
    return [PeerInfo(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _call_back(done: RelayDone, result: RelayResult) -> None:
    try:
        done(result)
    except Exception:  # one caller's bug must not lose the rest of the batch
        log.exception("relay callback failed")


def _ignore(reply: Any) -> None:
    return None


class RedisRegistry(Registry):
    def __init__(
        self,
        url: str,
        pod_id: str,
        *,
        resume_secret: str | None = None,
        keep_max: int = 256,
        grace_s: float = 30.0,
    ) -> None:
        self.pod_id = pod_id
        self.url = url
        self.keep_max = keep_max
        self.grace_s = max(1, round(grace_s))
        # A live session outlives its pod's heartbeat TTL by a grace period: when the pod
        # dies, the session is still there for whoever notices to turn it to grace.
        self.live_ttl = keys.POD_TTL_S + self.grace_s
        self._resume_secret = resume_secret
        # One retry on a fresh connection: after a Redis restart every pooled
        # connection is dead, and the commands sent this way are idempotent.
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=3,
            socket_connect_timeout=2,
            health_check_interval=5,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._join = self.redis.register_script(_JOIN)
        self._resume = self.redis.register_script(_RESUME)
        self._detach = self.redis.register_script(_DETACH)
        self._remove = self.redis.register_script(_REMOVE)
        self._relay_batch = self.redis.register_script(_RELAY_BATCH)
        self._keep = self.redis.register_script(_KEEP)
        self._fan_out = self.redis.register_script(_FAN_OUT)
        self._members = self.redis.register_script(_MEMBERS)
        self._sweep = self.redis.register_script(_SWEEP)
        self._take = self.redis.register_script(_TAKE)
        self._refresh = self.redis.register_script(_REFRESH)
        self._restore_script = self.redis.register_script(_RESTORE)
        self._reap = self.redis.register_script(script("reap_pod"))
        # Loaded on every (re)connect of the pipelined connection.
        self._scripts = [
            self._join, self._resume, self._detach, self._remove, self._relay_batch,
            self._keep, self._fan_out, self._members, self._sweep, self._take,
            self._refresh, self._restore_script, self._reap,
        ]  # fmt: skip
        # Not written yet, in call order: script calls, and runs of relays that go out
        # as one script.
        self._pending: list[_Call | list[_RelayCall]] = []
        self._queued = 0  # calls and relays submitted and not answered yet
        self._write_soon = False
        self._pipe: RespPipe | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._caught_up: list[asyncio.Future[None]] = []
        self._listener: asyncio.Task[None] | None = None
        # Inbox messages waiting behind one whose handling had to wait (None: none is).
        self._inbox_backlog: deque[dict[str, Any]] | None = None
        self._inbox_worker: asyncio.Task[None] | None = None
        self._on_inbox: InboxHandler | None = None
        self._registered = False
        self._subscribed = asyncio.Event()
        self._ever_subscribed = False
        self._tls = url.startswith("rediss://")

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self, on_inbox: InboxHandler) -> None:
        self._on_inbox = on_inbox
        # Nothing waits for Redis here: the inbox subscribes in the background, and the
        # hub's heartbeat loop reports the registry reachable once it is.
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        for task in (self._listener, self._connecting, self._inbox_worker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.redis.aclose()

    async def _listen(self) -> None:
        """Read this pod's inbox, in order; resubscribe after a lost connection.

        The first attempt is immediate: while nobody listens, frames for this pod's
        sessions go to their bounded boxes, so every millisecond of the gap counts.
        Attempts that fail back off to half a second.
        """
        warned = False
        while True:
            try:
                await self._read_inbox()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError, hiredis.ProtocolError) as e:
                was_subscribed = self._subscribed.is_set()
                self._subscribed.clear()
                if was_subscribed or not warned:  # once per outage, not per attempt
                    log.warning("inbox subscription lost (%s); resubscribing", e)
                warned = not was_subscribed
                if not was_subscribed:
                    await asyncio.sleep(0.5)

    async def _read_inbox(self) -> None:
        """One subscription on its own connection, parsed with hiredis.

        The inbox is the hottest read path of a pod: messages are decoded and handed to
        the hub inside the connection's read callback, where redis-py's PubSub spends
        tens of microseconds per message.
        """
        pipe = await open_pipe(self._redis_opts(), self._tls, f"rw-inbox:{self.pod_id}")
        try:
            # Every reply on a subscribed connection is a push, the confirmation too: the
            # handler is in place before SUBSCRIBE, so a message that arrives in the same
            # read as the confirmation is not lost.
            confirmed = asyncio.get_running_loop().create_future()

            def push(reply: Any) -> None:
                if isinstance(reply, list) and reply and reply[0] == b"subscribe":
                    if not confirmed.done():
                        if self._ever_subscribed:
                            # Frames routed while nobody listened were kept: recover them
                            # before any message that comes after this confirmation.
                            self._inbox_dispatch({"k": "resubscribed"})
                        self._ever_subscribed = True
                        confirmed.set_result(None)
                elif isinstance(reply, hiredis.ReplyError) and not confirmed.done():
                    confirmed.set_exception(ConnectionError(f"redis refused: {reply}"))
                else:
                    self._inbox_push(reply)

            pipe.on_push = push
            pipe.send([("SUBSCRIBE", keys.inbox(self.pod_id))], [])
            await asyncio.wait_for(confirmed, 5)
            self._subscribed.set()
            pings, seen = 0, pipe.last_data
            while not pipe.lost.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pipe.lost), INBOX_PING_S)
                if pipe.lost.done():
                    break
                if pipe.last_data != seen:  # messages, or the answer to our PING
                    pings, seen = 0, pipe.last_data
                    continue
                # Silent for a whole period: PING, and give up after two unanswered.
                pings += 1
                if pings > 2:
                    raise ConnectionError("no answer on the inbox connection")
                pipe.send([("PING",)], [])
            raise ConnectionError("redis closed the inbox connection")
        finally:
            pipe.close()

    def _inbox_push(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            payload = decode_inbox(reply[2])
            if payload is not None:
                self._inbox_dispatch(payload)

    def _inbox_dispatch(self, payload: dict[str, Any]) -> None:
        """Hand a message to the hub in order: at once, unless an earlier one is still
        being handled (the hub returned an awaitable for it); then behind it."""
        assert self._on_inbox is not None
        if self._inbox_backlog is not None:
            self._inbox_backlog.append(payload)
            return
        step = self._on_inbox(payload)
        if step is not None:
            self._inbox_backlog = deque()
            self._inbox_worker = asyncio.get_running_loop().create_task(self._inbox_drain(step))

    async def _inbox_drain(self, step: Awaitable[None]) -> None:
        assert self._on_inbox is not None and self._inbox_backlog is not None
        backlog = self._inbox_backlog
        try:
            while True:
                try:
                    await step
                except Exception:
                    log.exception("inbox message handling failed")
                while backlog:
                    nxt = self._on_inbox(backlog.popleft())
                    if nxt is not None:
                        step = nxt
                        break
                else:
                    return
        finally:
            self._inbox_backlog = None
            self._inbox_worker = None

    def _redis_opts(self) -> dict[str, Any]:
        return dict(self.redis.connection_pool.connection_kwargs)

    async def resume_secret(self) -> str:
        if self._resume_secret is None:
            try:
                await self.redis.set("rw:resume-secret", secrets.token_hex(32), nx=True)
                self._resume_secret = _s(await self.redis.get("rw:resume-secret"))
            except RedisError as e:
                raise RegistryError(str(e)) from e
        return self._resume_secret

    # ---- sessions ---------------------------------------------------------------------

    async def _call(self, script: Any, keys_: list[str], args: list[Any]) -> Any:
        """Run a script. Scripts and relays go out in call order on one pipelined
        connection: everything submitted in one turn of the event loop is one write."""
        return await self._submit(script, keys_, args)

    def _submit(self, script: Any, keys_: list[str], args: list[Any]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys_, args, fut))
        self._queued += 1
        self._schedule_write()
        return fut

    def relay(self, room: str, peer: str, text: str, done: RelayDone) -> None:
        last = self._pending[-1] if self._pending else None
        if isinstance(last, list) and len(last) < RELAY_GROUP_MAX:
            last.append((room, peer, text, done))
        else:
            self._pending.append([(room, peer, text, done)])
        self._queued += 1
        self._schedule_write()

    def backlog(self) -> int:
        return self._queued

    def caught_up(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._queued == 0:
            fut.set_result(None)
        else:
            self._caught_up.append(fut)  # done at the next answer
        return fut

    def _schedule_write(self) -> None:
        if not self._write_soon:
            self._write_soon = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._write_soon = False
        if not self._pending:
            return
        pipe = self._pipe
        if pipe is None or not pipe.is_open:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        batch, self._pending = self._pending, []
        pipe.send(
            [self._command(entry) for entry in batch],
            [partial(self._answered, entry, True) for entry in batch],
        )
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(
                BATCH_TIMEOUT_S, self._check_stalled
            )

    async def _connect(self) -> None:
        try:
            pipe = await open_pipe(self._redis_opts(), self._tls, f"rw-scripts:{self.pod_id}")
            # Load the scripts first: after a Redis restart no EVALSHA meets NOSCRIPT.
            replies = await pipe.call([("SCRIPT", "LOAD", sc.script) for sc in self._scripts])
            if errors := [r for r in replies if isinstance(r, hiredis.ReplyError)]:
                pipe.close()
                raise ConnectionError(f"redis refused the scripts: {errors[0]}")
            self._pipe = pipe
        except (OSError, TimeoutError, hiredis.ProtocolError) as e:
            batch, self._pending = self._pending, []
            for entry in batch:
                self._settle(entry, RegistryError(f"redis: {e}"))
        finally:
            self._connecting = None
        self._write()

    def _check_stalled(self) -> None:
        """A reply overdue by BATCH_TIMEOUT_S: the connection is dead or Redis is stuck.
        Abort it; everything in flight then fails, and the next write reconnects."""
        self._watchdog = None
        pipe = self._pipe
        if pipe is None or not pipe.waiting:
            return
        if pipe.oldest_wait() >= BATCH_TIMEOUT_S:
            log.warning("redis did not answer in %.0f s; reconnecting", BATCH_TIMEOUT_S)
            pipe.abort()
            return
        self._watchdog = asyncio.get_running_loop().call_later(
            BATCH_TIMEOUT_S - pipe.oldest_wait(), self._check_stalled
        )

    def _command(self, entry: _Call | list[_RelayCall]) -> tuple[Any, ...]:
        if isinstance(entry, list):
            args: list[Any] = [self.pod_id, repr(time.time()), self.keep_max, self.live_ttl]
            for room, peer, text, _ in entry:
                args += (room, peer, text)
            return ("EVALSHA", self._relay_batch.sha, 0, *args)
        script, keys_, args, _ = entry
        if script is None:  # a plain command
            return tuple(args)
        return ("EVALSHA", script.sha, len(keys_), *keys_, *args)

    def _answered(self, entry: _Call | list[_RelayCall], may_retry: bool, reply: Any) -> None:
        if (
            may_retry
            and isinstance(reply, hiredis.ReplyError)
            and str(reply).startswith("NOSCRIPT")
            and self._pipe is not None
        ):
            # The scripts were flushed behind our back: load them and run this again.
            self._pipe.send(
                [*(("SCRIPT", "LOAD", sc.script) for sc in self._scripts), self._command(entry)],
                [*(_ignore for _ in self._scripts), partial(self._answered, entry, False)],
            )
            return
        if isinstance(reply, (ConnectionError, hiredis.ReplyError)):
            self._settle(entry, RegistryError(f"redis: {reply}"))
        else:
            self._settle(entry, reply)

    def _settle(self, entry: _Call | list[_RelayCall], reply: Any) -> None:
        failed = isinstance(reply, RegistryError)
        if isinstance(entry, list):
            self._queued -= len(entry)
            if failed or not isinstance(reply, list) or len(reply) != len(entry):
                for *_, done in entry:
                    _call_back(done, RelayResult.FAILED)
            else:
                for (*_, done), code in zip(entry, reply, strict=True):
                    _call_back(done, RelayResult(code))
        else:
            self._queued -= 1
            fut = entry[3]
            if not fut.done():
                if failed:
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        waiters, self._caught_up = self._caught_up, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def join(self, sid: str, room: str, peer: str, role: Role, max_peers: int) -> JoinOutcome:
        r = await self._call(
            self._join,
            [
                keys.room_members(room),
                keys.session(sid),
                keys.pod_sessions(self.pod_id),
                keys.room_meta(room),
                keys.room_roles(room),
            ],
            [
                sid,
                peer,
                role.value,
                room,
                self.pod_id,
                max_peers,
                self.live_ttl,
                secrets.token_hex(4),
                ROOM_TTL_S,
            ],
        )
        if int(r[0]) < 0:
            raise RoomFull(f"room {room} has {max_peers} peers")
        peers = _peers([_s(x) for x in r[5]])
        old_sid, old_pod = _s(r[1]), _s(r[2])
        return JoinOutcome(peers, _s(r[3]), int(r[4]), old_sid or None, old_pod or None)

    async def members(self, room: str) -> list[PeerInfo]:
        return _peers(
            [_s(x) for x in await self._call(self._members, [keys.room_members(room)], [])]
        )

    async def resume(
        self, sid: str, room: str, peer: str, role: Role, last_rn: int | None = None
    ) -> ResumeOutcome | None:
        r = await self._call(
            self._resume,
            [
                keys.session(sid),
                keys.session_box(sid),
                keys.pod_sessions(self.pod_id),
                keys.room_members(room),
                keys.session_recent(sid),
                keys.session_routed(sid),
            ],
            [sid, self.pod_id, self.live_ttl, peer, -1 if last_rn is None else last_rn],
        )
        if not r:
            return None
        entries: list[tuple[int, str]] = []
        for _entry_id, fields in r[3]:
            f = {_s(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            entries.append((int(f["n"]), _s(f["f"])))
        entries.sort(key=lambda e: e[0])
        recent = []
        for item in r[4]:
            seq, _, text = _s(item).partition(":")
            recent.append((int(seq), text))
        # Published to the old pod but maybe never delivered: past the client's last_rn.
        seen = {n for n, _ in entries}
        for item in r[5]:
            n_text, _, text = _s(item).partition(":")
            n = int(n_text)
            if last_rn is not None and n > last_rn and n not in seen:
                entries.append((n, text))
                seen.add(n)
        entries.sort(key=lambda e: e[0])
        return ResumeOutcome(int(r[1]), entries, _s(r[0]), int(r[2]), recent)

    async def take_kept(self, sid: str, after_rn: int) -> list[tuple[int, str]]:
        box, routed = await self._call(
            self._take, [keys.session_box(sid), keys.session_routed(sid)], []
        )
        out: dict[int, str] = {}
        for _entry_id, fields in box:
            f = {_s(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            out[int(f["n"])] = _s(f["f"])
        for item in routed:
            n_text, _, text = _s(item).partition(":")
            if int(n_text) > after_rn:
                out.setdefault(int(n_text), text)
        return sorted(out.items())

    async def detach(
        self, sid: str, seq: int, grace_s: float, recent: list[tuple[int, str]]
    ) -> None:
        await self._call(
            self._detach,
            [keys.session(sid), keys.session_recent(sid)],
            [self.pod_id, seq, self.grace_s, *(f"{q}:{t}" for q, t in recent)],
        )

    async def remove(self, sid: str, room: str, peer: str) -> bool:
        r = await self._call(
            self._remove,
            [
                keys.session(sid),
                keys.session_box(sid),
                keys.room_members(room),
                keys.pod_sessions(self.pod_id),
                keys.room_roles(room),
            ],
            [sid, peer, self.pod_id],
        )
        return bool(r)

    async def keep(self, sid: str, text: str, n: int | None = None) -> bool:
        r = await self._call(
            self._keep,
            [keys.session(sid)],
            [
                sid,
                text,
                self.pod_id,
                self.keep_max,
                self.live_ttl,
                repr(time.time()),
                "" if n is None else n,
            ],
        )
        return int(r) == 3

    async def fan_out(
        self, room: str, text: str, *, screens_only: bool, exclude_sid: str, replay: bool
    ) -> str:
        r = await self._call(
            self._fan_out,
            [keys.room_members(room), keys.room_meta(room), keys.room_events(room)],
            [
                text,
                "1" if screens_only else "0",
                exclude_sid,
                "1" if replay else "0",
                self.pod_id,
                repr(time.time()),
                self.keep_max,
                self.live_ttl,
                secrets.token_hex(4),
                ROOM_STREAM_MAXLEN,
                ROOM_TTL_S,
            ],
        )
        return _s(r)

    async def sweep(self, room: str) -> list[PeerInfo]:
        flat = [
            _s(x)
            for x in await self._call(
                self._sweep, [keys.room_members(room), keys.room_roles(room)], []
            )
        ]
        return _peers(flat)

    async def notify_takeover(self, old_pod: str, sid: str, replaced: bool) -> int:
        return await self._publish(old_pod, inbox.takeover(sid, self.pod_id, replaced))

    async def takeover_done(self, new_pod: str, sid: str, recent: list[tuple[int, str]]) -> None:
        await self._publish(new_pod, inbox.takeover_done(sid, recent))

    async def _publish(self, pod_id: str, msg: str) -> int:
        try:
            return int(await self.redis.publish(keys.inbox(pod_id), msg))
        except RedisError as e:
            raise RegistryError(str(e)) from e

    # ---- pod ------------------------------------------------------------------------

    async def heartbeat(self, stats: PodStats, sessions: list[SessionRecord]) -> list[str]:
        with contextlib.suppress(TimeoutError):  # at start-up, the first subscription
            await asyncio.wait_for(self._subscribed.wait(), 1.0)
        if not self._subscribed.is_set():
            raise RegistryError("inbox not subscribed")
        now = time.time()
        pod = keys.pod(self.pod_id)
        [existed] = await self._commands([("EXISTS", pod)])
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
            self._inbox_dispatch({"k": "resubscribed"})
        commands: list[tuple[Any, ...]] = [
            ("HSET", pod, "url", stats.url, "connections", stats.connections,
             "sessions", stats.sessions, "rooms", stats.rooms,
             "draining", int(stats.draining), "cpu", stats.cpu, "ts", now),
            ("EXPIRE", pod, keys.POD_TTL_S),
            ("ZADD", keys.PODS, now, self.pod_id),
        ]  # fmt: skip
        live = [rec.sid for rec in sessions if rec.live]
        # before the refresh: a session removed meanwhile must not linger
        commands += [
            ("HSET", keys.session(rec.sid), "busy", rec.busy)
            for rec in sessions
            if rec.live and rec.busy is not None
        ]
        commands.append(("EXPIRE", keys.pod_sessions(self.pod_id), keys.POD_TTL_S * 6))
        if self._resume_secret is not None:
            commands.append(("SET", "rw:resume-secret", self._resume_secret, "NX"))
        await self._commands(commands)
        for i in range(0, len(live), REFRESH_CHUNK):
            await self._call(self._refresh, [], [self.live_ttl, *live[i : i + REFRESH_CHUNK]])
        self._registered = True
        return moved

    async def reap_dead_pods(self) -> dict[str, int]:
        now = time.time()
        try:
            [stale] = await self._commands(
                [("ZRANGEBYSCORE", keys.PODS, "-inf", now - keys.POD_TTL_S)]
            )
        except RegistryError:
            return {}
        out: dict[str, int] = {}
        for raw in stale:
            pod = _s(raw)
            if pod == self.pod_id:
                continue  # this pod is alive: its next heartbeat restores what it has
            n = int(
                await self._call(
                    self._reap,
                    [keys.pod(pod), keys.PODS, keys.pod_sessions(pod)],
                    [pod, self.grace_s, repr(now), "0"],
                )
            )
            if n >= 0:
                out[pod] = n
        return out

    async def _commands(self, commands: list[tuple[Any, ...]], chunk: int = 500) -> list[Any]:
        """Plain commands on the pipelined connection, in order, ``chunk`` per loop turn."""
        out: list[Any] = []
        for i in range(0, len(commands), chunk):
            replies = await asyncio.gather(
                *(self._submit(None, [], list(c)) for c in commands[i : i + chunk]),
                return_exceptions=True,
            )
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            out += replies
        return out

    async def _restore(self, sessions: list[SessionRecord]) -> list[str]:
        moved: list[str] = []
        for i in range(0, len(sessions), RESTORE_CHUNK):
            args: list[Any] = [self.pod_id, self.live_ttl, self.grace_s]
            for rec in sessions[i : i + RESTORE_CHUNK]:
                args += (rec.sid, rec.room, rec.peer, rec.role, int(rec.live), rec.seq, rec.rn)
            moved += [_s(x) for x in await self._call(self._restore_script, [], args)]
        return moved

    async def deregister(self) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(keys.pod(self.pod_id))
            pipe.zrem(keys.PODS, self.pod_id)
            await pipe.execute()
        except RedisError as e:
            raise RegistryError(str(e)) from e
