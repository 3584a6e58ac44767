"""The one timestamp format the node agent writes into the API (RFC 3339, seconds, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
