"""A pod's one connection for Redis commands and scripts, pipelined, in call order.

Everything submitted in one turn of the event loop is one write; any number of writes
may be in flight, and each reply settles its caller inside the read callback
(``signaling.resp``). Relays are grouped: consecutive relays go out as one run of the
relay script, so Redis and the receiving pod handle one message per group instead of
one per frame. Scripts are loaded on every (re)connect, so that no EVALSHA meets
NOSCRIPT after a Redis restart; a reply overdue by ``BATCH_TIMEOUT_S`` aborts the
connection, failing what was in flight, and the next write reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from roomwire_contract import keys

from ..resp import RespPipe, TlsOptions, open_pipe
from .model import RegistryError, RelayDone, RelayResult

log = logging.getLogger("signaling.redis")

BATCH_TIMEOUT_S = 5.0
RELAY_GROUP_MAX = 256  # relays per script run: a bound on how long one run holds Redis


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from a ``redis://`` or ``rediss://`` URL (user name and password
    URL-encoded in it, as redis-py reads them); ``tls_options`` secure a ``rediss://``
    connection."""

    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    tls_options: TlsOptions = field(default_factory=TlsOptions)

    @classmethod
    def parse(cls, url: str, tls_options: TlsOptions | None = None) -> RedisAddress:
        u = urlsplit(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
        path = u.path.lstrip("/")
        return cls(
            host=u.hostname or "localhost",
            port=u.port or 6379,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password else None,
            db=int(path) if path else 0,
            tls=u.scheme == "rediss",
            tls_options=tls_options or TlsOptions(),
        )

    def opts(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "db": self.db,
        }

    async def connect(self, name: str) -> RespPipe:
        return await open_pipe(self.opts(), self.tls_options if self.tls else None, name)


# (script, keys, args, the caller's future); a plain command when script is None
_Call = tuple[LuaScript | None, list[str], list[Any], "asyncio.Future[Any]"]
# (room, peer, frame, the caller's callback)
_RelayCall = tuple[str, str, str, RelayDone, bool]  # room, peer, frame, done, resend


def _call_back(done: RelayDone, result: RelayResult) -> None:
    try:
        done(result)
    except Exception:  # one caller's bug must not lose the rest of the group
        log.exception("relay callback failed")


def _ignore(reply: Any) -> None:
    return None


def s(value: Any) -> str:
    """A reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLink:
    """The pipelined command connection shared by a pod's sessions, routing and
    presence roles."""

    def __init__(
        self,
        address: RedisAddress,
        pod_id: str,
        scripts: list[LuaScript],
        relay_script: LuaScript,
    ) -> None:
        self.address = address
        self.pod_id = pod_id
        self._scripts = [*scripts, relay_script]
        self._relay_script = relay_script
        # The relay script's leading ARGV, per run: set by the routing role.
        self.relay_args: Callable[[], list[Any]] = list
        # Not written yet, in call order: calls, and groups of relays.
        self._pending: list[_Call | list[_RelayCall]] = []
        self._queued = 0  # calls and relays submitted and not answered yet
        self._write_soon = False
        self._pipe: RespPipe | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._caught_up: list[asyncio.Future[None]] = []
        self._connected = False  # connected once at least
        self.lost_records_at: float | None = None  # monotonic time; see rebuilding()

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        if self._connecting is not None:
            self._connecting.cancel()

    # ---- submitting ------------------------------------------------------------------

    def submit(
        self, script: LuaScript | None, keys_: list[str], args: list[Any]
    ) -> asyncio.Future[Any]:
        """Run a script (or, with ``script`` None, the plain command ``args``)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys_, args, fut))
        self._queued += 1
        self._schedule_write()
        return fut

    async def call(self, script: LuaScript, keys_: list[str], args: list[Any]) -> Any:
        return await self.submit(script, keys_, args)

    def fire(self, *command: Any) -> None:
        """A plain command whose answer nobody waits for (it still goes in order)."""
        self.submit(None, [], list(command)).add_done_callback(_consume)

    async def commands(self, commands: list[tuple[Any, ...]], chunk: int = 500) -> list[Any]:
        """Plain commands, in order, ``chunk`` per loop turn; raises the first error."""
        out: list[Any] = []
        for i in range(0, len(commands), chunk):
            replies = await asyncio.gather(
                *(self.submit(None, [], list(c)) for c in commands[i : i + chunk]),
                return_exceptions=True,
            )
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            out += replies
        return out

    def relay(self, room: str, peer: str, text: str, done: RelayDone, resend: bool = False) -> None:
        last = self._pending[-1] if self._pending else None
        if isinstance(last, list) and len(last) < RELAY_GROUP_MAX:
            last.append((room, peer, text, done, resend))
        else:
            self._pending.append([(room, peer, text, done, resend)])
        self._queued += 1
        self._schedule_write()

    def backlog(self) -> int:
        return self._queued

    def waited(self) -> float:
        """Seconds the oldest unanswered command has waited (0 when none waits)."""
        pipe = self._pipe
        return pipe.oldest_wait() if pipe is not None and pipe.is_open else 0.0

    def idle(self) -> bool:
        return self._queued == 0

    def rebuilding(self) -> bool:
        """Whether Redis came back without this pod's records less than a heartbeat TTL
        ago: other pods may not have put their sessions back yet."""
        at = self.lost_records_at
        return at is not None and time.monotonic() - at < keys.POD_TTL_S

    def caught_up(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._queued == 0:
            fut.set_result(None)
        else:
            self._caught_up.append(fut)  # done at the next answer
        return fut

    # ---- writing ---------------------------------------------------------------------

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
        pipe: RespPipe | None = None
        try:
            pipe = await self.address.connect(f"rw-scripts:{self.pod_id}")
            replies = await pipe.call(
                [*(("SCRIPT", "LOAD", sc.source) for sc in self._scripts),
                 ("EXISTS", keys.pod(self.pod_id))]
            )  # fmt: skip
            if errors := [r for r in replies if isinstance(r, hiredis.ReplyError)]:
                pipe.close()
                raise ConnectionError(f"redis refused the scripts: {errors[0]}")
            if self._connected and not replies[-1]:
                # A reconnect to a Redis without this pod's record: it restarted empty
                # (or this pod was thought dead). Every live pod puts its sessions back
                # within a heartbeat TTL; until then a peer not found may exist.
                self.lost_records_at = time.monotonic()
                log.warning(
                    "redis lost this pod's records: for %d s a relay to a peer it does "
                    "not know is answered unavailable, not unknown-peer",
                    keys.POD_TTL_S,
                )
            self._connected = True
            self._pipe = pipe
        except (OSError, TimeoutError, hiredis.ProtocolError) as e:
            if pipe is not None and pipe is not self._pipe:
                pipe.close()  # e.g. the scripts timed out: not left open behind us
            batch, self._pending = self._pending, []
            for entry in batch:
                self._settle(entry, RegistryError(f"redis: {e}"))
        finally:
            self._connecting = None
        self._write()

    def _check_stalled(self) -> None:
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
            keys_: list[str] = []
            args: list[Any] = self.relay_args()
            for room, peer, text, _, resend in entry:
                k = keys.session_keys(room, peer)
                keys_ += (k.hash, k.box, k.routed)
                args += (room, peer, text, "1" if resend else "")
            return ("EVALSHA", self._relay_script.sha, len(keys_), *keys_, *args)
        script, keys_, args, _ = entry
        if script is None:
            return tuple(args)
        return ("EVALSHA", script.sha, len(keys_), *keys_, *args)

    # ---- answers ---------------------------------------------------------------------

    def _answered(self, entry: _Call | list[_RelayCall], may_retry: bool, reply: Any) -> None:
        if (
            may_retry
            and isinstance(reply, hiredis.ReplyError)
            and str(reply).startswith("NOSCRIPT")
            and self._pipe is not None
        ):
            # The scripts were flushed behind our back: load them and run this again.
            self._pipe.send(
                [*(("SCRIPT", "LOAD", sc.source) for sc in self._scripts), self._command(entry)],
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
                for *_, done, _ in entry:
                    _call_back(done, RelayResult.FAILED)
            else:
                for (*_, done, _), code in zip(entry, reply, strict=True):
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


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and (e := fut.exception()) is not None:
        log.debug("unanswered command failed: %s", e)
