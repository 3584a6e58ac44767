"""``make demo``: the whole system on the local cluster, watched live.

``python -m devcluster.demo up`` starts the local control plane (when not up), applies
``manifests/`` and ``manifests/samples/`` as shipped (namespace ``roomwire``), waits for
every Deployment and the sample rooms, then starts beside the cluster:

- simulated participants (``participants``, below) that join the sample rooms through
  the signaling Service and keep signaling: each relays a candidate to a peer of its
  room every second, and follows the server's ``reconnect`` and ``migrate`` orders;
- the live view (``devcluster.liveview``) of the namespace;
- Prometheus (Debian's, when installed) with ``deploy/prometheus/prometheus.yaml``, its
  targets kept fresh by ``deploy/prometheus/targets.py``;

and prints the URLs to open. ``scale-out`` adds a 300-seat room, so that the operator
scales out and then rebalances (watch it in the live view). ``down`` stops everything
``up`` started, by recorded process id, then the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import control_plane
from .procs import ProcRef, spawn

NS = "roomwire"
ROOMS = {"boardroom": 10, "huddle-2": 4}  # sample rooms -> simulated participants
SAMPLE_PHASES = {"all-hands": "Idle", "boardroom": "Ready", "huddle-2": "Ready"}
LIVEVIEW_PORT = 8090
PROMETHEUS_PORT = 9091
DEPLOYMENTS = ("meetingroom-operator", "redis", "signaling")
SCALE_OUT_ROOM = {
    "apiVersion": "rtc.roomwire.io/v1alpha1",
    "kind": "MeetingRoom",
    "metadata": {"name": "town-hall", "namespace": NS},
    "spec": {"displayName": "Town hall", "capacity": 300},
}


class DemoError(Exception):
    pass


def _demo_dir(state: Path) -> Path:
    return state / "demo"


def _wait(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def service_address(info: control_plane.ClusterInfo, name: str, port: int) -> str:
    """host:port where the local service proxy serves a Service port of the namespace."""

    def lookup() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{info.proxy_admin}/services", timeout=5) as r:
                table = json.loads(r.read())
        except OSError:
            return None
        for p in (table.get(f"{NS}/{name}") or {}).get("ports") or []:
            if p["port"] == port:
                return str(p["address"])
        return None

    found: str = _wait(lookup, 60, f"the service proxy to serve {NS}/{name}:{port}")
    return found


def up(state: Path, say: Callable[[str], None] = print) -> dict[str, str]:
    started = time.monotonic()
    root = control_plane.REPO_ROOT
    if (_demo_dir(state) / "demo.json").exists():
        raise DemoError("a demo is running already: `make demo-down` first")
    info = (
        control_plane.ClusterInfo.load(state)
        if control_plane.is_up(state)
        else control_plane.up(state, say=say)
    )
    kube = info.kube()
    kubectl = str(info.kubectl or control_plane.binaries(build=False)["kubectl"])

    def run(*args: str) -> str:
        out = subprocess.run(
            [kubectl, f"--kubeconfig={info.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    say(run("apply", "-k", str(root / "manifests")).strip())
    run("wait", "--for=condition=Established", "crd/meetingrooms.rtc.roomwire.io", "--timeout=60s")
    say(run("apply", "-k", str(root / "manifests" / "samples")).strip())
    run("-n", NS, "wait", "deployment", "--all", "--for=condition=Available", "--timeout=120s")

    def rooms_ready() -> bool:
        got = kube.get(f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{NS}/meetingrooms")
        phases = {o["metadata"]["name"]: (o.get("status") or {}).get("phase") for o in got["items"]}
        return all(phases.get(k) == v for k, v in SAMPLE_PHASES.items())

    _wait(rooms_ready, 90, "the sample rooms placed")
    signaling = service_address(info, "signaling", 80)
    redis = service_address(info, "redis", 6379)
    # Redis' ACL user (manifests/workload/redis.yaml), its password from the Secret.
    secret = kube.get(f"/api/v1/namespaces/{NS}/secrets/roomwire-redis")
    password = base64.b64decode(secret["data"]["password"]).decode()
    redis_url = f"redis://roomwire:{urllib.parse.quote(password, safe='')}@{redis}/0"

    demo = _demo_dir(state)
    logs = demo / "logs"
    procs: list[ProcRef] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    _, ref = spawn(
        "participants",
        [py, "-m", "devcluster.demo", "participants", "--url", f"ws://{signaling}/ws"],
        logs / "participants.log",
        env,
        root,
    )
    procs.append(ref)
    lv_port = int(os.environ.get("ROOMWIRE_LIVEVIEW_PORT", LIVEVIEW_PORT))
    _, ref = spawn(
        "liveview",
        [py, "-m", "devcluster.liveview", "--kubeconfig", str(info.kubeconfig),
         "--namespace", NS, "--redis-url", redis_url, "--port", str(lv_port)],
        logs / "liveview.log",
        env,
        root,
    )  # fmt: skip
    procs.append(ref)
    urls = {
        "demo page (through the signaling Service)": f"http://{signaling}/",
        "live view": f"http://127.0.0.1:{lv_port}/",
    }
    prometheus = shutil.which("prometheus")
    if prometheus:
        prom_port = int(os.environ.get("ROOMWIRE_PROMETHEUS_PORT", PROMETHEUS_PORT))
        _, ref = spawn(
            "prometheus-targets",
            [py, "deploy/prometheus/targets.py", "--kubectl", kubectl,
             "--kubeconfig", str(info.kubeconfig), "--namespace", NS, "--every", "5"],
            logs / "prometheus-targets.log",
            env,
            root,
        )  # fmt: skip
        procs.append(ref)
        _, ref = spawn(
            "prometheus",
            [prometheus, f"--config.file={root / 'deploy/prometheus/prometheus.yaml'}",
             f"--storage.tsdb.path={demo / 'prometheus'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            logs / "prometheus.log",
            env,
            root,
        )  # fmt: skip
        procs.append(ref)
        urls["Prometheus"] = f"http://127.0.0.1:{prom_port}/"
    else:
        say("prometheus is not installed (make deps installs it): the demo runs without it")
    (demo / "demo.json").write_text(
        json.dumps({"procs": [p.to_json() for p in procs], "urls": urls}, indent=1)
    )

    def answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    for name, url in urls.items():
        check = url + ("-/ready" if name == "Prometheus" else "")
        _wait(functools.partial(answers, check), 60, f"the {name} at {url}")
    say(f"\nRoomwire demo up in {time.monotonic() - started:.0f} s (namespace {NS}):")
    for name, url in urls.items():
        say(f"  {name:45} {url}")
    say(f"  kubectl:  .venv/bin/python -m devcluster kubectl -n {NS} get meetingrooms,pods")
    say("  a scale-out and the rebalance after it:  make demo-scale-out")
    say("  stop everything:  make demo-down")
    return urls


def down(state: Path, say: Callable[[str], None] = print) -> None:
    path = _demo_dir(state) / "demo.json"
    if path.exists():
        for p in json.loads(path.read_text())["procs"]:
            ref = ProcRef.from_json(p)
            ref.stop(grace=10)
            say(f"stopped {ref.name} (pid {ref.pid})")
        path.unlink()
    control_plane.down(state, say=say)


def scale_out(state: Path, say: Callable[[str], None] = print) -> None:
    info = control_plane.ClusterInfo.load(state)
    kube = info.kube()
    path = f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{NS}/meetingrooms/town-hall"
    kube.apply(SCALE_OUT_ROOM, path, manager="roomwire-demo")
    say("MeetingRoom town-hall (300 seats) applied: the operator scales out, then rebalances")


# ---- simulated participants -------------------------------------------------------------


async def participant(url: str, room: str, peer: str, peers: list[str], every: float) -> None:
    """Join, then relay a candidate to a peer of the room every ``every`` seconds; follow
    ``reconnect`` (resume through the Service) and ``migrate`` (resume at the given pod);
    a dropped connection resumes through the Service."""
    from signaling.client import Client, ClientError, Closed

    rng = random.Random(peer)
    client = Client(url)
    n = 0
    for attempt in range(1000):
        try:
            await client.connect(url)
            await client.join(room, peer)
            break
        except (ClientError, OSError, TimeoutError):
            await asyncio.sleep(min(0.2 * 2**attempt, 5))
    target: str | None = None
    while True:
        try:
            if target is not None:
                await client.resume(target)
                target = None
            await client.relay("candidate", rng.choice(peers), {"n": n})
            n += 1
            deadline = time.monotonic() + every * rng.uniform(0.5, 1.5)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = await client.recv(left)
                except TimeoutError:
                    break
                if frame.get("type") == "reconnect":
                    await asyncio.sleep(int(frame.get("after_ms", 0)) / 1000)
                    target = url
                    break
                if frame.get("type") == "migrate":
                    target = str(frame["url"])
                    break
        except Closed:
            target = url
            await asyncio.sleep(0.2)
        except (ClientError, OSError, TimeoutError):
            target = url
            await asyncio.sleep(1.0)


async def participants(url: str, rooms: dict[str, int], every: float, duration: float) -> None:
    tasks = []
    for room, count in rooms.items():
        peers = [f"{room}-p{i}" for i in range(count)]
        for peer in peers:
            others = [p for p in peers if p != peer]
            tasks.append(asyncio.create_task(participant(url, room, peer, others, every)))
            await asyncio.sleep(0.05)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster.demo", description=__doc__)
    parser.add_argument("--state", type=Path, default=None, help="cluster state folder")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="cluster, manifests, samples, participants, live view, Prometheus")
    sub.add_parser("down", help="stop everything `up` started, then the cluster")
    sub.add_parser("scale-out", help="add a 300-seat room: a scale-out and a rebalance")
    p = sub.add_parser("participants", help="(internal) simulated participants")
    p.add_argument("--url", required=True, help="ws:// URL of the signaling Service")
    p.add_argument("--every", type=float, default=1.0, help="seconds between relays")
    p.add_argument("--duration", type=float, default=4 * 3600, help="seconds, at most")
    ns = parser.parse_args(argv)
    state = ns.state or Path(os.environ.get("ROOMWIRE_CLUSTER_DIR", control_plane.DEFAULT_STATE))
    state = state.resolve()
    try:
        if ns.cmd == "up":
            up(state)
        elif ns.cmd == "down":
            down(state)
        elif ns.cmd == "scale-out":
            scale_out(state)
        elif ns.cmd == "participants":
            asyncio.run(participants(ns.url, ROOMS, ns.every, ns.duration))
    except (DemoError, control_plane.ClusterError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
