"""Redis key names: the only place any is written (a test checks Python and Lua alike).

Pure names and constants, no I/O. Pods and the operator build every key here; Lua
scripts receive every key they touch in ``KEYS[]``, built here too.

Hash tags (what Redis Cluster needs, and which keys a script may touch together):

- ``{<room>}``: everything about one room and the sessions of its peers. Join, resume,
  detach, leave, relay to a peer, room events and the sweep each touch one room's keys
  only, so each is one atomic script in one slot.
- ``{<pod>}``: a pod's heartbeat hash and its session set (claimed together when the
  pod dies).
- untagged, one key each: ``rw:pods``, ``rw:placement``, ``rw:resume-secret``,
  ``rw:operator:moves``, ``rw:edges``.

A few calls touch several rooms' sessions at once without needing atomicity across
them (a pod's heartbeat refreshing its sessions' TTLs, restoring them after a Redis
restart, turning a dead pod's sessions to grace): on Redis Cluster those are split per
slot (``by_room`` groups them).

Keys (``<x>`` is a value):

- ``rw:pods`` sorted set: pod id -> unix time of its last heartbeat.
- ``rw:pod:{<pod>}`` hash, expires ``POD_TTL_S`` after the last heartbeat: ``url`` (ws
  URL of the pod), ``connections`` (open WebSocket connections), ``sessions`` (live
  sessions), ``rooms`` (rooms with a local member), ``draining`` ("0"/"1"), ``cpu``
  (share of one core used since the previous heartbeat), ``ts``.
- ``rw:pod:{<pod>}:sessions`` set of ``session_member(room, peer)``: the sessions the
  pod holds: added to on join and resume, and kept in step by each heartbeat (what the
  pod held at the previous beat and no longer does is removed).
- ``rw:{<room>}:peer:<peer>`` hash, the peer's session: ``sid``, ``pod``, ``role``,
  ``state`` (``live`` or ``grace``), ``seq`` (last seq delivered, written on detach),
  ``n`` (the last cross-pod order number given), ``dropped`` (frames lost to the grace
  bound), ``busy`` (unix time until which the session is in an offer/answer exchange; 0
  when not; written with the pod's heartbeat, so the operator does not move it
  mid-negotiation). A peer has at most one session at a time: a fresh join replaces
  it; operations for a given session check ``sid``. A live session expires
  ``POD_TTL_S`` plus the grace period after its pod's last heartbeat, so that it is
  still there when a pod dies: whoever notices first (any pod, once the dead pod's
  heartbeat hash expired, or the operator) claims the pod's session set and turns its
  sessions to grace with no pod, their grace period counted from that last heartbeat
  (``lua/claim_pod.lua``, ``lua/grace_sessions.lua``). A session in grace expires when
  its grace period ends.
- ``rw:{<room>}:peer:<peer>:box`` stream: frames kept for a session that is not
  attached to a listening pod (grace, or its pod died). Bounded (``MAXLEN``); delivered
  on resume; held as long as a live session can last, and freed by the sweep that
  announces the session's end.
- ``rw:{<room>}:peer:<peer>:recent`` list of ``"<seq>:<frame>"``: the last frames sent
  on a connection that dropped, re-sent on resume past the client's ``last_seq``.
- ``rw:{<room>}:peer:<peer>:routed`` list of ``"<n>:<frame>"``, newest first: the last
  64 to 96 frames published to the session's pod. If that pod dies with them in flight,
  a resume re-sends those past the client's ``last_rn``; if only the pod's inbox
  connection was lost, the pod itself re-delivers those past the last ``n`` it
  delivered.
- ``rw:{<room>}:members`` hash: peer id -> session id. A peer is a member until the
  room hears ``peer-left``: the sweep removes members whose session expired, once.
- ``rw:{<room>}:roles`` hash: peer id -> role.
- ``rw:{<room>}:events`` stream of replayable room events; ``rw:{<room>}:meta`` hash
  with ``epoch`` and ``offset``.
- ``rw:placement`` hash: room -> home pod id (written only by the operator).
- ``rw:resume-secret`` string: the secret resume tokens are signed with, when no token
  secret is configured.
- ``rw:operator:moves`` hash: session id -> JSON of a move the operator ordered and has
  not seen done yet.
- ``rw:edges`` hash: ``<room>/<edge>`` -> JSON of the room edge's link as the pod that
  holds (or last held) it sees it (``roomwire_contract.edges``): written when the edge
  links and unlinks and with each of that pod's heartbeats; read by the operator for
  ``MeetingRoom.status.edge``.
- ``rw:inbox:<pod>`` pub/sub channel (not a key): everything addressed to one pod. A pod
  subscribes to its own inbox and to nothing else. Message shapes: ``inbox``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Final, NamedTuple

POD_TTL_S: Final = 10
HEARTBEAT_S: Final = 2.0
PODS: Final = "rw:pods"
PLACEMENT: Final = "rw:placement"
RESUME_SECRET: Final = "rw:resume-secret"
OPERATOR_MOVES: Final = "rw:operator:moves"
EDGES: Final = "rw:edges"

_SEP: Final = "\x1f"  # never in room or peer ids


def pod(pod_id: str) -> str:
    return f"rw:pod:{{{pod_id}}}"


def pod_sessions(pod_id: str) -> str:
    return f"rw:pod:{{{pod_id}}}:sessions"


def inbox(pod_id: str) -> str:
    return f"rw:inbox:{pod_id}"


def room_members(room: str) -> str:
    return f"rw:{{{room}}}:members"


def room_roles(room: str) -> str:
    return f"rw:{{{room}}}:roles"


def room_events(room: str) -> str:
    return f"rw:{{{room}}}:events"


def room_meta(room: str) -> str:
    return f"rw:{{{room}}}:meta"


class SessionKeys(NamedTuple):
    """Every key of one peer's session, in the order scripts take them."""

    hash: str
    box: str
    routed: str
    recent: str


@lru_cache(maxsize=32768)  # on every relay: the same few peers, again and again
def session_keys(room: str, peer: str) -> SessionKeys:
    base = f"rw:{{{room}}}:peer:{peer}"
    return SessionKeys(base, base + ":box", base + ":routed", base + ":recent")


def session(room: str, peer: str) -> str:
    return session_keys(room, peer).hash


def session_box(room: str, peer: str) -> str:
    return session_keys(room, peer).box


def session_recent(room: str, peer: str) -> str:
    return session_keys(room, peer).recent


def session_routed(room: str, peer: str) -> str:
    return session_keys(room, peer).routed


def session_member(room: str, peer: str) -> str:
    """A session as a member of its pod's session set."""
    return room + _SEP + peer


def parse_session_member(member: str) -> tuple[str, str] | None:
    room, sep, peer = member.partition(_SEP)
    return (room, peer) if sep and room and peer else None


def by_room(members: Iterable[str]) -> dict[str, list[str]]:
    """A pod's session set grouped by room (room -> peers), malformed members skipped:
    the calls that touch many sessions are made per room (one slot each)."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in members:
        if (rp := parse_session_member(m)) is not None:
            out[rp[0]].append(rp[1])
    return dict(out)
