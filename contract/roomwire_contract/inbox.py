"""The inbox codec: messages on a pod's inbox channel (``keys.inbox``). Pure, no I/O.

The two hot messages are compact, written by the relay and fan-out scripts: fields
separated by the byte 0x1f (US) and records by 0x1e (RS), neither ever found in ids,
numbers or encoded JSON (which escapes control characters); each frame rides as it is,
never escaped and parsed twice:

- ``b<US><t>`` then, per frame, ``<RS><room><US><peer><US><sid><US><n><US><frame>``: the
  frames one batch of a pod's relays routed to this pod, each for one session; ``n``
  orders a session's frames across pods, ``t`` is the sender's clock (for the latency
  metric).
- ``r<US><t><US><room><US><peer,...><US><sid,...><US><n,...><US><frame>``: one room
  frame for the listed sessions of that pod.

Both decode to ``{"k": "batch", "t": float, "frames": [(room, peer, sid, n, frame)]}``.
The others are JSON objects with a kind ``k``:

- ``{"k": "takeover", "sid": str, "pod": str, "replaced": bool}``: the session resumed
  on ``pod`` (or the peer joined afresh there); its previous pod lets it go.
- ``{"k": "takeover-done", "sid": str, "recent": [[seq, frame], ...]}``: the previous
  pod passed on everything it held for the session.
- ``{"k": "cmd", "cmd": {...}, "sig": hex}``: an operator command (``control``), each
  with its ``op`` and the signing time ``ts``:

  - ``{"op": "reconnect", "sids": [str], "after_ms": int}``: ask these sessions'
    clients to reconnect (a rebalance).
  - ``{"op": "migrate-room", "room": str, "url": str}``: the room's members go to
    ``url`` (its new home).
  - ``{"op": "drain"}``: stop taking connections and move every client away.
  - ``{"op": "weight", "weight": 0..100}``: the operator's weight for this pod, which
    the pod publishes on its Nacos instance (through ``discovery.registry_weight``);
    sent on change and every 30 s; a pod without Nacos ignores it.
"""

from __future__ import annotations

import json
from typing import Any

US, RS = b"\x1f", b"\x1e"
BATCH, ROOM_FRAME = b"b" + US, b"r" + US  # how the two compact messages start

# (room, peer, session id, order number n, frame)
InboxFrame = tuple[str, str, str, int, str]


def decode_inbox(data: bytes) -> dict[str, Any] | None:
    """An inbox message as a dict; None if it is malformed."""
    try:
        if data[:2] == BATCH:
            head, *items = data.split(RS)
            frames: list[InboxFrame] = []
            for item in items:
                room, peer, sid, n, text = item.split(US, 4)
                frames.append((room.decode(), peer.decode(), sid.decode(), int(n), text.decode()))
            return {"k": "batch", "t": float(head[2:]), "frames": frames}
        if data[:2] == ROOM_FRAME:
            # one room frame for several sessions: the same as a batch of copies
            _, t, room_b, peers_b, sids_b, ns_b, text_b = data.split(US, 6)
            room_id, frame = room_b.decode(), text_b.decode()
            peers, sids, ns = (
                peers_b.decode().split(","),
                sids_b.decode().split(","),
                ns_b.split(b","),
            )
            if not len(peers) == len(sids) == len(ns):
                return None
            return {
                "k": "batch",
                "t": float(t),
                "frames": [
                    (room_id, p, s, int(n), frame) for p, s, n in zip(peers, sids, ns, strict=True)
                ],
            }
        payload = json.loads(data)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def takeover(sid: str, pod: str, replaced: bool) -> str:
    """The session resumed on ``pod``: its previous pod lets it go."""
    return json.dumps({"k": "takeover", "sid": sid, "pod": pod, "replaced": replaced})


def takeover_done(sid: str, recent: list[tuple[int, str]]) -> str:
    """The previous pod passed on everything it held for the session."""
    return json.dumps({"k": "takeover-done", "sid": sid, "recent": recent})
