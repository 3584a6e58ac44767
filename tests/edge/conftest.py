"""Fixtures for the edge tests: real ``signaling edge`` processes in front of real pods
(``signaling serve`` processes sharing a real Redis). Nothing is faked: devices are
WebSocket clients of an edge on loopback, remote participants clients of a pod."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Pod
from tests.workload.conftest import clients

__all__ = ["clients"]  # the workload tests' fixture: clients closed after the test
from tests.support import ROOT, free_port, stop_process, wait_until


@dataclass
class EdgeProc:
    room: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
            return str(r.read().decode())

    def status(self) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.get("/status"))
        return out

    def linked(self, devices: int) -> bool:
        s = self.status()
        return (
            bool(s["connected"])
            and s["devices"] == devices
            and s["queued"] == 0
            and s["attaching"] == 0
        )


EdgeFactory = Callable[..., EdgeProc]


@pytest.fixture()
def start_edge(tmp_path: Path) -> Iterator[EdgeFactory]:
    """``start_edge(room, upstream=[pod, ...], args=[...], upstream_urls=[...]) -> EdgeProc``:
    an edge of ``room`` whose upstream is those pods' ``/edge`` (or those URLs), in turn."""
    started: list[EdgeProc] = []

    def start(
        room: str,
        upstream: list[Pod] | None = None,
        args: list[str] | None = None,
        upstream_urls: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> EdgeProc:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "signaling",
            "edge",
            "--room",
            room,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--edge-id",
            f"edge-{room}",
            "--backoff-min",
            "0.05",
            "--backoff-max",
            "0.5",
            "--upstream-heartbeat",
            "2",
            *(args or []),
        ]
        urls = [f"ws://{p.host}:{p.port}/edge" for p in upstream or []] + (upstream_urls or [])
        if urls:
            cmd += ["--upstream", ",".join(urls)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALING_")}
        full_env.update(env or {})
        log = tmp_path / f"edge-{room}-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT
            )
        edge = EdgeProc(room, port, proc, log)
        started.append(edge)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"edge exited: {log.read_text()[-2000:]}")
            try:
                return edge.get("/healthz") == "ok\n"
            except OSError:
                return False

        wait_until(up, 20, f"edge of {room} /healthz")
        return edge

    yield start
    for edge in started:
        stop_process(edge.proc, 10)


def metric(pod: Pod, name: str) -> float:
    """A gauge's value from the pod's /metrics (no labels)."""
    status, text = pod.get("/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
