"""Join tokens against a real signaling process with every token setting in use.

Each bad token gets the ``unauthorized`` error frame and close 1008, for the reason it
was made to fail; a good one joins, and so does one whose ``nbf`` is ahead of the
server's clock by less than the leeway. Within the grace period the resume token is the
credential; after it, a new session needs a join token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from signaling import tokens
from signaling.client import Client
from tests.conftest import PodFactory

SECRET = "workload-test-join-token-secret-32-bytes-plus"
ARGS = [
    "--token-secret",
    SECRET,
    "--token-leeway",
    "5",
    "--token-max-lifetime",
    "600",
    "--token-audience",
    "roomwire",
]


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "room": "vault",
        "peer": "alice",
        "role": "participant",
        "aud": "roomwire",
        "iat": now,
        "exp": now + 120,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


async def test_join_tokens_against_a_server(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(args=ARGS, env={"SIGNALING_TOKEN_ISSUER": "meetings"})
    now = int(time.time())
    good = claims(iss="meetings")
    bad: list[tuple[str, str, str]] = [
        ("alg none", jwt.encode(good, None, algorithm="none"), "alg value is not allowed"),
        ("another secret", tokens.encode(good, "not-the-secret-but-just-as-long-as-it"), "Sig"),
        ("no exp", tokens.encode({k: v for k, v in good.items() if k != "exp"}, SECRET), "exp"),
        ("nbf ahead", tokens.encode({**good, "nbf": now + 120}, SECRET), "not yet valid"),
        ("too long-lived", tokens.encode({**good, "exp": now + 3600}, SECRET), "longer than"),
        ("wrong aud", tokens.encode({**good, "aud": "another-service"}, SECRET), "Audience"),
        ("wrong iss", tokens.encode({**good, "iss": "someone"}, SECRET), "issuer"),
        ("another room", tokens.encode({**good, "room": "lobby"}, SECRET), "match room"),
    ]
    for name, token, why in bad:
        c = clients(pod.ws_url)
        await c.connect()
        frame = {"type": "join", "room": "vault", "peer": "alice", "role": "participant"}
        await c.send_raw(json.dumps({**frame, "token": token}))
        error = await c.recv_until(lambda f: f["type"] == "error")
        assert error["code"] == "unauthorized", name
        assert why in error["message"], (name, error["message"])
        assert await c.wait_closed() == 1008, name
    ok = clients(pod.ws_url)
    await ok.connect()
    await ok.join("vault", "alice", token=tokens.encode(good, SECRET))
    skewed = clients(pod.ws_url)
    await skewed.connect()
    await skewed.join(
        "vault", "bob", token=tokens.encode({**good, "peer": "bob", "nbf": now + 2}, SECRET)
    )
    await ok.relay("offer", "bob", {"x": 1})
    assert (await skewed.recv_until(lambda f: f["type"] == "offer"))["from"] == "alice"


async def test_within_grace_the_resume_token_is_the_credential(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """A join token that expires during the grace period does not stop the resume: the
    server-signed resume token is the credential then. Once the session is over, a
    resume token alone gets no new session; a join token does."""
    args = ["--token-secret", SECRET, "--token-leeway", "0", "--grace", "30"]
    pod = start_pod(args=args)
    now = int(time.time())
    short = tokens.encode({"room": "r", "peer": "a", "role": "participant",
                           "iat": now, "exp": now + 2}, SECRET)  # fmt: skip
    a = clients(pod.ws_url)
    await a.connect()
    await a.join("r", "a", token=short)
    b = clients(pod.ws_url)
    await b.connect()
    await b.join("r", "b", token=tokens.encode(claims(room="r", peer="b", aud=None), SECRET))
    await a.abort()
    async with asyncio.timeout(10):  # the join token's own expiry, bounded
        while time.time() <= now + 2.5:
            await asyncio.sleep(0.1)
    reply = await a.resume()  # no join token: the resume token alone
    assert reply["resumed"] is True
    await b.relay("offer", "a", {"n": 1})
    assert (await a.recv_until(lambda f: f["type"] == "offer"))["data"] == {"n": 1}


async def test_a_resume_token_alone_starts_no_new_session(
    start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    pod = start_pod(args=["--token-secret", SECRET, "--grace", "1"])
    a = clients(pod.ws_url)
    await a.connect()
    await a.join("r", "a", token=tokens.encode(claims(room="r", peer="a", aud=None), SECRET))
    b = clients(pod.ws_url)
    await b.connect()
    await b.join("r", "b", token=tokens.encode(claims(room="r", peer="b", aud=None), SECRET))
    await a.abort()
    await b.recv_until(lambda f: f["type"] == "peer-left", timeout=10)  # grace is over
    late = clients(pod.ws_url)
    await late.connect()
    frame = {"type": "join", "room": "r", "peer": "a", "role": "participant",
             "resume": a.resume_token}  # fmt: skip
    await late.send_raw(json.dumps(frame))
    err = await late.recv_until(lambda f: f["type"] == "error")
    assert err["code"] == "unauthorized" and "join token is required" in err["message"]
    assert await late.wait_closed() == 1008
    # With a join token, the same peer comes back as a new session.
    again = clients(pod.ws_url)
    await again.connect()
    joined = await again.join(
        "r", "a", token=tokens.encode(claims(room="r", peer="a", aud=None), SECRET)
    )
    assert joined["resumed"] is False
