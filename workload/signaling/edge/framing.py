"""The edge link's framing: many devices of one room over one WebSocket. Pure: text in,
typed messages out, and one builder per frame; no I/O (checked by import-linter).

An edge joins the cloud like a peer (``join`` with role ``edge`` and its edge token) and
is answered ``joined``; from then on the connection carries these JSON text frames
(``docs/edge.md`` has the whole story):

edge -> cloud
  ``{"type":"attach","dev":D,"role":R[,"resume":T,"last_seq":S,"last_rn":N]}``
      make device D a session of the room (or resume its session with the cloud's
      resume token T, as a client's ``join`` with ``resume`` would)
  ``{"type":"dev","dev":D,"u":U,"frame":F}``
      device D sent frame F (any client frame but ``join``); U numbers D's frames
      going up, 1, 2, 3, ... across links, so that a resent frame is recognised
cloud -> edge
  ``{"type":"dev","dev":D,"frame":F}``  frame F for device D (stamped with the cloud
      session's ``seq``, like any frame a client receives)
  ``{"type":"attached","dev":D,"u":U}``  D is a session of the room again; the cloud
      has taken D's frames up to U (the edge resends those after U)
  ``{"type":"got","u":{D:U,...}}``  frames up to U of each D were taken
  ``{"type":"detached","dev":D,"code":C,"reason":X}``  the cloud let D's session go
      from this link (C as a close code: 4001 replaced, 1013 room full, ...)
  ``migrate``, ``reconnect`` as for a client, for the whole link (no resume token:
      each device resumes with its own)
both ways
  ``{"type":"batch","frames":[M,...]}``  several of the above in one WebSocket frame
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

ATTACH: Final = "attach"
DEV: Final = "dev"
ATTACHED: Final = "attached"
GOT: Final = "got"
DETACHED: Final = "detached"
BATCH: Final = "batch"
MIGRATE: Final = "migrate"
RECONNECT: Final = "reconnect"

# Room for a message's own members around a device frame: a batch is cut before this
# many bytes past the cap, and a link accepts frames this much larger than a device's.
ENVELOPE_BYTES: Final = 512


class FramingError(ValueError):
    """A link frame that is not one of this module's."""


@dataclass(frozen=True)
class Attach:
    dev: str
    role: str
    resume: str | None = None
    last_seq: int | None = None
    last_rn: int | None = None


@dataclass(frozen=True)
class DevFrame:
    """A device's frame: going up, ``u`` numbers it; coming down, ``u`` is None."""

    dev: str
    frame: dict[str, Any]
    u: int | None = None


@dataclass(frozen=True)
class Attached:
    dev: str
    u: int


@dataclass(frozen=True)
class Got:
    progress: dict[str, int]


@dataclass(frozen=True)
class Detached:
    dev: str
    code: int
    reason: str


@dataclass(frozen=True)
class Migrate:
    url: str


@dataclass(frozen=True)
class Reconnect:
    after_ms: int


Message: TypeAlias = Attach | DevFrame | Attached | Got | Detached | Migrate | Reconnect


# ---- builders: each returns the encoded message ----------------------------------------


def _s(value: str) -> str:
    return orjson.dumps(value).decode()


def attach(
    dev: str,
    role: str,
    resume: str | None = None,
    last_seq: int | None = None,
    last_rn: int | None = None,
) -> str:
    out: dict[str, Any] = {"type": ATTACH, "dev": dev, "role": role}
    if resume is not None:
        out["resume"] = resume
        out["last_seq"] = last_seq or 0
        out["last_rn"] = last_rn or 0
    return orjson.dumps(out).decode()


def dev_up(dev: str, u: int, frame_text: str) -> str:
    """Device ``dev``'s frame (already encoded) going up as its ``u``-th."""
    return f'{{"type":"dev","dev":{_s(dev)},"u":{u},"frame":{frame_text}}}'


