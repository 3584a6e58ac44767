"""``make demo`` as a person runs it: ``python -m devcluster.demo up``, the URLs it prints,
``scale-out``, then ``down``.

Real: its own local cluster (a state folder of its own, beside any other test's), the
shipped manifests and samples, the simulated participants, the live view and Debian's
Prometheus, all started by the demo itself. Only the ports of the live view and
Prometheus are chosen by the test (free ones), so that it runs beside a person's demo.

Checks: ``up`` prints its URLs within 3 minutes (the binaries cached); the demo page
answers through the Service; the live view shows the two pods, the sample rooms and
every participant connected; Prometheus scrapes the pods and the operator and counts the
same connections; ``scale-out`` shows as a scale and then a rebalance in the live view;
``down`` stops every process the demo started and the cluster.

Opt-in: ``-m cluster``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import control_plane, demo
from devcluster.procs import ProcRef
from tests.support import ROOT, free_port, wait_until

pytestmark = pytest.mark.cluster

PARTICIPANTS = sum(demo.ROOMS.values())
URL_LINE = re.compile(r"^\s+(demo page \(through the signaling Service\)|live view|Prometheus)\s+"
                      r"(http://\S+)$", re.M)  # fmt: skip


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read().decode()
    return json.loads(body) if "json" in r.headers.get("Content-Type", "") else body


def _try(url: str) -> Any:
    try:
        return _get(url)
    except (OSError, ValueError):
        return None


@pytest.fixture()
def demo_env() -> Iterator[dict[str, str]]:
    state = control_plane.DEFAULT_STATE / f"demo-test-{os.getpid()}"
    env = {
        **os.environ,
        "ROOMWIRE_CLUSTER_DIR": str(state),
        "ROOMWIRE_LIVEVIEW_PORT": str(free_port()),
        "ROOMWIRE_PROMETHEUS_PORT": str(free_port()),
    }
    yield env
    subprocess.run(
        [sys.executable, "-m", "devcluster.demo", "down"],
        env=env, cwd=ROOT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    shutil.rmtree(state, ignore_errors=True)


def _demo(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "devcluster.demo", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    print(out.stdout[-3000:], out.stderr[-3000:])
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(600)
def test_make_demo_prints_its_urls_shows_a_scale_out_and_stops_everything(
    demo_env: dict[str, str],
) -> None:
    started = time.monotonic()
    printed = _demo(demo_env, "up")
    took = time.monotonic() - started
    urls = {m[1]: m[2] for m in URL_LINE.finditer(printed)}
    print(f"demo up in {took:.1f} s: {urls}")
    assert took <= 180
    page, view = urls["demo page (through the signaling Service)"], urls["live view"]
    assert "<html" in str(_get(page)).lower()

    def live(check: Any, timeout: float, what: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def ok() -> bool:
            state = _try(view + "api/state")
            seen.update(state or {})
            return bool(state and state["snapshot"] and check(state))

        wait_until(ok, timeout, f"{what} in the live view (last: {seen.get('snapshot')})", 0.5)
        return seen

    def all_connected(s: dict[str, Any]) -> bool:
        pods = s["snapshot"]["pods"]
        return len(pods) == 2 and sum(p["connections"] or 0 for p in pods) == PARTICIPANTS

    state = live(all_connected, 60, f"2 pods and {PARTICIPANTS} participants")

    def rooms_counted(s: dict[str, Any]) -> bool:
        """Sessions by room, summed over the pods (their session sets in Redis, read as
        the ACL user): each sample room's participants."""
        totals: dict[str, int] = {}
        for p in s["snapshot"]["pods"]:
            for room, n in (p["room_sessions"] or {}).items():
                totals[room] = totals.get(room, 0) + n
        return totals == demo.ROOMS

    live(rooms_counted, 30, "every participant in its room's count")
    homes = {r["name"]: r["home"] for r in state["snapshot"]["rooms"]}
    print("rooms on pods:", homes)
    assert set(homes) == {"all-hands", "boardroom", "huddle-2"} and all(homes.values())

    if "Prometheus" in urls:
        query = urllib.parse.urlencode({"query": "sum(roomwire_ws_connections)"})

        def scraped() -> bool:
            targets = _try(urls["Prometheus"] + "api/v1/targets")
            up = {
                t["labels"]["job"]
                for t in ((targets or {}).get("data") or {}).get("activeTargets") or []
                if t["health"] == "up"
            }
            got = _try(urls["Prometheus"] + f"api/v1/query?{query}")
            result = ((got or {}).get("data") or {}).get("result") or []
            value = int(float(result[0]["value"][1])) if result else None
            return up == {"roomwire-signaling", "roomwire-operator"} and value == PARTICIPANTS

        wait_until(scraped, 90, "Prometheus scraping pods and operator, counting everyone", 1)
        print(f"Prometheus counts {PARTICIPANTS} connections, {time.monotonic() - started:.1f} s")

    _demo(demo_env, "scale-out")

    def scaled_and_rebalanced(s: dict[str, Any]) -> bool:
        """Three pods, and a rebalance seen after the scale decision."""
        at = {d["kind"]: d["at"] for d in reversed(s["decisions"])}  # the newest of each
        scaled = [d["at"] for d in s["decisions"] if d["kind"] == "scale"]
        return (
            s["snapshot"]["replicas"] == 3
            and bool(scaled)
            and at.get("rebalance", 0) >= min(scaled)
        )

    # A rebalance waits for a wave still in flight (up to its 35 s deadline) and for the
    # skew to last 10 s: bounded generously for a loaded machine.
    state = live(scaled_and_rebalanced, 150, "the scale-out and the rebalance")
    print("decisions:", [d["text"] for d in state["decisions"]])

    demo_dir = Path(demo_env["ROOMWIRE_CLUSTER_DIR"]) / "demo"
    refs = [ProcRef.from_json(p) for p in json.loads((demo_dir / "demo.json").read_text())["procs"]]
    cluster = control_plane.ClusterInfo.load(Path(demo_env["ROOMWIRE_CLUSTER_DIR"])).procs
    _demo(demo_env, "down")
    left = [(r.name, r.pid) for r in [*refs, *cluster] if r.alive()]
    assert left == [], left
    assert _try(view + "healthz") is None
