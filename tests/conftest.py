"""Shared fixtures: real processes on free loopback ports, nothing faked.

- ``redis_server``: a real ``redis-server`` (Debian's) per test session, on a free port.
- ``start_pod``: starts ``python -m signaling serve`` as a separate process (a "pod"),
  waits for ``/readyz``, and stops it (SIGTERM, then SIGKILL) at the end of the test.

The helpers under them (a free port, bounded waits, stopping a process) are in
``tests/support.py``, which the benchmarks share.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_process, wait_until

# The local Kubernetes control plane (kube_cluster, kube_namespace); see docs/cluster.md.
pytest_plugins = ["devcluster.pytest_plugin"]


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def start(self) -> None:
        """(Re)start on the same port and data dir."""
        self.proc = spawn_redis(self.port, self.workdir)
        wait_until(self.ping, 15, "redis-server to answer PING")


def spawn_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is missing: run `make deps` (installs Debian's redis-server)")
    return subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    workdir = tempfile.mkdtemp(prefix="rw-redis-")
    port = free_port()
    server = RedisServer(port, spawn_redis(port, workdir), workdir)
    wait_until(server.ping, 15, "redis-server to answer PING")
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's Redis."""
    if not redis_server.ping():
        redis_server.start()
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")
    return redis_server.url


@dataclass
class Pod:
    pod_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    host: str = "127.0.0.1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        return stop_process(self.proc, timeout)


PodFactory = Callable[..., Pod]


def wait_ready(*pods: Pod, timeout: float = 20) -> None:
    """Until every pod answers /readyz; pods started with ``wait_ready=False`` come up
    side by side this way."""
    names = " and ".join(p.pod_id for p in pods)
    wait_until(lambda: all(p.ready() for p in pods), timeout, f"{names} ready")


@pytest.fixture()
def start_pod(tmp_path: Path) -> Iterator[PodFactory]:
    """``start_pod(redis_url=None, pod_id="pod-1", args=[...], env={...}) -> Pod``."""
    pods: list[Pod] = []

    def start(
        redis_url: str | None = None,
        pod_id: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
    ) -> Pod:
        pod_id = pod_id or f"pod-{len(pods) + 1}"
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "signaling",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--pod-id",
            pod_id,
            *(args or []),
        ]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALING_")}
        full_env.update(env or {})
        log = tmp_path / f"{pod_id}-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT
            )
        pod = Pod(pod_id, port, proc, log)
        pods.append(pod)
        if wait_ready:

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{pod_id} exited: {log.read_text()[-2000:]}")
                return pod.ready()

            wait_until(up, 20, f"{pod_id} /readyz")
        return pod

    yield start
    for pod in pods:
        pod.terminate(timeout=15)
