"""Fixtures of the deployment-hardening tests: Redis as the manifests run it.

- ``acl_redis``: a real ``redis-server`` started with the arguments of
  ``manifests/workload/redis.yaml`` (its ACL: the default user off, the one user
  ``roomwire``), the password expanded as Kubernetes would, on a free loopback port. One
  more user, ``admin``, is added for the test's own look at ``ACL LOG`` (nobody else
  uses it).
- ``tls_files``: a throwaway CA, a server certificate for 127.0.0.1 and localhost and a
  client certificate, made with ``openssl`` in the test's folder (never kept).
- ``clients``: WebSocket clients closed at the end of the test.

Nothing is faked.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from signaling.client import Client
from tests.support import ROOT, free_port, stop_process, wait_until

REDIS_MANIFEST = ROOT / "manifests" / "workload" / "redis.yaml"


def shipped_redis_args(password: str, port: int) -> list[str]:
    """The Redis container's arguments as shipped, ``$(REDIS_PASSWORD)`` expanded and
    its port replaced by ``port``."""
    deployment = next(yaml.safe_load_all(REDIS_MANIFEST.read_text()))
    args = [str(a) for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
    at = args.index("--port")
    args[at + 1] = str(port)
    return [a.replace("$(REDIS_PASSWORD)", password) for a in args]


def acl_rules(args: list[str], user: str = "roomwire") -> list[str]:
    """The ACL rules of ``user`` in redis-server arguments (``--user NAME RULES...``)."""
    at = next(i for i, a in enumerate(args) if a == "--user" and args[i + 1] == user)
    out: list[str] = []
    for a in args[at + 2 :]:
        if a.startswith("--"):
            break
        out.append(a)
    return out


@dataclass
class AclRedis:
    port: int
    password: str
    admin_password: str
    proc: subprocess.Popen[bytes]
    args: list[str]

    @property
    def url(self) -> str:
        """What the pods and the operator are given (manifests: redis://roomwire:...)."""
        return f"redis://roomwire:{self.password}@127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username="admin",
            password=self.admin_password,
            decode_responses=True,
            socket_timeout=5,
        )

    def refusals(self) -> list[dict[str, Any]]:
        """``ACL LOG``: every command, key, channel or login Redis refused."""
        with self.admin() as r:
            return list(r.acl_log())

    def ping(self) -> bool:
        try:
            with self.admin() as r:
                return bool(r.ping())
        except redis.RedisError:
            return False


def spawn_redis(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is missing: run `make deps` (installs Debian's redis-server)")
    return subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--dir", str(workdir), "--loglevel", "warning", *args],
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture()
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    password, admin_password = secrets.token_hex(16), secrets.token_hex(16)
    port = free_port()
    args = shipped_redis_args(password, port)
    admin = ["--user", "admin", "on", f">{admin_password}", "~*", "&*", "+@all"]
    proc = spawn_redis([*args, *admin], tmp_path)
    server = AclRedis(port, password, admin_password, proc, args)
    try:
        wait_until(server.ping, 15, "redis-server with the shipped ACL to answer")
        yield server
    finally:
        stop_process(proc, 10)


# ---- TLS -------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("openssl is missing (Debian's openssl package)")
    out = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"openssl {' '.join(args)}:\n{out.stderr}"


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    return crt, key


def _issue(folder: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, crt = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    extfile = folder / f"{name}.ext"
    extfile.write_text(ext)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(crt), "-days", "1", "-extfile", str(extfile),
        cwd=folder,
    )  # fmt: skip
    return crt, key


@pytest.fixture()
def tls_files(tmp_path: Path) -> TlsFiles:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = _ca(folder, "roomwire-test-ca")
    other, _ = _ca(folder, "another-ca")
    server = _issue(
        folder,
        "redis",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = _issue(folder, "roomwire-client", ca, "extendedKeyUsage=clientAuth\n")
    return TlsFiles(ca[0], server[0], server[1], client[0], client[1], other)


# ---- clients ---------------------------------------------------------------------------


@pytest.fixture()
async def clients() -> AsyncIterator[Callable[..., Client]]:
    """``clients(url)`` makes a client that is closed at the end of the test."""
    made: list[Client] = []

    def make(url: str) -> Client:
        c = Client(url)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()
