"""A real Nacos-protocol server for the Nacos tests: rnacos (crates.io), built once by
``cluster/build-rnacos.sh`` into the cache outside the repository (a fresh machine builds
it here, which takes minutes), run on free loopback ports with a temporary data folder.
Nothing about Nacos is faked; what is not Nacos's (the signaling pods) is real too.

rnacos runs with ``RNACOS_NAMING_INSTANCE_METADATA_PERSISTENCE_ENABLE=false``: with it on
(its default) the metadata an instance first registers with wins over every later
update from an SDK, so a pod's connections and draining would never change in Nacos.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, free_port, stop_process, wait_until

BUILD_TIMEOUT_S = 3600


def rnacos_binary() -> Path:
    """The cached rnacos, built first when missing (no test is skipped for want of it)."""
    out = subprocess.run(
        ["bash", str(ROOT / "cluster" / "build-rnacos.sh")],
        stdout=subprocess.PIPE,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=True,
    )
    binary = Path(out.stdout.strip().splitlines()[-1]) / "rnacos"
    assert binary.is_file(), binary
    return binary


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def nacos_ports() -> tuple[int, int, int]:
    """An HTTP port whose gRPC port (+1000, the Nacos clients' convention) is free too,
    and a free console port."""
    for _ in range(200):
        http = free_port()
        if http + 1000 < 65536 and port_free(http + 1000):
            return http, http + 1000, free_port()
    raise AssertionError("no free pair of ports P and P+1000 on loopback")


@dataclass
class Rnacos:
    binary: Path
    http_port: int
    grpc_port: int
    console_port: int
    workdir: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = Path(self.workdir) / "rnacos.log"

    @property
    def address(self) -> str:
        """What ``--nacos-server`` takes: the HTTP address."""
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """(Re)start on the same ports and data folder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RNACOS_")}
        env.update(
            RNACOS_HTTP_PORT=str(self.http_port),
            RNACOS_GRPC_PORT=str(self.grpc_port),
            RNACOS_HTTP_CONSOLE_PORT=str(self.console_port),
            RNACOS_SDK_HOST="127.0.0.1",
            RNACOS_CONSOLE_HOST="127.0.0.1",
            RNACOS_RAFT_NODE_ADDR=f"127.0.0.1:{self.grpc_port}",
            RNACOS_DATA_DIR=str(Path(self.workdir) / "data"),
            RNACOS_NAMING_INSTANCE_METADATA_PERSISTENCE_ENABLE="false",
            RNACOS_ENABLE_METRICS="false",
            RUST_LOG="warn",
        )
        with open(self.log, "ab") as out:
            # cwd: rnacos reads a .env file from its working folder.
            self.proc = subprocess.Popen(
                [str(self.binary)], env=env, cwd=self.workdir, stdout=out, stderr=out
            )
        wait_until(self.answers, 30, "rnacos to answer its open API")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rnacos exited: {self.log.read_text()[-2000:]}")
        try:
            self.get("/nacos/v1/ns/service/list", pageNo=1, pageSize=1)
            return port_open(self.grpc_port)
        except OSError:
            return False

    def get(self, path: str, **query: object) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read().decode()
        return json.loads(body) if body.startswith(("{", "[")) else body

    def publish_config(self, data_id: str, content: str, group: str = "DEFAULT_GROUP") -> None:
        """A config document through the open API (``POST /nacos/v1/cs/configs``), as the
        people running the system would publish it (console, CLI or CI)."""
        form = urllib.parse.urlencode(
            {"dataId": data_id, "group": group, "content": content, "type": "yaml"}
        ).encode()
        url = f"http://127.0.0.1:{self.http_port}/nacos/v1/cs/configs"
        with urllib.request.urlopen(urllib.request.Request(url, form), timeout=3) as r:
            assert r.read().decode().strip() == "true", f"rnacos refused config {data_id}"

    def instances(
        self, service: str = "roomwire-signaling", group: str = "DEFAULT_GROUP"
    ) -> list[dict[str, Any]]:
        """The open API's instance list (``/nacos/v1/ns/instance/list``), every instance."""
        try:
            data = self.get(
                "/nacos/v1/ns/instance/list",
                serviceName=service,
                groupName=group,
                healthyOnly="false",
            )
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no such service (yet)
                return []
            raise
        return list(data.get("hosts") or [])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Build rnacos (once, when missing) before any test runs: a cold build takes longer
    than a test's timeout, which would cover it inside a fixture."""
    if any("rnacos_bin" in getattr(item, "fixturenames", ()) for item in items):
        print(f"[rnacos] {rnacos_binary()}")


@pytest.fixture(scope="session")
def rnacos_bin() -> Path:
    return rnacos_binary()


@pytest.fixture()
def rnacos(rnacos_bin: Path) -> Iterator[Rnacos]:
    """A fresh rnacos per test (it starts in well under a second)."""
    workdir = tempfile.mkdtemp(prefix="rw-rnacos-")
    http, grpc, console = nacos_ports()
    server = Rnacos(rnacos_bin, http, grpc, console, workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
