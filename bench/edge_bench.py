"""Edge benchmark (issue 10): 100 rooms x 15 devices with an edge per room against the
same devices connected straight to the cloud, measured in one run, on one Redis and two
pods, on loopback.

    python -m bench.edge_bench [--quick] [--no-write]     (``make bench`` runs it)

The 100 edges run in one process (``tests/edge/edge_host.py``: the ``Edge`` class of
``signaling edge`` once per room, each its own port and upstream link); one edge of 15
devices is also run as its own ``signaling edge`` process for its RSS. One Python
driver (this process, aiohttp, orjson) drives both variants the same way.

1. Cloud connections: ``roomwire_ws_connections`` summed over the pods, 1,500 devices
   joined through edges or directly.
2. In-room traffic (projection and control signaling): each device sends ~200-byte
   candidates to the next device of its room, open loop at a total rate; cloud CPU
   (both pods and Redis, utime+stime from /proc) per delivered frame.
3. Device -> remote participant: one remote participant per room connected straight to
   the room's pod; each device sends it candidates at a total rate; cloud CPU per
   delivered frame, and latency p50/p99 (send and receipt on the driver's one clock):
   through the edge hop against straight to the cloud.
4. RSS of one edge process holding 15 joined devices.

Pods and edges run with their per-connection rate limit raised (``--rate 100000``): the
benchmark measures relay, not the limiter. Results go to ``bench/RESULTS.md`` under
"## Edge".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tests.support import free_port, wait_until

from bench.results import write_section
from bench.workload_bench import (
    OUT,
    ROOT,
    Proc,
    pct,
    raise_nofile,
    start_pod,
    start_redis,
    wait_http,
    workload_version,
)

ROOMS, DEVICES = 100, 15
FAST = {"rate": 100000, "rate_burst": 100000}


def say(msg: str) -> None:
    print(f"[edge-bench] {msg}", flush=True)


@dataclass
class Plan:
    rate: float = 3000.0  # frames per second, all devices together
    warmup_s: float = 2.0
    duration_s: float = 8.0


class Peer:
    """One WebSocket client: joins, then records what it receives."""

    def __init__(self, http: aiohttp.ClientSession, url: str, room: str, peer: str) -> None:
        self.http, self.url, self.room, self.peer = http, url, room, peer
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.got = 0
        self.lat: list[float] | None = None  # latencies (s) of frames received, when kept
        self.by_kind: dict[str, list[float]] = {}  # the same by the sender's kind
        self.kind = ""  # this peer's kind, sent along with its frames
        self.reader: asyncio.Task[None] | None = None

    async def join(self, role: str = "participant") -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        await self.ws.send_str(
            orjson.dumps(
                {"type": "join", "room": self.room, "peer": self.peer, "role": role}
            ).decode()
        )
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 30)
            f = orjson.loads(msg.data)
            if f["type"] == "joined":
                break
            if f["type"] == "error":
                raise RuntimeError(f"{self.peer}: {f}")
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if '"candidate"' not in msg.data[:30]:
                continue
            self.got += 1
            if self.lat is not None:
                data = orjson.loads(msg.data)["data"]
                took = time.perf_counter() - data["t"]
                self.lat.append(took)
                self.by_kind.setdefault(data.get("k", ""), []).append(took)

    async def send(self, to: str, i: int) -> None:
        assert self.ws is not None
        frame = {
            "type": "candidate",
            "to": to,
            "data": {
                "t": time.perf_counter(),
                "i": i,
                "k": self.kind,
                "candidate": "candidate:842163049 1 udp 1677729535 192.0.2.7 50000 typ srflx "
                "raddr 10.0.0.7 rport 50000 generation 0 ufrag EEtu network-cost 999",
            },
        }
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{name} not in /metrics")


async def blast(pairs: list[tuple[Peer, str]], rate: float, seconds: float) -> int:
    """Open loop: the pairs in turn, ``rate`` frames a second in 10-ms ticks."""
    sent, i, t0 = 0, 0, time.perf_counter()
    per_tick = rate / 100
    due = 0.0
    while (now := time.perf_counter()) - t0 < seconds:
        due += per_tick
        while due >= 1:
            peer, to = pairs[i % len(pairs)]
            await peer.send(to, i)
            i += 1
            sent += 1
            due -= 1
        await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - now)))
    return sent


async def measure(
    cloud: list[Proc], pairs: list[tuple[Peer, str]], receivers: list[Peer], plan: Plan
) -> dict[str, Any]:
    """Warm up, then one measured window: cloud CPU per frame delivered, latency."""
    await blast(pairs, plan.rate, plan.warmup_s)
    await asyncio.sleep(0.5)
    for r in receivers:
        r.got, r.lat = 0, []
    cpu0 = {p.name: p.cpu_s() for p in cloud}
    sent = await blast(pairs, plan.rate, plan.duration_s)
    deadline = time.monotonic() + 10
    while sum(r.got for r in receivers) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu = {p.name: round(p.cpu_s() - cpu0[p.name], 2) for p in cloud}
    got = sum(r.got for r in receivers)
    lat = sorted(x for r in receivers for x in (r.lat or []))
    for r in receivers:
        r.lat = None
    return {
        "sent": sent,
        "delivered": got,
        "cpu_s": cpu,
        "cpu_us_per_frame": round(sum(cpu.values()) / max(got, 1) * 1e6, 1),
        "p50_ms": round((pct(lat, 0.50) or 0) * 1000, 2),
        "p99_ms": round((pct(lat, 0.99) or 0) * 1000, 2),
    }


async def variant(
    name: str,
    urls: dict[str, str],
    pods: dict[str, int],
    home: dict[str, int],
    cloud: list[Proc],
    plan: Plan,
) -> dict[str, Any]:
    """1,500 devices joined at ``urls`` (room -> ws URL), then the two workloads."""
    out: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        devices = {r: [Peer(http, urls[r], r, f"d{d:02d}") for d in range(DEVICES)] for r in urls}
        remotes = {r: Peer(http, f"ws://127.0.0.1:{home[r]}/ws", r, "remote") for r in urls}
        t0 = time.monotonic()
        rooms = list(urls)
        for i in range(0, len(rooms), 10):
            await asyncio.gather(
                *(d.join("screen" if d.peer == "d00" else "participant")
                  for r in rooms[i : i + 10] for d in devices[r])
            )  # fmt: skip
        out["join_s"] = round(time.monotonic() - t0, 1)
        say(f"{name}: {ROOMS * DEVICES} devices joined in {out['join_s']} s")

        def settled() -> bool:
            return sum(metric(p, "roomwire_sessions") for p in pods.values()) == ROOMS * DEVICES

        await asyncio.to_thread(wait_until, settled, 60, "every device a session", 0.5)
        out["cloud_ws"] = sum(metric(p, "roomwire_ws_connections") for p in pods.values())
        out["cloud_sessions"] = sum(metric(p, "roomwire_sessions") for p in pods.values())
        ws, sessions = out["cloud_ws"], out["cloud_sessions"]
        say(f"{name}: cloud holds {ws:.0f} WebSockets, {sessions:.0f} sessions")
        ring = [(d, f"d{(i + 1) % DEVICES:02d}") for r in rooms for i, d in enumerate(devices[r])]
        out["in_room"] = await measure(cloud, ring, [d for r in rooms for d in devices[r]], plan)
        say(f"{name}: in-room {out['in_room']}")
        await asyncio.gather(*(p.join() for p in remotes.values()))
        up = [(d, "remote") for r in rooms for d in devices[r]]
        out["to_remote"] = await measure(cloud, up, list(remotes.values()), plan)
        say(f"{name}: to a remote participant {out['to_remote']}")
        if name == "edges":
            out["probe"] = await probe(http, rooms, devices, remotes, home, plan)
            say(f"{name}: latency probe {out['probe']}")
        await asyncio.gather(
            *(p.close() for ps in devices.values() for p in ps),
            *(p.close() for p in remotes.values()),
        )
    return out


def uss_mib(pid: int) -> float:
    """Memory only this process holds (private pages; shared libraries left out)."""
    kb = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb += int(line.split()[1])
    return kb / 1024


async def probe(
    http: aiohttp.ClientSession,
    rooms: list[str],
    devices: dict[str, list[Peer]],
    remotes: dict[str, Peer],
    home: dict[str, int],
    plan: Plan,
) -> dict[str, Any]:
    """The edge hop's latency, in one window: in 20 rooms a device behind the edge and a
    participant connected straight to the room's pod take turns sending to the room's
    remote participant, at a low rate, everything else idle."""
    some = rooms[:20]
    direct = {r: Peer(http, f"ws://127.0.0.1:{home[r]}/ws", r, "direct") for r in some}
    await asyncio.gather(*(p.join() for p in direct.values()))
    pairs: list[tuple[Peer, str]] = []
    for r in some:
        devices[r][1].kind, direct[r].kind = "edge", "direct"
        pairs += [(devices[r][1], "remote"), (direct[r], "remote")]
    receivers = [remotes[r] for r in some]
    await blast(pairs, 200, 1.0)
    await asyncio.sleep(0.5)
    for rcv in receivers:
        rcv.lat, rcv.by_kind = [], {}
    await blast(pairs, 200, plan.duration_s)
    await asyncio.sleep(0.5)
    out: dict[str, Any] = {}
    for kind in ("edge", "direct"):
        lat = sorted(x for rcv in receivers for x in rcv.by_kind.get(kind, []))
        out[kind] = {
            "n": len(lat),
            "p50_ms": round((pct(lat, 0.50) or 0) * 1000, 2),
            "p99_ms": round((pct(lat, 0.99) or 0) * 1000, 2),
        }
    for rcv in receivers:
        rcv.lat = None
    await asyncio.gather(*(p.close() for p in direct.values()))
    return out


def edge_rss(pod_port: int) -> dict[str, float]:
    """One ``signaling edge`` process: RSS empty and holding 15 joined devices (MiB),
    and its private memory (USS) then."""
    port = free_port()
    argv = [sys.executable, "-m", "signaling", "edge", "--room", "rss", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--upstream", f"ws://127.0.0.1:{pod_port}/edge"]
    argv += ["--log-level", "WARNING"]
    edge = Proc("edge-rss", argv).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", edge)
        time.sleep(1.0)
        empty = edge.rss_kb() / 1024

        async def fill() -> tuple[float, float]:
            async with aiohttp.ClientSession() as http:
                peers = [
                    Peer(http, f"ws://127.0.0.1:{port}/ws", "rss", f"d{i}") for i in range(DEVICES)
                ]
                for p in peers:
                    await p.join()
                for i, p in enumerate(peers):  # some traffic, so that buffers exist
                    for n in range(20):
                        await p.send(f"d{(i + 1) % DEVICES}", n)
                await asyncio.sleep(1.0)
                rss = edge.rss_kb() / 1024, uss_mib(edge.pid)
                await asyncio.gather(*(p.close() for p in peers))
                return rss

        full, uss = asyncio.run(fill())
        return {
            "empty_mib": round(empty, 1),
            "with_15_mib": round(full, 1),
            "uss_mib": round(uss, 1),
        }
    finally:
        edge.stop()


def run(plan: Plan) -> dict[str, Any]:
    raise_nofile(20000)
    res: dict[str, Any] = {"plan": plan.__dict__, "version": workload_version()}
    workdir = tempfile.mkdtemp(prefix="rw-edge-bench-")
    procs: list[Proc] = []
    try:
        rport = free_port()
        redis = start_redis(rport, workdir)
        procs.append(redis)
        url = f"redis://127.0.0.1:{rport}/0"
        pods = {n: free_port() for n in ("pod-1", "pod-2")}
        cloud = [redis] + [start_pod(n, p, url) for n, p in pods.items()]
        procs += cloud[1:]
        rooms = [f"room-{i:03d}" for i in range(ROOMS)]
        home = {r: list(pods.values())[i % 2] for i, r in enumerate(rooms)}
        # Straight to the cloud first: the devices at the room's pod.
        direct = {r: f"ws://127.0.0.1:{home[r]}/ws" for r in rooms}
        res["direct"] = asyncio.run(variant("direct", direct, pods, home, cloud, plan))
        wait_until(
            lambda: sum(metric(p, "roomwire_ws_connections") for p in pods.values()) == 0,
            60, "the direct devices gone", 0.5,
        )  # fmt: skip
        # Through edges: the same rooms, each edge linked to the room's pod.
        spec: list[dict[str, Any]] = [{"settings": FAST}]
        spec += [{"room": r, "upstream": f"ws://127.0.0.1:{home[r]}/edge"} for r in rooms]
        host = Proc("edge-host", [sys.executable, "-m", "tests.edge.edge_host", json.dumps(spec)])
        host.start()
        procs.append(host)
        wait_until(lambda: host.log.read_text().startswith("ready"), 60, "edge host", 0.2)
        ports = json.loads(host.log.read_text().splitlines()[0].split(" ", 1)[1])
        through = {r: f"ws://127.0.0.1:{ports[r]}/ws" for r in rooms}
        cpu0 = host.cpu_s()
        res["edges"] = asyncio.run(variant("edges", through, pods, home, cloud, plan))
        res["edges"]["edge_host_cpu_s"] = round(host.cpu_s() - cpu0, 1)
        host.stop()
        res["rss"] = edge_rss(next(iter(pods.values())))
        say(f"one edge process: {res['rss']}")
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(res: dict[str, Any], seconds: float) -> str:
    d, e, plan = res["direct"], res["edges"], res["plan"]
    pr = e["probe"]
    load = os.getloadavg()
    rows = [
        ("cloud WebSocket connections, 1,500 devices", d["cloud_ws"], e["cloud_ws"],
         ratio(e["cloud_ws"], d["cloud_ws"]), "1/15 (0.07x)",
         e["cloud_ws"] * DEVICES <= d["cloud_ws"]),
        ("cloud sessions", d["cloud_sessions"], e["cloud_sessions"], "-", "equal",
         d["cloud_sessions"] == e["cloud_sessions"]),
        ("in-room frames: cloud CPU per delivered frame (us)", d["in_room"]["cpu_us_per_frame"],
         e["in_room"]["cpu_us_per_frame"],
         ratio(e["in_room"]["cpu_us_per_frame"], d["in_room"]["cpu_us_per_frame"]), "<= 1.0x",
         e["in_room"]["cpu_us_per_frame"] <= d["in_room"]["cpu_us_per_frame"]),
        ("device -> remote: cloud CPU per delivered frame (us)", d["to_remote"]["cpu_us_per_frame"],
         e["to_remote"]["cpu_us_per_frame"],
         ratio(e["to_remote"]["cpu_us_per_frame"], d["to_remote"]["cpu_us_per_frame"]), "<= 1.0x",
         e["to_remote"]["cpu_us_per_frame"] <= d["to_remote"]["cpu_us_per_frame"]),
        ("device -> remote latency at 200 frames/s, same window: p50 (ms)",
         pr["direct"]["p50_ms"], pr["edge"]["p50_ms"],
         f"{pr['edge']['p50_ms'] - pr['direct']['p50_ms']:+.2f} ms (the edge hop)", "-", None),
        ("the same, p99 (ms)", pr["direct"]["p99_ms"], pr["edge"]["p99_ms"],
         f"{pr['edge']['p99_ms'] - pr['direct']['p99_ms']:+.2f} ms", "-", None),
        ("device -> remote latency at 3000 frames/s, p50 / p99 (ms)",
         f"{d['to_remote']['p50_ms']} / {d['to_remote']['p99_ms']}",
         f"{e['to_remote']['p50_ms']} / {e['to_remote']['p99_ms']}", "-", "-", None),
        ("in-room latency p50 / p99 (ms)",
         f"{d['in_room']['p50_ms']} / {d['in_room']['p99_ms']}",
         f"{e['in_room']['p50_ms']} / {e['in_room']['p99_ms']}", "-", "-", None),
    ]  # fmt: skip
    lines = [
        "## Edge",
        "",
        f"`python -m bench.edge_bench`, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} "
        f"CPUs, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"{seconds:.0f} s; the pods and edges ran {res['version']}.",
        "",
        f"Setup: one Redis, two pods (`signaling serve --rate 100000 --rate-burst 100000`); "
        f"{ROOMS} rooms of {DEVICES} devices, each room's devices on one pod (rooms "
        "alternating), either straight to that pod's `/ws` (direct) or through an edge per "
        "room linked to that pod's `/edge` (edges; the 100 edges in one process, "
        "`tests/edge/edge_host.py`, rate limit raised the same way). One Python driver "
        "(aiohttp, orjson) drives both. In-room: each device sends ~200-byte candidates to "
        f"the next device of its room; device -> remote: each room has one remote participant "
        f"on its pod and every device sends to it; open loop at {plan['rate']:.0f} frames/s "
        f"in total, {plan['warmup_s']:.0f} s warm-up, {plan['duration_s']:.0f} s measured. "
        "Cloud CPU: utime+stime of both pods and Redis in the window, over the frames "
        "delivered. Latency: send to receipt on the driver's clock (the driver shares "
        "the 2 cores with everything); the edge hop's own cost is read at 200 frames/s with "
        "the rest idle: in 20 rooms a device behind the edge and a participant straight on "
        "the room's pod take turns sending to the room's remote participant, in one window "
        f"({pr['edge']['n']} and {pr['direct']['n']} frames).",
        "",
        "| measure | direct | edges | edges / direct | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, a, b, r, target, met in rows:
        mark = "" if met is None else ("met" if met else "NOT met")
        lines.append(f"| {name} | {a} | {b} | {r} | {target} | {mark} |")
    rss = res["rss"]
    lines += [
        f"| RSS of one edge process (MiB): empty / holding {DEVICES} devices | - | "
        f"{rss['empty_mib']} / {rss['with_15_mib']} | - | < 40 MB | "
        f"{'met' if rss['with_15_mib'] * 1.048576 < 40 else 'NOT met'} |",
        f"| of which its own (USS: private pages, shared libraries left out), holding "
        f"{DEVICES} devices (MiB) | - | {rss['uss_mib']} | - | - | |",
        "",
        f"CPU seconds in the measured windows: direct in-room {d['in_room']['cpu_s']}, "
        f"to remote {d['to_remote']['cpu_s']}; edges in-room {e['in_room']['cpu_s']}, to "
        f"remote {e['to_remote']['cpu_s']}. Frames sent / delivered: direct "
        f"{d['in_room']['sent']}/{d['in_room']['delivered']} and "
        f"{d['to_remote']['sent']}/{d['to_remote']['delivered']}; edges "
        f"{e['in_room']['sent']}/{e['in_room']['delivered']} and "
        f"{e['to_remote']['sent']}/{e['to_remote']['delivered']}. The edge host (100 edges) "
        f"used {e['edge_host_cpu_s']} CPU-s over the whole edges variant (joins included). "
        f"1,500 devices joined in {d['join_s']} s direct, {e['join_s']} s through edges.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args(argv)
    plan = Plan(warmup_s=1, duration_s=3) if args.quick else Plan()
    t0 = time.monotonic()
    res = run(plan)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "edge.json").write_text(json.dumps(res, indent=1))
    section = report(res, time.monotonic() - t0)
    print(section, flush=True)
    if not args.no_write and not args.quick:
        path = write_section("## Edge", section, before="## Operator")
        say(f"results written to {path.relative_to(ROOT)} (## Edge)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
