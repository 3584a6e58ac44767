"""`make run` on a fresh clone serves the demo page and /ws.

Clones the committed repository into a temporary folder and runs the README's first
command there for real (it creates its own .venv), on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from signaling.client import Client
from tests.support import ROOT, free_port, stop_process, wait_until


async def test_make_run_on_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.fail("make and git are needed")
    clone = tmp_path / "roomwire"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    port = free_port()
    log = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALING_", "VIRTUAL_ENV"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "run", f"RUN_ARGS=--host 127.0.0.1 --port {port}"],
            cwd=clone,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:

        def serving() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(serving, 600, "make run to serve the demo page", every=0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
        assert "<html" in page.lower() and "roomwire" in page.lower()
        c = Client(f"ws://127.0.0.1:{port}/ws")
        try:
            await c.connect()
            reply = await c.join("make-run", "alice")
            assert reply["type"] == "joined"
        finally:
            await c.close()
        assert "OPEN DEVELOPMENT MODE" in log.read_text()
    finally:
        # make and the server it started share one process group, ours.
        stop_process(proc, 30, group=True)
