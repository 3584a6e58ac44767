"""The signaling protocol core: sans-I/O. Text frames and time in, intents out.

This module only manipulates data. It imports no aiohttp, redis or nacos (checked by
import-linter), never raises into its caller for bad input, and is tested by feeding it
frames and checking what it asks for. The server adapter carries the intents out
(registry look-ups, delivery, closing) and reports results back as frames built here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Final, NamedTuple, TypeAlias

import orjson

from . import tokens


class Role(StrEnum):
    PARTICIPANT = "participant"
    SCREEN = "screen"
    CONTROLLER = "controller"
    EDGE = "edge"


class ErrorCode(StrEnum):
    BAD_JSON = "bad-json"
    BAD_FRAME = "bad-frame"
    UNKNOWN_TYPE = "unknown-type"
    NOT_JOINED = "not-joined"
    ALREADY_JOINED = "already-joined"
    UNKNOWN_PEER = "unknown-peer"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate-limited"
    ROOM_FULL = "room-full"
    UNAVAILABLE = "unavailable"  # the registry did not answer: resend with the same id
    POD_FULL = "pod-full"  # this pod holds its most rooms (--max-rooms): try another


class CloseCode(IntEnum):
    """WebSocket close codes; 4000-4999 are Roomwire's own (see docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    REPLACED = 4001  # the same peer joined again on another connection
    SLOW_CONSUMER = 4002  # outbound queue full: the client did not read fast enough
    ABUSE = 4003  # repeated protocol violations


