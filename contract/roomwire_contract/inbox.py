"""The inbox codec: messages on a pod's ``rw:inbox:{pod}`` channel (layout in ``keys``).

The hot messages (frames for sessions) are compact byte records written by the relay
scripts; the rest are JSON objects with a kind ``k``. Pure, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

US, RS = b"\x1f", b"\x1e"  # field and record separators (never in ids or encoded JSON)
BATCH, ROOM_FRAME = b"b" + US, b"r" + US  # how the two compact messages start


def decode_inbox(data: bytes) -> dict[str, Any] | None:
    """An inbox message as a dict (see ``keys``); None if it is malformed."""
    try:
        if data[:2] == BATCH:
            head, *items = data.split(RS)
            frames = []
            for item in items:
                sid, n, text = item.split(US, 2)
                frames.append((sid.decode(), int(n), text.decode()))
            return {"k": "batch", "t": float(head[2:]), "frames": frames}
        if data[:2] == ROOM_FRAME:
            # one room frame for several sessions: the same as a batch of copies
            _, t, sids, ns, text = data.split(US, 4)
            sid_list, n_list, frame = sids.decode().split(","), ns.split(b","), text.decode()
            if len(sid_list) != len(n_list):
                return None
            return {
                "k": "batch",
                "t": float(t),
                "frames": [(sid, int(n), frame) for sid, n in zip(sid_list, n_list, strict=True)],
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
