"""Helpers shared by the tests and the benchmarks: a free loopback port, bounded waits,
stopping a process we started. Standard library only, so that ``bench`` imports it
without pytest; the fixtures built on them are in ``tests/conftest.py``.

The local cluster's own process helpers (``devcluster.procs``: processes found again by
PID and start time across commands) stay its own: what the tests and benchmarks start
are their children, stopped through their ``Popen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` just now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``check`` until it holds; bounded in time. Fails the test with ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.05
) -> Any:
    """Await ``check`` until it returns something truthy, and return that; bounded in
    time. Fails the test with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0, *, group: bool = False) -> int:
    """Stop a process we started: SIGTERM, up to ``grace`` seconds, then SIGKILL; return
    its exit code. With ``group`` (it was started with ``start_new_session=True``) the
    signals go to its process group, whose members that outlive the leader (a browser's
    helpers, a server started by ``make``) are killed at the end."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)  # the group id is the leader's pid
            else:
                proc.send_signal(sig)

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(5)
    if group:
        send(signal.SIGKILL)
    return int(proc.returncode)