RELAY_TYPES: Final = frozenset({"offer", "answer", "candidate"})
ROOM_EVENT_TYPES: Final = frozenset({"broadcast", "control"})
CLIENT_TYPES: Final = RELAY_TYPES | ROOM_EVENT_TYPES | {"join", "leave", "ping"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_ID_LEN: Final = 128

Frame: TypeAlias = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """Every bound of a connection; each is a setting of the server."""

    max_frame_bytes: int = 64 * 1024
    outbound_queue: int = 256
    rate_per_s: float = 50.0
    rate_burst: int = 100
    abuse_errors: int = 50  # errors within ABUSE_WINDOW_S before the connection is closed
    max_peers_per_room: int = 64
    grace_s: float = 30.0
    grace_keep: int = 256
    drain_s: float = 20.0


ABUSE_WINDOW_S: Final = 10.0


# ---- intents the adapter carries out -------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send this frame on the connection itself."""

    frame: Frame


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class Join:
    room: str
    peer: str
    role: Role
    resume: str | None
    last_seq: int | None
    last_rn: int | None
    id: str | int | None
    # False when auth is on and the join came with a resume token but no (valid) join
    # token: the resume token is the credential within the grace period, and a fresh
    # session needs a join token.
    authorized: bool = True


@dataclass(frozen=True)
class Relay:
    """Relay ``frame`` (already stamped with ``from``) to one peer of the room; ``text``
    is the frame encoded, as it goes on the wire."""

    to: str
    frame: Frame
    id: str | int | None
    text: str
    resend: bool = False  # the client says it may have sent this frame before


@dataclass(frozen=True)
class RoomEvent:
    """Replayable event for the room: to every other peer, or to screens (control)."""

    frame: Frame
    screens_only: bool
    id: str | int | None
    text: str
    resend: bool = False


@dataclass(frozen=True)
class Leave:
    pass


Intent: TypeAlias = Send | Close | Join | Relay | RoomEvent | Leave


# ---- frames the server sends (docs/protocol.md, "Server to client") -----------------
# One builder per frame the server makes itself; relayed frames are the client's, stamped.


class Handover(NamedTuple):
    """What a resume handed over: frames kept for the session and those dropped."""

    kept: int
    dropped: int


def joined(
    *,
    room: str,
    peer: str,
    role: Role,
    session: str,
    resume: str,
    peers: Iterable[tuple[str, str]],
    epoch: str,
    offset: int,
    pod: str,
    handover: Handover | None = None,
    frame_id: str | int | None = None,
) -> Frame:
    """The answer to ``join``: ``peers`` are (peer, role) pairs; ``handover`` is set on a
    resume (then ``resumed`` is true and ``kept`` and ``dropped`` are sent)."""
    out: Frame = {
        "type": "joined",
        "room": room,
        "peer": peer,
        "role": role.value,
        "session": session,
        "resume": resume,
        "peers": [{"peer": p, "role": r} for p, r in peers],
        "epoch": epoch,
        "offset": offset,
        "pod": pod,
        "resumed": handover is not None,
    }
    if handover is not None:
        out["kept"] = handover.kept
        out["dropped"] = handover.dropped
    if frame_id is not None:
        out["id"] = frame_id
    return out


def peer_joined(peer: str, role: str) -> Frame:
    return {"type": "peer-joined", "peer": peer, "role": role}


def peer_left(peer: str, role: str) -> Frame:
    return {"type": "peer-left", "peer": peer, "role": role}


def migrate(url: str, resume: str) -> Frame:
    """Reconnect to ``url`` and resume with this token (an operator rebalance)."""
    return {"type": "migrate", "url": url, "resume": resume}


def reconnect(after_ms: int, resume: str) -> Frame:
    """The server closes (1012): reconnect through the Service after the delay, resume."""
    return {"type": "reconnect", "after_ms": after_ms, "resume": resume}


def pong() -> Frame:
    return {"type": "pong"}


def error(code: ErrorCode, message: str, frame_id: str | int | None = None) -> Frame:
    out: Frame = {"type": "error", "code": str(code), "message": message}
    if frame_id is not None:
        out["id"] = frame_id
    return out


def ack(frame_id: str | int) -> Frame:
    return {"type": "ack", "id": frame_id}


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    last: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.last = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Bad(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _opt_str(frame: Frame, key: str, pattern: re.Pattern[str] | None = None) -> str | None:
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise _Bad(ErrorCode.BAD_FRAME, f"field '{key}' must be a valid string")
    return value


def _req_str(frame: Frame, key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = _opt_str(frame, key, pattern)
    if value is None:
        raise _Bad(ErrorCode.BAD_FRAME, f"field '{key}' is missing")
    return value


def _opt_count(frame: Frame, key: str) -> int | None:
    value = frame.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _Bad(ErrorCode.BAD_FRAME, f"field '{key}' must be a non-negative integer")
    return value


def _frame_id(frame: Frame) -> str | int | None:
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(ErrorCode.BAD_FRAME, "field 'id' must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LEN:
        raise _Bad(ErrorCode.BAD_FRAME, f"field 'id' is longer than {MAX_ID_LEN}")
    return value


@dataclass
class JoinedAs:
    room: str
    peer: str
    role: Role


@dataclass(eq=False)  # one per socket: compared and hashed by identity
class Connection:
    """One client connection's protocol state: frames in, intents out.

    ``auth`` set means every join needs a matching HS256 JWT that satisfies it.
    """

    limits: Limits = field(default_factory=Limits)
    auth: tokens.JoinPolicy | None = None
    joined: JoinedAs | None = None
    joining: bool = False
    closed: bool = False
    _bucket: TokenBucket = field(init=False)
    _errors: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.limits.rate_per_s, self.limits.rate_burst)

    def retune(self, limits: Limits) -> None:
        """New limits while open (the config center): the rate bucket keeps what it
        holds, capped at the new burst."""
        self.limits = limits
        self._bucket.rate, self._bucket.burst = limits.rate_per_s, limits.rate_burst
        self._bucket.tokens = min(self._bucket.tokens, float(limits.rate_burst))

    # -- input ------------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> list[Intent]:
        if self.closed:
            return []
        if not self._bucket.take(now):
            return self._fail(ErrorCode.RATE_LIMITED, "too many frames; slow down", None, now)
        try:
            # orjson: several times faster than the standard library both ways;
            # NaN, Infinity and lone surrogates are refused (they are not JSON), and
            # integers beyond 64 bits become doubles, as they would in a browser.
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._fail(ErrorCode.BAD_JSON, "frame is not valid JSON", None, now)
        return self._decoded(frame, now)

    def receive_frame(self, frame: Any, now: float) -> list[Intent]:
        """A frame parsed already (an edge link carries device frames inside its own):
        the same checks and intents as ``receive_text``."""
        if self.closed:
            return []
        if not self._bucket.take(now):
            return self._fail(ErrorCode.RATE_LIMITED, "too many frames; slow down", None, now)
        return self._decoded(frame, now)

    def _decoded(self, frame: Any, now: float) -> list[Intent]:
        frame_id: str | int | None = None
        try:
            if not isinstance(frame, dict):
                raise _Bad(ErrorCode.BAD_FRAME, "frame must be a JSON object")
            frame_id = _frame_id(frame)
            kind = frame.get("type")
            if not isinstance(kind, str):
                raise _Bad(ErrorCode.BAD_FRAME, "field 'type' must be a string")
            if kind not in CLIENT_TYPES:
                raise _Bad(ErrorCode.UNKNOWN_TYPE, f"unknown frame type '{kind[:40]}'")
            return self._dispatch(kind, frame, frame_id, now)
        except _Bad as bad:
            return self._fail(bad.code, bad.message, frame_id, now)

    def receive_binary(self, now: float) -> list[Intent]:
        # Counted like any frame: a closed connection says nothing more, and a flood of
        # binary frames is rate-limited like one of text frames.
        if self.closed:
            return []
        if not self._bucket.take(now):
            return self._fail(ErrorCode.RATE_LIMITED, "too many frames; slow down", None, now)
        return self._fail(ErrorCode.BAD_FRAME, "binary frames are not accepted", None, now)

    # -- results the adapter reports back ---------------------------------------------

    def join_accepted(self, room: str, peer: str, role: Role) -> None:
        self.joining = False
        self.joined = JoinedAs(room, peer, role)

    def join_refused(self) -> None:
        self.joining = False

    # -- internals ----------------------------------------------------------------------

    def _fail(
        self, code: ErrorCode, message: str, frame_id: str | int | None, now: float
    ) -> list[Intent]:
        out: list[Intent] = [Send(error(code, message, frame_id))]
        if code == ErrorCode.UNAUTHORIZED:
            self.closed = True
            out.append(Close(CloseCode.POLICY, "unauthorized"))
            return out
        out += self.refused_later(now)
        return out

    def refused_later(self, now: float) -> list[Intent]:
        """Count an error toward the abuse limit: the core's own, and one the adapter
        answered later (``unknown-peer``, known only once the registry was asked).
        Returns the close when it is one too many."""
        if self.closed:
            return []
        self._errors = [t for t in self._errors if now - t < ABUSE_WINDOW_S]
        self._errors.append(now)
        if len(self._errors) > self.limits.abuse_errors:
            self.closed = True
            return [Close(CloseCode.ABUSE, "too many bad frames")]
        return []

    def _dispatch(
        self, kind: str, frame: Frame, frame_id: str | int | None, now: float
    ) -> list[Intent]:
        if kind == "ping":
            return [Send(pong())]
        if kind == "join":
            return self._join(frame, frame_id, now)
        if self.joined is None:
            raise _Bad(ErrorCode.NOT_JOINED, "send 'join' first")
        me = self.joined
        if kind == "leave":
            self.closed = True
            return [Leave(), Close(CloseCode.NORMAL, "left")]
        if "data" not in frame:
            raise _Bad(ErrorCode.BAD_FRAME, "field 'data' is missing")
        data = frame["data"]
        # A resend (docs/protocol.md, "What `unavailable` means"): matched by its id.
        resend = frame_id is not None and frame.get("resend") is True
        if kind in RELAY_TYPES:
            to = _req_str(frame, "to", _NAME)
            if not isinstance(data, dict):
                raise _Bad(ErrorCode.BAD_FRAME, "field 'data' must be an object")
            if to == me.peer:
                raise _Bad(ErrorCode.BAD_FRAME, "cannot relay to yourself")
            out: Frame = {"type": kind, "from": me.peer, "data": data}
            if frame_id is not None:
                out["id"] = frame_id
            return [Relay(to, out, frame_id, _encoded(out), resend)]
        if kind == "broadcast":
            topic = _req_str(frame, "topic", _TOPIC)
            out = {"type": "broadcast", "from": me.peer, "topic": topic, "data": data}
            if frame_id is not None:
                out["id"] = frame_id
            return [RoomEvent(out, False, frame_id, _encoded(out), resend)]
        # control
        target = _opt_str(frame, "to", _NAME)
        if me.role != Role.CONTROLLER:
            raise _Bad(ErrorCode.FORBIDDEN, "only a controller may send 'control'")
        out = {"type": "control", "from": me.peer, "data": data}
        if frame_id is not None:
            out["id"] = frame_id
        if target is not None:
            return [Relay(target, out, frame_id, _encoded(out), resend)]
        return [RoomEvent(out, True, frame_id, _encoded(out), resend)]

    def _join(self, frame: Frame, frame_id: str | int | None, now: float) -> list[Intent]:
        if self.joined is not None or self.joining:
            raise _Bad(ErrorCode.ALREADY_JOINED, "this connection has already joined")
        room = _req_str(frame, "room", _NAME)
        peer = _req_str(frame, "peer", _NAME)
        role_text = _req_str(frame, "role")
        try:
            role = Role(role_text)
        except ValueError:
            raise _Bad(ErrorCode.BAD_FRAME, f"unknown role '{role_text[:40]}'") from None
        resume = _opt_str(frame, "resume")
        last_seq = _opt_count(frame, "last_seq")
        last_rn = _opt_count(frame, "last_rn")
        authorized = True
        if self.auth is not None and resume is not None and "token" not in frame:
            # Resuming: the server-signed resume token is the credential (a join token
            # may have expired during the grace period); checked by the adapter.
            authorized = False
        elif self.auth is not None:
            token = frame.get("token")
            if not isinstance(token, str):
                raise _Bad(ErrorCode.UNAUTHORIZED, "a token is required")
            try:
                claims = tokens.decode_join(token, self.auth)
            except tokens.TokenError as e:
                raise _Bad(ErrorCode.UNAUTHORIZED, f"token refused: {e}") from None
            if (claims.get("room"), claims.get("peer"), claims.get("role")) != (
                room,
                peer,
                role.value,
            ):
                raise _Bad(ErrorCode.UNAUTHORIZED, "token does not match room, peer and role")
            # An edge token is good only for role edge, and role edge only with one.
            if (claims.get("use") == tokens.EDGE_USE) != (role == Role.EDGE):
                raise _Bad(
                    ErrorCode.UNAUTHORIZED,
                    "role 'edge' needs an edge token"
                    if role == Role.EDGE
                    else "an edge token is only for role 'edge'",
                )
        self.joining = True
        return [Join(room, peer, role, resume, last_seq, last_rn, frame_id, authorized)]


# ---- resume tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeClaim:
    session: str
    room: str
    peer: str
    role: Role


def make_resume_token(secret: str, claim: ResumeClaim) -> str:
    body = {
        "use": "resume",
        "sid": claim.session,
        "room": claim.room,
        "peer": claim.peer,
        "role": claim.role.value,
    }
    return tokens.encode(body, secret)


def read_resume_token(secret: str, token: str, room: str, peer: str) -> ResumeClaim:
    """The claim bound to this room and peer; raises tokens.TokenError."""
    claims = tokens.decode(token, secret)
    if claims.get("use") != "resume":
        raise tokens.TokenError("not a resume token")
    if claims.get("room") != room or claims.get("peer") != peer:
        raise tokens.TokenError("resume token is for another room or peer")
    sid, role = claims.get("sid"), claims.get("role")
    if not isinstance(sid, str) or role not in set(Role):
        raise tokens.TokenError("resume token lacks a session")
    return ResumeClaim(sid, room, peer, Role(role))


def _encoded(frame: Frame) -> str:
    try:
        return encode_frame(frame)
    except TypeError:  # parsed, but past the encoder's nesting limit (254 levels)
        raise _Bad(ErrorCode.BAD_FRAME, "field 'data' is nested too deeply") from None


def encode_frame(frame: Frame) -> str:
    """Compact JSON, non-ASCII as it is (like ``separators=(",", ":")``, ``ensure_ascii=False``)."""
    return orjson.dumps(frame).decode()
