"""HS256 JSON Web Tokens for ``join`` and signed resume tokens, on PyJWT. Pure, no I/O.

``alg`` is pinned to HS256: a token with any other ``alg`` (``none`` included) is refused
before its signature is looked at. Join tokens are checked against a ``JoinPolicy``:
``exp`` required, ``nbf`` and ``iat`` honoured, all three with a small leeway for clock
skew; a lifetime no longer than the policy's maximum; ``aud`` and ``iss`` when the
policy names them. Every refusal is a ``TokenError`` whose text says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
# The ``use`` claim of an edge token: accepted only for role ``edge`` (and a token
# without it never is), bound to one room by its ``room`` claim like any join token.
EDGE_USE = "edge"


class TokenError(ValueError):
    """A token that is malformed, badly signed, expired or not for this use."""


@dataclass(frozen=True)
class JoinPolicy:
    """What a join token must satisfy besides its signature."""

    secret: str
    leeway_s: float = 5.0
    max_lifetime_s: float = 3600.0
    audience: str | None = None
    issuer: str | None = None


def encode(claims: dict[str, Any], secret: str) -> str:
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def make_join(
    secret: str,
    room: str,
    peer: str,
    role: str,
    lifetime_s: float = 600.0,
    *,
    edge: bool = False,
    now: float | None = None,
) -> str:
    """A join token (an edge token with ``edge``: role ``edge``, ``use`` ``edge``)."""
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "room": room,
        "peer": peer,
        "role": role,
        "iat": int(now),
        "exp": int(now + lifetime_s),
    }
    if edge:
        claims["use"] = EDGE_USE
    return encode(claims, secret)


def decode(token: str, secret: str) -> dict[str, Any]:
    """Verified claims of a token signed with ``secret``; raises TokenError.

    ``exp`` and ``nbf``, when present, are checked without leeway; an ``aud`` is refused.
    """
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM])
    except jwt.PyJWTError as e:
        raise TokenError(_reason(e)) from None


def decode_join(token: str, policy: JoinPolicy, now: float | None = None) -> dict[str, Any]:
    """Verified claims of a join token under ``policy``; raises TokenError.

    ``now`` (seconds since the epoch) only bounds the lifetime check; PyJWT reads the
    clock itself for ``exp``, ``nbf`` and ``iat``.
    """
    try:
        claims = jwt.decode(
            token,
            policy.secret,
            algorithms=[ALGORITHM],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway_s,
            options={"require": ["exp"]},
        )
    except jwt.PyJWTError as e:
        raise TokenError(_reason(e)) from None
    exp = float(claims["exp"])  # PyJWT has checked it is an integer-valued number
    now = time.time() if now is None else now
    if exp - now > policy.max_lifetime_s + policy.leeway_s:
        raise TokenError(f"token lives longer than {policy.max_lifetime_s:g} s")
    iat = claims.get("iat")
    if iat is not None and exp - float(iat) > policy.max_lifetime_s:
        raise TokenError(f"token lives longer than {policy.max_lifetime_s:g} s (exp - iat)")
    return claims


def _reason(e: Exception) -> str:
    """PyJWT's reason, cut short: parts of it may come from the token itself."""
    text = str(e)
    return text if len(text) <= 120 else text[:117] + "..."
