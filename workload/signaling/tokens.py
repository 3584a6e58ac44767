"""HS256 JSON Web Tokens for ``join`` and signed resume tokens. Pure, no I/O.

Only what the wire contract needs: compact JWS with ``alg: HS256``. A small own
implementation keeps the protocol core free of dependencies and its errors ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class TokenError(ValueError):
    """A token that is malformed, badly signed, expired or not for this use."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], secret: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{body}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def decode(token: str, secret: str, now: float | None = None) -> dict[str, Any]:
    """Verified claims; raises TokenError. ``exp``, when present, must be in the future."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a compact JWT")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenError("not a compact JWT") from e
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("only HS256 tokens are accepted")
    want = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        raise TokenError("bad signature")
    if not isinstance(claims, dict):
        raise TokenError("claims are not an object")
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)):
            raise TokenError("exp is not a number")
        if (time.time() if now is None else now) >= exp:
            raise TokenError("token expired")
    return claims
