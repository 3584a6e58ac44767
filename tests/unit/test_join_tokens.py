"""Join tokens under a JoinPolicy (PyJWT underneath): each refusal says why, and a
``Connection`` turns every one into ``unauthorized`` with close 1008."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from signaling import tokens
from signaling.config import resolve
from signaling.protocol import Close, CloseCode, Connection, Join, Send

SECRET = "unit-test-join-token-secret-of-32-bytes-or-more"
POLICY = tokens.JoinPolicy(
    SECRET, leeway_s=5, max_lifetime_s=600, audience="roomwire", issuer="meetings"
)


def claims(**over: Any) -> dict[str, Any]:
    now = time.time()
    base: dict[str, Any] = {
        "room": "r",
        "peer": "p",
        "role": "screen",
        "aud": "roomwire",
        "iss": "meetings",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(body: dict[str, Any], secret: str = SECRET) -> str:
    return tokens.encode(body, secret)


def unsigned(body: dict[str, Any]) -> str:
    return jwt.encode(body, None, algorithm="none")


def test_a_good_token_is_accepted() -> None:
    got = tokens.decode_join(sign(claims()), POLICY)
    assert (got["room"], got["peer"], got["role"]) == ("r", "p", "screen")


def test_leeway_covers_small_clock_skew() -> None:
    now = int(time.time())
    # nbf and iat a little ahead of this clock, exp a little behind: within the leeway.
    tokens.decode_join(sign(claims(nbf=now + 3, iat=now + 3, exp=now + 303)), POLICY)
    tokens.decode_join(sign(claims(iat=now - 200, exp=now - 3)), POLICY)


# Each token is made when its test runs, not at collection: a suite that runs these
# minutes after collecting them would otherwise find "ahead" tokens already valid.
REFUSED: list[tuple[str, Callable[[int], str], str]] = [
    ("alg none", lambda now: unsigned(claims()), "alg value is not allowed"),
    (
        "other secret",
        lambda now: sign(claims(), "another-secret-that-is-also-long-enough"),
        "Signature",
    ),
    ("no exp", lambda now: sign(claims(exp=None)), '"exp"'),
    ("expired", lambda now: sign(claims(iat=now - 100, exp=now - 10)), "expired"),
    ("nbf ahead", lambda now: sign(claims(nbf=now + 60)), "not yet valid"),
    ("iat ahead", lambda now: sign(claims(iat=now + 60, exp=now + 90)), "iat"),
    ("exp too far", lambda now: sign(claims(iat=None, exp=now + 3600)), "longer than 600"),
    ("exp - iat too long", lambda now: sign(claims(iat=now - 500, exp=now + 200)), "exp - iat"),
    ("wrong aud", lambda now: sign(claims(aud="elsewhere")), "Audience"),
    ("no aud", lambda now: sign(claims(aud=None)), '"aud"'),
    ("wrong iss", lambda now: sign(claims(iss="someone")), "issuer"),
    ("no iss", lambda now: sign(claims(iss=None)), '"iss"'),
    ("not a JWT", lambda now: "not.a.jwt", ""),
]


@pytest.mark.parametrize(("name", "make", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(name: str, make: Callable[[int], str], why: str) -> None:
    token = make(int(time.time()))
    with pytest.raises(tokens.TokenError) as e:
        tokens.decode_join(token, POLICY)
    assert why in str(e.value), (name, str(e.value))
    assert len(str(e.value)) <= 120
    # Through the protocol core: the 'unauthorized' error frame, then close 1008.
    c = Connection(auth=POLICY)
    frame = {"type": "join", "room": "r", "peer": "p", "role": "screen", "token": token}
    out = c.receive_text(json.dumps(frame), 0.0)
    assert isinstance(out[0], Send) and out[0].frame["code"] == "unauthorized"
    assert out[-1] == Close(CloseCode.POLICY, "unauthorized")


def test_a_token_for_another_room_is_refused_by_the_connection() -> None:
    c = Connection(auth=POLICY)
    frame = {"type": "join", "room": "r2", "peer": "p", "role": "screen", "token": sign(claims())}
    out = c.receive_text(json.dumps(frame), 0.0)
    assert isinstance(out[0], Send)
    error = out[0].frame
    assert error["code"] == "unauthorized" and "room" in error["message"]
    ok = Connection(auth=POLICY)
    frame["room"] = "r"
    assert isinstance(ok.receive_text(json.dumps(frame), 0.0)[0], Join)


def test_without_audience_setting_a_token_naming_one_is_refused() -> None:
    open_aud = tokens.JoinPolicy(SECRET)
    tokens.decode_join(sign(claims(aud=None)), open_aud)
    with pytest.raises(tokens.TokenError):
        tokens.decode_join(sign(claims()), open_aud)


def test_settings_build_the_policy() -> None:
    import argparse

    from signaling.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--token-secret", SECRET, "--token-leeway", "2"])
    env = {"SIGNALING_TOKEN_AUDIENCE": "roomwire", "SIGNALING_TOKEN_MAX_LIFETIME_S": "90"}
    settings, _ = resolve(args, env)
    assert settings.join_policy == tokens.JoinPolicy(
        SECRET, leeway_s=2.0, max_lifetime_s=90.0, audience="roomwire", issuer=None
    )
    settings, _ = resolve(parser.parse_args([]), {})
    assert settings.join_policy is None
    text = parser.format_help()
    for flag, env in [
        ("--token-leeway", "TOKEN_LEEWAY_S"),
        ("--token-max-lifetime", "TOKEN_MAX_LIFETIME_S"),
        ("--token-audience", "TOKEN_AUDIENCE"),
        ("--token-issuer", "TOKEN_ISSUER"),
    ]:
        assert flag in text and f"SIGNALING_{env}" in text, flag
