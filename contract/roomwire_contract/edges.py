"""A room edge's link as pods publish it and the operator reads it (``keys.EDGES``).

Pure data and its JSON form, no I/O. The pod that holds an edge's link writes its
record when the edge links and unlinks and with each heartbeat (``at``); the operator
shows it in ``MeetingRoom.status.edge``. A record whose pod stopped heartbeating (or is
gone) is a link that died with its pod: not connected.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class EdgeRecord:
    room: str
    edge: str  # the edge's id (its peer id upstream)
    pod: str  # the pod holding the link, or the last one that did
    connected: bool
    since: float  # unix time the link came up (connected) or was lost (not connected)
    devices: int  # devices attached over the link
    at: float  # unix time of this record


def field(room: str, edge: str) -> str:
    """The record's field in ``keys.EDGES``."""
    return f"{room}/{edge}"


def encode(record: EdgeRecord) -> str:
    return json.dumps(asdict(record), separators=(",", ":"))


def decode(text: str | bytes) -> EdgeRecord | None:
    """The record, or None when it is not one (written by another version)."""
    try:
        d = json.loads(text)
        return EdgeRecord(
            str(d["room"]),
            str(d["edge"]),
            str(d["pod"]),
            bool(d["connected"]),
            float(d["since"]),
            int(d["devices"]),
            float(d["at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
