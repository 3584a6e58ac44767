"""Operator -> pod commands: canonical encoding and HMAC signatures. Pure, no I/O.

Commands travel through a pod's Redis inbox; a pod acts only on commands whose
signature verifies with the shared control secret and whose ``ts`` is recent, so that
anyone who can write to Redis cannot order a pod to drop its clients.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

MAX_AGE_S = 60.0


def canonical(cmd: dict[str, Any]) -> bytes:
    return json.dumps(cmd, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, cmd: dict[str, Any]) -> dict[str, Any]:
    """Return the inbox message carrying ``cmd``, stamped with ``ts`` when it has none."""
    cmd = dict(cmd)
    cmd.setdefault("ts", time.time())
    sig = hmac.new(secret.encode(), canonical(cmd), hashlib.sha256).hexdigest()
    return {"k": "cmd", "cmd": cmd, "sig": sig}


def verify(secret: str, message: dict[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """The command if the signature is good and it is fresh, else None."""
    cmd = message.get("cmd")
    sig = message.get("sig")
    if not secret or not isinstance(cmd, dict) or not isinstance(sig, str):
        return None
    want = hmac.new(secret.encode(), canonical(cmd), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig):
        return None
    ts = cmd.get("ts")
    now = time.time() if now is None else now
    if not isinstance(ts, (int, float)) or abs(now - ts) > MAX_AGE_S:
        return None
    return cmd
