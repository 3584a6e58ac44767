"""The live view in a real browser, on the local cluster, against the pods' own numbers.

Real: the local control plane with the chart installed (``helm install``, samples on;
the signaling pods, the operator and Redis are real processes), WebSocket clients
through the signaling Service, ``python -m devcluster.liveview`` as a process, headless
Debian chromium (CDP). Nothing faked.

The page shows the two pods, their rooms and connections; a 300-seat room makes the
operator scale out to 3 pods, and the page shows the scale decision, the new pod and the
rebalance that follows. Then the page's numbers per pod (connections, sessions,
accepting, weight) equal what each pod's ``/metrics`` and the API say, and its sessions
by room (from the pod's session set in Redis) add up to the pod's sessions. A screenshot is
taken; with ``ROOMWIRE_UPDATE_SCREENSHOT=1`` it replaces ``docs/liveview.png``.

Opt-in: ``-m 'browser and cluster'``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devcluster.pytest_plugin import KubeCluster
from signaling.client import Client
from tests.helm.chart import CHART, Helm, build
from tests.operator.harness import Follower
from tests.support import ROOT, eventually, free_port, stop_process

from .cdp import Page
from .conftest import LaunchBrowser

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

SIGNALING = "app.kubernetes.io/name=signaling"
CLIENTS = 10
SCREENSHOT = ROOT / "docs" / "liveview.png"
GAUGE = re.compile(r"^(roomwire_ws_connections|roomwire_sessions) (\S+)$", re.M)

# What the page shows per pod, read from its data-field elements.
PAGE_PODS = """
Object.fromEntries([...document.querySelectorAll('#pods .pod')].map(c => {
  const f = n => (c.querySelector(`[data-field="${n}"]`) || {}).textContent;
  return [c.dataset.pod, {connections: f('connections'), sessions: f('sessions'),
    accepting: f('accepting'), weight: f('weight'),
    rooms: [...c.querySelectorAll('[data-room]')].map(r => r.dataset.room),
    here: Object.fromEntries([...c.querySelectorAll('[data-room-sessions]')]
      .map(r => [r.dataset.roomSessions, Number(r.dataset.n)]))}];
}))
"""


def _pod_truth(cluster: KubeCluster, ns: str) -> dict[str, dict[str, Any]]:
    """Per ready signaling pod: its own gauges (``/metrics``) and what the API says."""
    out: dict[str, dict[str, Any]] = {}
    for p in cluster.ready_pods(ns, SIGNALING):
        with urllib.request.urlopen(f"http://{cluster.local_ip(p)}:8080/metrics", timeout=2) as r:
            gauges = {m[1]: int(float(m[2])) for m in GAUGE.finditer(r.read().decode())}
        meta = p["metadata"]
        out[meta["name"]] = {
            "connections": str(gauges["roomwire_ws_connections"]),
            "sessions": str(gauges["roomwire_sessions"]),
            "accepting": "accepting"
            if meta["labels"].get("rtc.roomwire.io/accepting") == "true"
            else "not accepting",
            "weight": str((meta.get("annotations") or {}).get("rtc.roomwire.io/weight", "?")),
        }
    return out


async def _page_pods(page: Page) -> dict[str, dict[str, Any]]:
    got: dict[str, dict[str, Any]] = await page.evaluate(PAGE_PODS)
    return got


@pytest.mark.timeout(600)  # builds helm first when its cache lacks it (about 2 minutes)
async def test_live_view_shows_pods_rooms_a_scale_out_and_the_pods_own_numbers(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    launch_browser: LaunchBrowser,
    tmp_path: Path,
) -> None:
    kube_cluster.require_local()
    cl, ns = kube_cluster, kube_namespace
    helm = Helm(await asyncio.to_thread(build) / "helm", tmp_path / "helm", cl.kubeconfig)
    await asyncio.to_thread(
        helm.run, "install", "roomwire", str(CHART), "-n", ns, "--wait", "--timeout", "180s",
        "--set", "samples.enabled=true",
        "--set", "operator.extraEnv[0].name=ROOMWIRE_SKEW_PERSIST_S",
        "--set-string", "operator.extraEnv[0].value=3",
    )  # fmt: skip
    host, port = await asyncio.to_thread(cl.service_address, ns, "signaling", 80)
    rhost, rport = await asyncio.to_thread(cl.service_address, ns, "redis", 6379)
    # Redis' ACL user (the chart's generated password), as the pods log in.
    secret = await asyncio.to_thread(cl.kube.get, f"/api/v1/namespaces/{ns}/secrets/roomwire-redis")
    password = urllib.parse.quote(base64.b64decode(secret["data"]["password"]).decode(), safe="")
    redis_url = f"redis://roomwire:{password}@{rhost}:{rport}/0"
    url = f"ws://{host}:{port}/ws"
    lv_port = free_port()
    log = tmp_path / "liveview.log"
    with open(log, "wb") as out:
        view = subprocess.Popen(
            [sys.executable, "-m", "devcluster.liveview", "--kubeconfig", str(cl.kubeconfig),
             "--namespace", ns, "--redis-url", redis_url,
             "--port", str(lv_port), "--interval", "0.5"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    followers: list[Follower] = []
    try:
        for i in range(CLIENTS):
            c = Client(url)
            await c.connect()
            await c.join("boardroom", f"p{i}")
            f = Follower(c, url, "boardroom", f"p{i}")
            f.start()
            followers.append(f)
        browser = await launch_browser()
        page = await browser.new_page(f"http://127.0.0.1:{lv_port}/")
        await page.wait_for(
            "document.querySelectorAll('#pods .pod').length === 2 && document.querySelector("
            f"'header [data-field=connections]').textContent === '{CLIENTS}'",
            "two pods and every client on the page",
            30,
        )
        await page.wait_for(
            "document.querySelectorAll('#pods [data-room]').length === 3",
            "the three sample rooms on their home pods",
            30,
        )
        shown = await _page_pods(page)
        print("page, before the scale-out:", shown)
        homes = {room for pod in shown.values() for room in pod["rooms"]}
        assert {"boardroom", "huddle-2", "all-hands"} <= homes

        started = time.monotonic()
        room = {
            "apiVersion": "rtc.roomwire.io/v1alpha1",
            "kind": "MeetingRoom",
            "metadata": {"name": "town-hall", "namespace": ns},
            "spec": {"displayName": "Town hall", "capacity": 300},
        }
        await asyncio.to_thread(cl.apply, room)
        await page.wait_for(
            "[...document.querySelectorAll('#decisions li')].some(l => l.dataset.kind === 'scale')"
            " && document.querySelectorAll('#pods .pod').length === 3",
            "the scale decision and the third pod on the page",
            60,
        )
        print(f"scale-out on the page {time.monotonic() - started:.1f} s after the room")
        await page.wait_for(
            "[...document.querySelectorAll('#decisions li')]"
            ".some(l => l.dataset.kind === 'rebalance')",
            "the rebalance on the page",
            60,
        )
        print(f"rebalance on the page {time.monotonic() - started:.1f} s after the room")
        decisions = await page.evaluate(
            "[...document.querySelectorAll('#decisions li')].map(l => l.textContent)"
        )
        print("decisions on the page:", decisions)

        # The page's numbers are the pods' own: equal once the moves have settled and every
        # client is connected again (both sides read again until so, within a bound).
        async def agree() -> dict[str, Any] | None:
            truth = await asyncio.to_thread(_pod_truth, cl, ns)
            page_pods = await _page_pods(page)
            seen = {
                n: {k: v for k, v in p.items() if k not in ("rooms", "here")}
                for n, p in page_pods.items()
            }
            # sessions by room on each pod (its session set in Redis) add up to its gauge
            by_room = {n: str(sum(p["here"].values())) for n, p in page_pods.items()}
            if by_room != {n: p["sessions"] for n, p in truth.items()}:
                return None
            total = sum(int(p["connections"]) for p in truth.values())
            return truth if seen == truth and len(truth) == 3 and total == CLIENTS else None

        async def converged() -> bool:
            shown = [p["connections"] for p in (await _page_pods(page)).values()]
            if len(shown) != 3 or not all(str(c).isdigit() for c in shown):
                return False  # a pod not scraped yet shows "?"
            got = [int(c) for c in shown]
            return sum(got) == CLIENTS and max(got) - min(got) <= 1

        with contextlib.suppress(AssertionError):  # for the screenshot; agreement is checked
            await eventually(converged, 45, "the rebalance converged on the page", 0.5)
        truth = await eventually(agree, 30, "the page's numbers equal the pods' /metrics", 0.5)
        print("pods' /metrics and the API:", truth)
        here = {n: p["here"] for n, p in (await _page_pods(page)).items()}
        print("sessions by room on each pod, on the page:", here)
        assert all(set(rooms) == {"boardroom"} for rooms in here.values() if rooms), here
        moves = await page.evaluate("document.querySelector('[data-field=moves]').textContent")
        assert moves.isdigit(), moves  # Redis read (as its ACL user): moves in flight known
        chart_lines = await page.evaluate("document.querySelectorAll('#chart polyline').length")
        assert chart_lines == 3
        shot = await page.screenshot(tmp_path / "liveview.png")
        if os.environ.get("ROOMWIRE_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)
            print(f"screenshot written to {SCREENSHOT.relative_to(ROOT)}")
        assert shot.stat().st_size > 10_000
    finally:
        for f in followers:
            with contextlib.suppress(Exception):
                await f.client.send({"type": "leave"})
            await f.stop()
        stop_process(view, 10)
        print("live view log:", log.read_text()[-1500:])
        with contextlib.suppress(Exception):
            await asyncio.to_thread(helm.run, "uninstall", "roomwire", "-n", ns, check=False)
