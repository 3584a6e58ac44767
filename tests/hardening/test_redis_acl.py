"""Redis with the ACL of the manifests: the pods and the operator need nothing more, and
what they do not need is refused.

A real ``redis-server`` runs with the arguments of ``manifests/workload/redis.yaml`` (the
default user off; the user ``roomwire`` limited to the listed commands on ``rw:*`` keys
and channels). Two real signaling pods (``signaling serve`` processes) and the
operator's real ``Store`` log in as ``roomwire`` and go through their Redis paths: join,
relay across pods, room events, grace and resume on the other pod, Redis losing every
key and script (restore, script reload), a pod killed with -9 and claimed by the other,
leave and drain; every read and write of the operator. Then ``ACL LOG`` must be empty:
Redis refused nothing. Forbidden commands, keys, channels and logins are refused with
NOPERM, NOAUTH or WRONGPASS.

A static check keeps the ACL in step with the code: every command named in a Lua script
of the workload or the contract, or sent as a plain command by the workload, must be
allowed (a new ``redis.call`` needs a line in the manifest, or the pods break on the
shipped Redis).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingroom_operator.store import Store
from roomwire_contract import keys
from signaling.client import Client
from tests.conftest import PodFactory, wait_ready
from tests.support import ROOT, eventually

from .conftest import AclRedis, acl_rules, shipped_redis_args

REAPED = re.compile(r"pod (\S+) stopped heartbeating: (\d+) of its sessions now in grace")
LUA_CALL = re.compile(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]")
# A plain command the workload sends: ("CMD", ...), fire("CMD", ...), commands([("CMD"
PLAIN = re.compile(r"""(?:\(|fire\()\s*["']([A-Z]{3,})["']\s*[,)]""")


async def _joined(make: Callable[..., Client], url: str, room: str, peer: str) -> Client:
    c = make(url)
    await c.connect()
    await c.join(room, peer)
    return c


async def _ack(c: Client, frame_id: int) -> dict[str, Any]:
    reply = await c.recv_until(lambda f: f.get("id") == frame_id, timeout=10)
    assert reply["type"] == "ack", reply
    return reply


def _allowed(rules: list[str]) -> set[str]:
    return {r[1:].lower() for r in rules if r.startswith("+")}


def _commands_ran(r: redis.Redis) -> dict[str, int]:
    """Commands Redis executed (INFO commandstats), the test's own admin ones left out."""
    stats: dict[str, Any] = r.info("commandstats")
    ran = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    for own in ("acl|log", "info", "flushall", "script|flush", "exists", "hello", "auth"):
        ran.pop(own, None)
    return ran


async def test_pods_on_the_shipped_acl_have_nothing_refused(
    acl_redis: AclRedis, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    p1 = start_pod(acl_redis.url, "pod-1", wait_ready=False)
    p2 = start_pod(acl_redis.url, "pod-2", wait_ready=False)
    wait_ready(p1, p2)
    assert "roomwire:***@" in p1.log.read_text(), "the password is not logged"
    admin = acl_redis.admin()

    alice = await _joined(clients, p1.ws_url, "acl", "alice")
    bob = await _joined(clients, p2.ws_url, "acl", "bob")
    await alice.relay("offer", "bob", {"sdp": "v=0"}, frame_id=1)
    await _ack(alice, 1)
    offer = await bob.recv_until(lambda f: f["type"] == "offer")
    assert offer["from"] == "alice"
    await bob.broadcast("chat", {"text": "hello"}, frame_id=2)
    await alice.recv_until(lambda f: f["type"] == "broadcast")

    # Grace, frames kept, resume on the other pod.
    await alice.abort()
    for n in range(3):
        await bob.relay("candidate", "alice", {"n": n}, frame_id=10 + n)
        await _ack(bob, 10 + n)
    reply = await alice.resume(p2.ws_url)
    assert reply["resumed"] is True, reply
    got = [await alice.recv_until(lambda f: f["type"] == "candidate") for _ in range(3)]
    assert [f["data"]["n"] for f in got] == [0, 1, 2]

    # Redis loses every key and script (a restart without persistence): the pods restore
    # their records and load their scripts again.
    admin.flushall()
    admin.script_flush()

    async def restored() -> bool:
        return bool(admin.exists(keys.pod("pod-1"), keys.pod("pod-2")) == 2)

    await eventually(restored, 20, "both pods restored their records")
    await bob.relay("offer", "alice", {"sdp": "again"}, frame_id=20)
    await _ack(bob, 20)
    await alice.recv_until(lambda f: f["type"] == "offer" and f["data"]["sdp"] == "again")

    # A pod killed with -9: the other turns its sessions to grace.
    carol = await _joined(clients, p1.ws_url, "acl", "carol")
    p1.kill9()
    killed = time.monotonic()

    async def reaped() -> bool:
        return bool(REAPED.search(p2.log.read_text(errors="replace")))

    await eventually(reaped, 40, "pod-2 to claim pod-1's sessions", every=0.2)
    print(f"pod-1's sessions claimed by pod-2 {time.monotonic() - killed:.1f} s after kill -9")
    await bob.relay("candidate", "carol", {"n": 99}, frame_id=30)
    await _ack(bob, 30)
    assert (await carol.resume(p2.ws_url))["resumed"] is True
    await carol.recv_until(lambda f: f["type"] == "candidate" and f["data"]["n"] == 99)

    for c in (alice, bob, carol):
        await c.send({"type": "leave"})
        await c.wait_closed(5)
    assert p2.terminate() == 0  # drain: deregisters

    refused = acl_redis.refusals()
    ran = _commands_ran(admin)
    print("commands the pods ran (calls):", dict(sorted(ran.items())))
    print("refused by the ACL:", refused)
    assert refused == []
    assert _allowed(acl_rules(acl_redis.args)) >= set(ran), set(ran) - _allowed(
        acl_rules(acl_redis.args)
    )


async def test_the_operator_store_on_the_shipped_acl_has_nothing_refused(
    acl_redis: AclRedis, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    """Every read and write of the operator (``meetingroom_operator.store``), against
    a live pod's records."""
    pod = start_pod(acl_redis.url, "pod-1")
    c = await _joined(clients, pod.ws_url, "ops", "dave")
    store = Store(acl_redis.url)
    try:
        assert await store.ping()

        async def beating() -> bool:
            return "pod-1" in await store.heartbeats()

        await eventually(beating, 10, "pod-1's heartbeat")
        sessions = await store.live_sessions(["pod-1"])
        assert [s.sid for s in sessions] == [c.session_id]
        assert await store.participants(["ops"]) == {"ops": 1}
        await store.write_placement({"ops": "pod-1"}, removed=["gone"])
        assert await store.placement() == {"ops": "pod-1"}
        assert await store.command("0123456789abcdef0123", "pod-1", {"op": "noop"}) == 1
        await store.add_inflight({c.session_id: "pod-1"}, time.time() + 30)
        moves = await store.inflight()
        assert set(moves) == {c.session_id}
        states = await store.session_states(moves)
        assert states == {c.session_id: ("pod-1", "live")}, states
        await store.drop_inflight([c.session_id])
        # A pod the API says is dead: its sessions turned to grace by the shared scripts.
        pod.kill9()
        assert await store.clean_dead_pod("pod-1", 30) == 1
        assert await store.clean_dead_pod("pod-1", 30) == 0
    finally:
        await store.close()
    refused = acl_redis.refusals()
    print("refused by the ACL:", refused)
    assert refused == []
    clients_seen = acl_redis.admin().client_list()
    assert not [x for x in clients_seen if x.get("lib-name")], "no CLIENT SETINFO sent"


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "yes"),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("EVAL", "return 1", "0"),
        ("SCRIPT", "FLUSH"),
        ("SWAPDB", "0", "1"),
        ("SHUTDOWN",),
        ("MONITOR",),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("ACL", "LIST"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("SET", "not-ours", "1"),
        ("GET", "session:other-app"),
        ("RENAME", keys.PODS, "elsewhere"),
        ("PUBLISH", "other-channel", "x"),
        ("SUBSCRIBE", f"__keyspace@0__:{keys.PODS}"),
        ("PSUBSCRIBE", keys.inbox("*")),
        ("XGROUP", "CREATE", keys.room_events("x"), "g", "$", "MKSTREAM"),
    ],
    ids=" ".join,
)
def test_a_forbidden_command_is_refused(acl_redis: AclRedis, command: tuple[str, ...]) -> None:
    r = redis.Redis(
        host="127.0.0.1", port=acl_redis.port, username="roomwire", password=acl_redis.password
    )
    with pytest.raises(redis.exceptions.NoPermissionError) as e:
        r.execute_command(*command)  # type: ignore[no-untyped-call]
    print(" ".join(command), "->", e.value)
    assert [x["username"] for x in acl_redis.refusals()] == ["roomwire"]


def test_a_script_cannot_reach_past_the_acl_and_logins_are_checked(acl_redis: AclRedis) -> None:
    """SCRIPT LOAD + EVALSHA run any script, but each command inside it is checked too;
    without a password nothing runs, with a wrong one the login is refused."""
    r = redis.Redis(
        host="127.0.0.1", port=acl_redis.port, username="roomwire", password=acl_redis.password
    )
    for body, what in (
        ("return redis.call('FLUSHALL')", "flushall"),
        ("return redis.call('SET', 'not-ours', '1')", "a key outside rw:*"),
        ("return redis.call('PUBLISH', 'other', '1')", "a channel outside rw:*"),
    ):
        sha = r.script_load(body)
        before = len(acl_redis.refusals())
        with pytest.raises(redis.ResponseError) as e:
            r.evalsha(sha, 0)
        print(what, "->", e.value)
        entry = acl_redis.refusals()[0]  # the newest first
        assert len(acl_redis.refusals()) == before + 1 and entry["context"] == "lua", entry

    with socket.create_connection(("127.0.0.1", acl_redis.port), timeout=2) as s:
        s.sendall(b"PING\r\nHSET rw:x a b\r\n")
        answer = s.recv(200)
    print("without a login:", answer)
    assert answer.startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host="127.0.0.1", port=acl_redis.port, username="roomwire", password="wrong"
        ).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=acl_redis.port, username="default").ping()


def test_every_command_of_the_code_is_in_the_acl() -> None:
    """Static: the Lua scripts' ``redis.call``s (workload and contract) and the
    workload's plain commands, each allowed by the manifest's ACL; the operator's
    (redis-py) are checked live above."""
    allowed = _allowed(acl_rules(shipped_redis_args("x", 6379)))
    lua = {
        m.lower()
        for path in [
            *(ROOT / "workload" / "signaling" / "lua").glob("*.lua"),
            *(ROOT / "contract" / "roomwire_contract" / "lua").glob("*.lua"),
        ]
        for m in LUA_CALL.findall(path.read_text())
    }
    plain = {
        m.lower()
        for path in [
            *(ROOT / "workload" / "signaling" / "registry").glob("redis_*.py"),
            ROOT / "workload" / "signaling" / "resp.py",
        ]
        for m in PLAIN.findall(path.read_text())
    }
    plain = {
        "script|load" if p == "script" else "client|setname" if p == "client" else p for p in plain
    }
    plain -= {"auth", "noscript"}  # AUTH is always allowed; NOSCRIPT is an error reply
    print("Lua:", sorted(lua))
    print("plain:", sorted(plain))
    assert len(lua) >= 15 and {"evalsha", "subscribe", "publish"} <= plain
    missing = sorted((lua | plain) - allowed)
    assert missing == [], (
        f"Redis commands the code sends that the shipped ACL refuses: {missing}; add each "
        "as +<command> to the Redis arguments in manifests/workload/redis.yaml (the chart "
        "reads them from there) and to the table of docs/security.md"
    )
    # and nothing allowed that no code runs (the operator's: MULTI/EXEC, ZRANGE, ...)
    operator = {"multi", "exec", "zrange", "hgetall", "hmget", "smembers", "hlen", "ping"}
    unused = allowed - lua - plain - operator - {"select"}
    print("allowed, run by none of them:", sorted(unused))
    assert unused == set(), f"allowed by the ACL but sent by no code: {sorted(unused)}"