def dev_down(dev_json: str, frame_text: str) -> str:
    """A frame (already encoded) for the device whose id is ``dev_json`` (encoded)."""
    return f'{{"type":"dev","dev":{dev_json},"frame":{frame_text}}}'


def attached(dev: str, u: int) -> str:
    return orjson.dumps({"type": ATTACHED, "dev": dev, "u": u}).decode()


def got(progress: dict[str, int]) -> str:
    return orjson.dumps({"type": GOT, "u": progress}).decode()


def detached(dev: str, code: int, reason: str) -> str:
    return orjson.dumps({"type": DETACHED, "dev": dev, "code": code, "reason": reason}).decode()


def migrate(url: str) -> str:
    return orjson.dumps({"type": MIGRATE, "url": url}).decode()


def reconnect(after_ms: int) -> str:
    return orjson.dumps({"type": RECONNECT, "after_ms": after_ms}).decode()


def batches(messages: Iterable[str], max_bytes: int) -> list[str]:
    """The messages as few WebSocket frames as fit ``max_bytes`` each (in order): one
    alone as it is, several as a ``batch``. A message larger than the cap goes alone."""
    out: list[str] = []
    group: list[str] = []
    size = 0
    for m in messages:
        n = len(m) + 1
        if group and size + n > max_bytes:
            out.append(_batch(group))
            group, size = [], 0
        group.append(m)
        size += n
    if group:
        out.append(_batch(group))
    return out


def _batch(group: list[str]) -> str:
    if len(group) == 1:
        return group[0]
    return '{"type":"batch","frames":[' + ",".join(group) + "]}"


# ---- parsing ----------------------------------------------------------------------------


def decode(text: str | bytes) -> list[Message]:
    """Every message in one WebSocket frame, in order; raises FramingError."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FramingError("not JSON") from None
    if isinstance(obj, dict) and obj.get("type") == BATCH:
        frames = obj.get("frames")
        if not isinstance(frames, list):
            raise FramingError("a batch needs 'frames'")
        return [parse(f) for f in frames]
    return [parse(obj)]


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise FramingError(f"'{key}' must be a string")
    return value


def _count(obj: dict[str, Any], key: str, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FramingError(f"'{key}' must be a non-negative integer")
    return value


def parse(obj: Any) -> Message:
    """One message (not a batch) from its decoded JSON; raises FramingError."""
    if not isinstance(obj, dict):
        raise FramingError("a message is a JSON object")
    kind = obj.get("type")
    if kind == DEV:
        frame = obj.get("frame")
        if not isinstance(frame, dict):
            raise FramingError("'frame' must be an object")
        return DevFrame(_str(obj, "dev"), frame, _count(obj, "u", optional=True))
    if kind == ATTACH:
        resume = obj.get("resume")
        if resume is not None and not isinstance(resume, str):
            raise FramingError("'resume' must be a string")
        return Attach(
            _str(obj, "dev"),
            _str(obj, "role"),
            resume,
            _count(obj, "last_seq", optional=True),
            _count(obj, "last_rn", optional=True),
        )
    if kind == GOT:
        progress = obj.get("u")
        if not isinstance(progress, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in progress.values()
        ):
            raise FramingError("'u' must map devices to integers")
        return Got({str(k): int(v) for k, v in progress.items()})
    if kind == ATTACHED:
        u = _count(obj, "u")
        assert u is not None
        return Attached(_str(obj, "dev"), u)
    if kind == DETACHED:
        code = _count(obj, "code")
        assert code is not None
        reason = obj.get("reason")
        return Detached(_str(obj, "dev"), code, reason if isinstance(reason, str) else "")
    if kind == MIGRATE:
        return Migrate(_str(obj, "url"))
    if kind == RECONNECT:
        after = _count(obj, "after_ms")
        assert after is not None
        return Reconnect(after)
    raise FramingError(f"unknown link message {str(kind)[:40]!r}")
