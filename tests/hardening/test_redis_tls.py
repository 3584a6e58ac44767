"""``rediss://``: the pods and the operator on a Redis that speaks only TLS.

A real ``redis-server`` (Debian's, built with TLS) listens with TLS only (``--port 0``),
asks every client for a certificate (``--tls-auth-clients yes``) and has the ACL of
``manifests/workload/redis.yaml``. Its certificates come from a throwaway CA made with
``openssl`` in the test's folder. Two real signaling pods relay a frame and a broadcast
across each other through it; the operator's real ``Store`` reads their heartbeats.

Then each check of the connection must hold: a CA that did not sign the server's
certificate is refused (by the pods and by the operator); a host the certificate does
not name is refused under ``verify=full`` and accepted under ``verify=ca``; without a
client certificate Redis refuses the handshake; ``verify=none`` connects to anything
(testing only).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from meetingroom_operator.config import Config, RedisTls
from meetingroom_operator.errors import ConfigError
from meetingroom_operator.store import Store
from signaling.client import Client
from tests.conftest import Pod, PodFactory, wait_ready
from tests.support import eventually, free_port, stop_process, wait_until

from .conftest import TlsFiles, shipped_redis_args, spawn_redis

VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed")


@dataclass
class TlsRedis:
    port: int
    password: str
    files: TlsFiles

    def url(self, host: str = "127.0.0.1") -> str:
        return f"rediss://roomwire:{self.password}@{host}:{self.port}/0"

    def pod_args(
        self, verify: str = "full", ca: Path | None = None, cert: bool = True
    ) -> list[str]:
        args = ["--redis-tls-ca-file", str(ca or self.files.ca), "--redis-tls-verify", verify]
        if cert:
            args += [
                "--redis-tls-cert-file",
                str(self.files.client_cert),
                "--redis-tls-key-file",
                str(self.files.client_key),
            ]
        return args

    def store_tls(self, verify: str = "full", ca: Path | None = None) -> RedisTls:
        return RedisTls(
            str(ca or self.files.ca),
            verify,
            str(self.files.client_cert),
            str(self.files.client_key),
        )


@pytest.fixture()
def tls_redis(tls_files: TlsFiles, tmp_path: Path) -> Iterator[TlsRedis]:
    password = secrets.token_hex(16)
    port = free_port()
    args = shipped_redis_args(password, 0)  # --port 0: no plain-text port at all
    tls = [
        "--tls-port", str(port),
        "--tls-cert-file", str(tls_files.server_cert),
        "--tls-key-file", str(tls_files.server_key),
        "--tls-ca-cert-file", str(tls_files.ca),
        "--tls-auth-clients", "yes",
        "--bind", "127.0.0.1", "127.0.0.2",
    ]  # fmt: skip
    proc = spawn_redis([*args, *tls], tmp_path)
    server = TlsRedis(port, password, tls_files)

    def answers() -> bool:
        try:
            with redis.Redis.from_url(
                server.url(),
                ssl_ca_certs=str(tls_files.ca),
                ssl_certfile=str(tls_files.client_cert),
                ssl_keyfile=str(tls_files.client_key),
                socket_timeout=2,
            ) as r:
                return bool(r.ping())
        except (redis.RedisError, OSError):
            return False

    try:
        wait_until(answers, 15, "redis-server to answer over TLS")
        yield server
    finally:
        stop_process(proc, 10)


async def _joined(make: Callable[..., Client], url: str, room: str, peer: str) -> Client:
    c = make(url)
    await c.connect()
    await c.join(room, peer)
    return c


async def test_pods_relay_across_each_other_over_tls_and_the_operator_reads_them(
    tls_redis: TlsRedis, start_pod: PodFactory, clients: Callable[..., Client]
) -> None:
    p1 = start_pod(tls_redis.url(), "pod-1", args=tls_redis.pod_args(), wait_ready=False)
    p2 = start_pod(tls_redis.url(), "pod-2", args=tls_redis.pod_args(), wait_ready=False)
    wait_ready(p1, p2)
    alice = await _joined(clients, p1.ws_url, "tls", "alice")
    bob = await _joined(clients, p2.ws_url, "tls", "bob")
    await alice.relay("offer", "bob", {"sdp": "v=0 over tls"}, frame_id=1)
    ack = await alice.recv_until(lambda f: f.get("id") == 1)
    offer = await bob.recv_until(lambda f: f["type"] == "offer")
    print("alice on pod-1 -> bob on pod-2:", ack["type"], offer["from"], offer["data"])
    assert ack["type"] == "ack" and offer["from"] == "alice"
    await bob.broadcast("chat", {"text": "tls"}, frame_id=2)
    event = await alice.recv_until(lambda f: f["type"] == "broadcast")
    assert event["from"] == "bob"

    store = Store(tls_redis.url(), tls_redis.store_tls())
    try:
        assert await store.ping()

        async def both() -> bool:
            return set(await store.heartbeats()) == {"pod-1", "pod-2"}

        await eventually(both, 10, "the operator to read both pods' heartbeats over TLS")
        sessions = await store.live_sessions(["pod-1", "pod-2"])
        assert sorted(s.pod for s in sessions) == ["pod-1", "pod-2"]
    finally:
        await store.close()


async def _refused(pod: Pod, pattern: re.Pattern[str]) -> str:
    async def logged() -> str:
        text = pod.log.read_text(errors="replace")
        m = pattern.search(text)
        return text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())] if m else ""

    line = await eventually(logged, 15, f"{pod.pod_id} to log {pattern.pattern}", every=0.1)
    assert pod.get("/readyz")[0] == 503
    assert pod.get("/healthz")[0] == 200
    return str(line)


async def test_each_check_of_the_connection_holds(
    tls_redis: TlsRedis, start_pod: PodFactory
) -> None:
    files = tls_redis.files
    # Another CA: the server's certificate is not trusted.
    wrong_ca = start_pod(
        tls_redis.url(), "wrong-ca", args=tls_redis.pod_args(ca=files.other_ca), wait_ready=False
    )
    print("another CA:", await _refused(wrong_ca, VERIFY_FAILED))
    # A host the certificate does not name (it names 127.0.0.1 and localhost).
    other_host = tls_redis.url("127.0.0.2")
    wrong_host = start_pod(other_host, "wrong-host", args=tls_redis.pod_args(), wait_ready=False)
    print("another host name:", await _refused(wrong_host, re.compile(r"IP address mismatch")))
    # No client certificate: Redis (tls-auth-clients yes) refuses the handshake.
    anonymous = start_pod(
        tls_redis.url(), "no-client-cert", args=tls_redis.pod_args(cert=False), wait_ready=False
    )
    print(
        "no client certificate:",
        await _refused(anonymous, re.compile(r"CERTIFICATE_REQUIRED|certificate required")),
    )
    # verify=ca accepts the other host name (the chain is still checked); verify=none
    # accepts the certificate of any CA.
    chain_only = start_pod(
        other_host, "chain-only", args=tls_redis.pod_args(verify="ca"), wait_ready=False
    )
    blind = start_pod(
        tls_redis.url(),
        "blind",
        args=tls_redis.pod_args(verify="none", ca=files.other_ca),
        wait_ready=False,
    )
    wait_ready(chain_only, blind)
    for p in (wrong_ca, wrong_host, anonymous):
        assert p.get("/readyz")[0] == 503, p.pod_id

    # The operator: the same checks through redis-py.
    for url, tls, ok in (
        (tls_redis.url(), tls_redis.store_tls(ca=files.other_ca), False),
        (other_host, tls_redis.store_tls(), False),
        (other_host, tls_redis.store_tls(verify="ca"), True),
        (tls_redis.url(), tls_redis.store_tls(verify="none", ca=files.other_ca), True),
    ):
        store = Store(url, tls)
        try:
            got = await store.ping()
        finally:
            await store.close()
        print(f"operator {url.split('@')[1]} verify={tls.verify}: ping {got}")
        assert got is ok


def test_a_missing_tls_file_stops_the_start(start_pod: PodFactory, tmp_path: Path) -> None:
    """A CA file that is not there is a configuration error at start, for the pod and
    for the operator, not an endless reconnect."""
    missing = str(tmp_path / "no-such-ca.crt")
    pod = start_pod(
        "rediss://127.0.0.1:1/0", "no-ca", args=["--redis-tls-ca-file", missing], wait_ready=False
    )
    wait_until(lambda: pod.proc.poll() is not None, 20, "the pod to exit")
    out = pod.log.read_text()
    print("pod:", out.strip().splitlines()[-1])
    assert pod.proc.returncode != 0 and "redis_tls_ca_file" in out
    env = {
        "ROOMWIRE_REDIS_URL": "rediss://127.0.0.1:1/0",
        "ROOMWIRE_CONTROL_SECRET": "0123456789abcdef",
        "ROOMWIRE_REDIS_TLS_CA_FILE": missing,
    }
    with pytest.raises(ConfigError) as e:
        Config.from_env(env)
    print("operator:", e.value)
    assert "ROOMWIRE_REDIS_TLS_CA_FILE" in str(e.value)
