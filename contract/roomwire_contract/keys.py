"""Redis key layout and inbox message shapes: the contract between pods and the operator.

Pure names and constants, no I/O. The operator imports this module too, so that the
two never disagree on a key.

Keys (``{x}`` is a value):

- ``rw:pods`` sorted set: pod id -> unix time of its last heartbeat.
- ``rw:pod:{pod}`` hash, expires ``POD_TTL_S`` after the last heartbeat: ``url`` (ws URL
  of the pod), ``connections`` (open WebSocket connections), ``sessions`` (live
  sessions), ``rooms`` (rooms with a local member), ``draining`` ("0"/"1"), ``cpu``
  (share of one core used since the previous heartbeat), ``ts``.
- ``rw:pod:{pod}:sessions`` set of session ids owned by the pod.
- ``rw:session:{sid}`` hash: ``pod``, ``room``, ``peer``, ``role``, ``state``
  (``live`` or ``grace``), ``seq`` (last seq delivered, written on detach), ``busy``
  (unix time until which the session is in an offer/answer exchange; 0 when not; written
  with the pod's heartbeat, so the operator does not move it mid-negotiation). A live
  session expires ``POD_TTL_S`` plus the grace period after its pod's last heartbeat,
  so that it is still there when a pod dies: whoever notices first (any pod, once the
  dead pod's ``rw:pod:{pod}`` hash expired, or the operator) turns it to grace with no
  pod, its grace period counted from that last heartbeat (the script
  ``signaling/lua/reap_pod.lua``). A session in grace expires when its grace period ends.
- ``rw:session:{sid}:box`` stream: frames kept for a session that is not attached to a
  listening pod (grace, or its pod died). Bounded (``MAXLEN``); delivered on resume;
  held as long as a live session can last, and freed by the sweep that announces the
  session's end.
- ``rw:session:{sid}:recent`` list of ``"{seq}:{frame}"``: the last frames sent on a
  connection that dropped, re-sent on resume past the client's ``last_seq``.
- ``rw:session:{sid}:routed`` list of ``"{n}:{frame}"``, newest first: the last 64 to 96
  frames published to the session's pod. If that pod dies with them in flight, a resume
  re-sends those past the client's ``last_rn``; if only the pod's inbox connection was
  lost, the pod itself re-delivers those past the last ``n`` it delivered.
- ``rw:room:{room}:members`` hash: peer id -> session id.
- ``rw:room:{room}:roles`` hash: peer id -> role, for announcing a peer whose session
  expired (its pod died and it never resumed).
- ``rw:room:{room}:events`` stream of replayable room events; ``rw:room:{room}:meta``
  hash with ``epoch``.
- ``rw:placement`` hash: room -> home pod id (written only by the operator).
- ``rw:inbox:{pod}`` pub/sub channel: everything addressed to one pod. A pod
  subscribes to its own inbox and to nothing else.

Inbox messages. The two hot ones are compact: fields separated by the byte 0x1f (US)
and records by 0x1e (RS), neither ever found in ids, numbers or encoded JSON (which
escapes control characters); each frame rides as it is, never escaped and parsed twice:

- ``b<US>{t}`` then, per frame, ``<RS>{sid}<US>{n}<US>{frame}``: the frames one batch of
  a pod's relays routed to this pod, each for one session; ``n`` orders a session's
  frames across pods, ``t`` is the sender's clock (for the latency metric).
- ``r<US>{t}<US>{sid,sid,...}<US>{n,n,...}<US>{frame}`` one room frame for the listed
  sessions of that pod.

The others are JSON objects with a kind ``k``:
- ``{"k": "takeover", "sid": str, "pod": str}`` the session resumed on ``pod``; drop it.
- ``{"k": "cmd", "cmd": {...}, "sig": hex}`` an operator command, HMAC-SHA256 of the
  canonical JSON of ``cmd`` with the shared control secret. Commands:
  ``{"op": "reconnect", "sids": [str], "after_ms": int, "ts": float}`` and
  ``{"op": "migrate-room", "room": str, "url": str, "ts": float}`` and
  ``{"op": "drain", "ts": float}``.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "rw:"
POD_TTL_S: Final = 10
HEARTBEAT_S: Final = 2.0
PODS: Final = "rw:pods"
PLACEMENT: Final = "rw:placement"


def pod(pod_id: str) -> str:
    return f"rw:pod:{pod_id}"


def pod_sessions(pod_id: str) -> str:
    return f"rw:pod:{pod_id}:sessions"


def session(sid: str) -> str:
    return f"rw:session:{sid}"


def session_box(sid: str) -> str:
    return f"rw:session:{sid}:box"


def session_recent(sid: str) -> str:
    return f"rw:session:{sid}:recent"


def session_routed(sid: str) -> str:
    return f"rw:session:{sid}:routed"


def room_members(room: str) -> str:
    return f"rw:room:{room}:members"


def room_roles(room: str) -> str:
    return f"rw:room:{room}:roles"


def room_events(room: str) -> str:
    return f"rw:room:{room}:events"


def room_meta(room: str) -> str:
    return f"rw:room:{room}:meta"


def inbox(pod_id: str) -> str:
    return f"rw:inbox:{pod_id}"
