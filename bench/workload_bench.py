"""Workload benchmark (issue 2): Roomwire's signaling pods against socket.io 4 with
``@socket.io/redis-adapter``, a bare redis-py pub/sub hop and a bare aiohttp server,
all measured in the same run, on one Redis, on loopback.

    python -m bench.workload_bench [--quick] [--profile]     (``make bench`` runs it)

Every system is driven by the same Node driver (``bench/socketio/driver.mjs``): the
same 1:1 rooms, the same ~200-byte JSON frames (an ICE candidate), the same pacing,
latency read with one clock. Roomwire is spoken to with the ``ws`` package, socket.io
with ``socket.io-client`` (WebSocket transport only, no permessage-deflate on either).

1. Cross-pod relay, two pods, peer a of each room on pod 1 and peer b on pod 2:
   saturated throughput (closed loop, a window of frames in flight per direction),
   then p50/p99 latency at one offered rate for both systems (30% of the lower
   saturated throughput), beside a bare redis-py PUBLISH -> subscriber hop at that
   rate (the floor). Server CPU per delivered frame is read from /proc.
2. Same-pod relay: both peers on one pod, against a bare aiohttp WebSocket server that
   forwards each frame to the room's other connection (the framework's ceiling).
3. RSS per idle connection: 5,000 joined sessions (2,500 rooms of 2) on a fresh pod,
   (RSS after - RSS before) / 5,000; a bare aiohttp server and socket.io for reference.

Roomwire's per-connection rate limit (50 frames/s, burst 100 by default) is raised
with ``--rate 100000 --rate-burst 100000`` on the pods' command line: the benchmark
measures relay, not the limiter. Results go to ``bench/RESULTS.md`` under "## Workload".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port, stop_process, wait_until

from bench.results import write_section

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / ".out"
DRIVER = BENCH / "socketio" / "driver.mjs"
SIO_SERVER = BENCH / "socketio" / "server.mjs"
POD_FLAGS = ["--rate", "100000", "--rate-burst", "100000", "--log-level", "WARNING"]
# Latency is read at this fraction of the lower saturated throughput: well below the
# capacity of both systems, even when other work on the machine takes its share.
RATE_FRACTION = 0.3
SETTLE_S = 2.0
FINDINGS = BENCH / "workload_findings.md"
PROBE_S = 8.0  # ping probe of the idle pod: four heartbeats


def workload_version() -> str:
    """The commit the pods ran, and whether the workload tree differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "workload", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit"
    return f"commit {sha}" + (
        " with uncommitted changes (workload/, pyproject.toml)" if dirty else ""
    )


def command() -> str:
    """The command this run was started with, as a reader would retype it."""
    only = os.environ.get("BENCH_ONLY")
    if "MAKELEVEL" in os.environ:
        return (f"BENCH_ONLY={only} " if only else "") + "make bench"
    return "python -m bench.workload_bench " + " ".join(sys.argv[1:])


Result = dict[str, Any]


def say(msg: str) -> None:
    print(f"[workload-bench] {msg}", flush=True)


def raise_nofile(want: int = 65536) -> int:
    """Raise the open-file limit (inherited by every process started from here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- processes ------------------------------------------------------------------------


@dataclass
class Proc:
    """A process this benchmark started; stopped by its own pid only."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    def start(self) -> Proc:
        OUT.mkdir(parents=True, exist_ok=True)
        self.log = OUT / f"{self.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=self.env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float:
        """utime + stime of the process, in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited; see {self.log}")


def wait_http(url: str, proc: Proc, timeout: float = 40.0) -> None:
    def serving() -> bool:
        proc.check_alive()
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
        return False

    wait_until(serving, timeout, f"{proc.name} to serve {url}", every=0.2)


def wait_tcp(port: int, proc: Proc, timeout: float = 30.0) -> None:
    def listening() -> bool:
        proc.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    wait_until(listening, timeout, f"{proc.name} to listen on {port}", every=0.2)


def npm_install() -> None:
    lock = BENCH / "package-lock.json"
    stamp = BENCH / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: Node 20 (with npm) is needed for the baselines")
    say("npm ci (socket.io, @socket.io/redis-adapter, redis, socket.io-client, ws)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BENCH,
        check=True,
        timeout=300,
    )


def start_redis(port: int, workdir: str) -> Proc:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found (make deps installs Debian's)")
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", workdir, "--maxclients", "20000"]
    redis = Proc("redis", argv).start()
    wait_tcp(port, redis)
    return redis


def start_pod(name: str, port: int, redis_url: str, profile: Path | None = None) -> Proc:
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--pod-id", name]
    args += ["--redis-url", redis_url, "--drain", "1", *POD_FLAGS]
    if profile is not None:
        argv = [sys.executable, "-m", "bench.profile_pod", str(profile), *args]
    else:
        argv = [sys.executable, "-m", "signaling", *args]
    pod = Proc(name, argv).start()
    wait_http(f"http://127.0.0.1:{port}/readyz", pod)
    return pod


def start_sio(name: str, port: int, redis_url: str) -> Proc:
    node = shutil.which("node") or "node"
    sio = Proc(name, [node, str(SIO_SERVER), str(port), redis_url]).start()
    wait_http(f"http://127.0.0.1:{port}/healthz", sio)
    return sio


def start_bare(name: str, port: int) -> Proc:
    bare = Proc(name, [sys.executable, "-m", "bench.bare_echo", "--port", str(port)]).start()
    wait_tcp(port, bare)
    return bare


# ---- the driver -----------------------------------------------------------------------


def drive(cfg: dict[str, Any], watch: list[Proc], timeout: float = 120.0) -> Result:
    """One driver run; adds the CPU seconds each watched process spent in the measured
    window (the driver prints ``mark start`` and ``mark end`` at its edges)."""
    node = shutil.which("node") or "node"
    cfg = {"hardTimeoutS": timeout - 5, **cfg}
    # Let the previous run's closes (detaches, grace timers) finish first, so that their
    # work does not fall into the next run's measured window.
    time.sleep(SETTLE_S)
    t0 = time.monotonic()
    deadline = t0 + timeout
    marks: dict[str, list[float]] = {}
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as err:
        drv = subprocess.Popen(
            [node, str(DRIVER), json.dumps(cfg)],
            cwd=BENCH,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert drv.stdout is not None
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([drv.stdout], [], [], 1.0)
                if not ready:
                    continue
                line = drv.stdout.readline()
                if not line:
                    break
                if line.startswith("mark "):
                    marks[line.split()[1]] = [p.cpu_s() for p in watch]
                else:
                    lines.append(line)
            drv.wait(max(1.0, deadline - time.monotonic()))
        finally:
            if drv.poll() is None:
                drv.kill()
                drv.wait(5)
        err.seek(0)
        stderr = err.read()
    wall = time.monotonic() - t0
    if drv.returncode != 0 or not lines or "start" not in marks or "end" not in marks:
        raise RuntimeError(f"driver failed ({drv.returncode}): {stderr[-2000:]}")
    result: Result = json.loads(lines[-1])
    cpu = {p.name: b - a for p, a, b in zip(watch, marks["start"], marks["end"], strict=True)}
    result["cpu_s"] = cpu
    result["wall_s"] = wall
    result["cpu_us_per_msg"] = 1e6 * sum(cpu.values()) / max(1, int(result["received"]))
    return result


# ---- the floor: bare redis-py pub/sub --------------------------------------------------


async def redis_floor(url: str, rate: float, warmup_s: float, duration_s: float) -> Result:
    """PUBLISH ~200-byte JSON at ``rate`` on one connection, read them on another
    (redis-py asyncio, one process): the latency of the one Redis hop that every
    cross-pod relay needs."""
    import redis.asyncio as aioredis

    pub = aioredis.Redis.from_url(url)
    sub = aioredis.Redis.from_url(url)
    ps = sub.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe("bench:floor")
    pad = "x" * 150
    lat: list[float] = []
    received = 0
    start = time.perf_counter()
    measure_from, measure_to = start + warmup_s, start + warmup_s + duration_s
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal received
        while not done.is_set() or received < sent:
            msg = await ps.get_message(timeout=0.5)
            if msg is None:
                if done.is_set():
                    return
                continue
            now = time.perf_counter()
            t = json.loads(msg["data"])["t"]
            received += 1
            if measure_from <= now < measure_to:
                lat.append((now - t) * 1000)

    sent = 0
    task = asyncio.create_task(reader())
    while time.perf_counter() < measure_to:
        due = int(rate * (time.perf_counter() - start))
        while sent < due:
            sent += 1
            body = json.dumps({"t": time.perf_counter(), "i": sent, "pad": pad})
            await pub.publish("bench:floor", body)
        await asyncio.sleep(0.002)
    done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, 5)
    await ps.aclose()  # type: ignore[no-untyped-call]
    await pub.aclose()
    await sub.aclose()
    lat.sort()
    return {
        "system": "redis-py pub/sub",
        "rate": rate,
        "sent": sent,
        "received": received,
        "p50": pct(lat, 0.5),
        "p90": pct(lat, 0.9),
        "p99": pct(lat, 0.99),
        "max": lat[-1] if lat else None,
    }


def pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[i]


# ---- idle connections ------------------------------------------------------------------


async def ping_probe(url: str, seconds: float) -> Result:
    """Round trips of ``{"type":"ping"}`` on one connection, one every 5 ms: how long the
    pod's loop makes a client wait (heartbeats, collections and sweeps included)."""
    import aiohttp

    rtts: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(rtts) < 100_000:
            t0 = time.perf_counter()
            await ws.send_str('{"type":"ping"}')
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT or '"pong"' not in msg.data:
                raise RuntimeError(f"ping probe got {msg.type} {msg.data!r}")
            rtts.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
    rtts.sort()
    return {"pings": len(rtts), "p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99), "max": rtts[-1]}


def idle_rss(
    system: str, server: Proc, url: str, conns: int, settle_s: float = 2.0, probe_s: float = 0.0
) -> Result:
    """RSS of ``server`` before and with ``conns`` joined idle connections; with
    ``probe_s``, ping round trips on the empty server and then with those connections."""
    node = shutil.which("node") or "node"
    time.sleep(1.0)
    before = server.rss_kb()
    empty = asyncio.run(ping_probe(url, probe_s)) if probe_s else None
    loaded = None
    cfg = {
        "system": system,
        "urlsA": [url],
        "urlsB": [url],
        "rooms": conns // 2,
        "mode": "idle",
        "idleTimeoutS": 90,
        "hardTimeoutS": 150,
        "prefix": "idle",
    }
    drv = subprocess.Popen(
        [node, str(DRIVER), json.dumps(cfg)],
        cwd=BENCH,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert drv.stdout is not None and drv.stdin is not None
        ready, _, _ = select.select([drv.stdout], [], [], 120)
        line = drv.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"idle driver for {system} did not get ready")
        info = json.loads(line)
        time.sleep(settle_s)
        after = server.rss_kb()
        if probe_s:
            loaded = asyncio.run(ping_probe(url, probe_s))
        drv.stdin.write("close\n")
        drv.stdin.flush()
        drv.wait(30)
    finally:
        if drv.poll() is None:
            drv.kill()
            drv.wait(5)
    return {
        "system": system,
        "connections": conns,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_conn": (after - before) / conns,
        "connect_s": info.get("connectS"),
        "ping_empty": empty,
        "ping_loaded": loaded,
    }


# ---- the run ---------------------------------------------------------------------------


@dataclass
class Plan:
    rooms: int = 50
    window: int = 8
    warmup_s: float = 2.0
    duration_s: float = 6.0
    reps: int = 2
    idle_conns: int = 5000


def run(plan: Plan, profile_dir: Path | None, only: str = "") -> Result:
    nofile = raise_nofile()
    npm_install()
    results: Result = {"plan": plan.__dict__, "nofile": nofile, "version": workload_version()}
    redis_dir = tempfile.mkdtemp(prefix="rw-wl-bench-redis-")
    rport = free_port()
    procs: list[Proc] = []
    try:
        redis = start_redis(rport, redis_dir)
        procs.append(redis)
        rurl = f"redis://127.0.0.1:{rport}"
        say(f"redis on 127.0.0.1:{rport}; open-file limit {nofile}")

        # -- cross-pod ------------------------------------------------------------------
        ports = [free_port() for _ in range(4)]
        prof = (
            [None, None] if profile_dir is None else [profile_dir / f"pod{i}.prof" for i in (1, 2)]
        )
        pod1 = start_pod("rw-pod-1", ports[0], f"{rurl}/1", prof[0])
        pod2 = start_pod("rw-pod-2", ports[1], f"{rurl}/1", prof[1])
        sio1 = start_sio("sio-node-1", ports[2], f"{rurl}/0")
        sio2 = start_sio("sio-node-2", ports[3], f"{rurl}/0")
        procs += [pod1, pod2, sio1, sio2]
        ours_urls = ([f"ws://127.0.0.1:{ports[0]}/ws"], [f"ws://127.0.0.1:{ports[1]}/ws"])
        sio_urls = ([f"http://127.0.0.1:{ports[2]}"], [f"http://127.0.0.1:{ports[3]}"])
        common = {"rooms": plan.rooms, "warmupS": plan.warmup_s, "durationS": plan.duration_s}
        for system, (ua, ub), watch in (
            ("roomwire", ours_urls, [pod1, pod2, redis]),
            ("socketio", sio_urls, [sio1, sio2, redis]),
        ):
            drive(
                {"rooms": plan.rooms, "warmupS": 1, "durationS": 2, "system": system,
                 "urlsA": ua, "urlsB": ub, "mode": "saturate", "window": plan.window,
                 "prefix": "warm"},
                watch,
            )  # fmt: skip
        say("warm-up runs done (not recorded)")
        sat: dict[str, list[Result]] = {"roomwire": [], "socketio": []}
        for rep in range(plan.reps):
            for system, (ua, ub), watch in (
                ("roomwire", ours_urls, [pod1, pod2, redis]),
                ("socketio", sio_urls, [sio1, sio2, redis]),
            ):
                r = drive(
                    {**common, "system": system, "urlsA": ua, "urlsB": ub, "mode": "saturate",
                     "window": plan.window, "prefix": f"sat{rep}"},
                    watch,
                )  # fmt: skip
                sat[system].append(r)
                say(
                    f"cross-pod saturated {system} #{rep + 1}: {r['throughput']:.0f} msg/s, "
                    f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                    f"{r['cpu_us_per_msg']:.0f} us CPU/msg (servers + Redis), "
                    f"lost {r['lost']}, errors {r['errors']}"
                )
        results["saturated"] = sat
        best = {s: max(rs, key=lambda r: float(r["throughput"])) for s, rs in sat.items()}
        rate = max(100.0, round(RATE_FRACTION * min(b["throughput"] for b in best.values()), -1))
        results["rate"] = rate
        # The bare aiohttp relay (both peers on it: one WebSocket hop in, one out, no
        # Redis) is paced too: the latency floor of any aiohttp server under this driver.
        bport = free_port()
        bare = start_bare("bare-aiohttp", bport)
        procs.append(bare)
        bare_url = [f"ws://127.0.0.1:{bport}/ws"]
        paced: dict[str, list[Result]] = {"roomwire": [], "socketio": [], "bare": [], "floor": []}
        for rep in range(plan.reps):
            for system, (ua, ub), watch in (
                ("roomwire", ours_urls, [pod1, pod2, redis]),
                ("socketio", sio_urls, [sio1, sio2, redis]),
                ("bare", (bare_url, bare_url), [bare]),
            ):
                r = drive(
                    {**common, "system": system, "urlsA": ua, "urlsB": ub, "mode": "rate",
                     "rate": rate, "prefix": f"rate{rep}"},
                    watch,
                )  # fmt: skip
                paced[system].append(r)
                say(
                    f"cross-pod at {rate:.0f} msg/s {system} #{rep + 1}: p50 {r['p50']:.2f} ms, "
                    f"p90 {r['p90']:.2f} ms, p99 {r['p99']:.2f} ms "
                    f"(delivered {r['received']}, lost {r['lost']})"
                )
            floor = asyncio.run(redis_floor(f"{rurl}/4", rate, plan.warmup_s, plan.duration_s))
            paced["floor"].append(floor)
            say(
                f"redis-py pub/sub hop at {rate:.0f} msg/s #{rep + 1}: p50 {floor['p50']:.2f} ms,"
                f" p99 {floor['p99']:.2f} ms"
            )
        results["paced"] = paced
        for p in (sio1, sio2):
            p.stop()

        if only == "cross":
            return results

        # -- same pod -------------------------------------------------------------------
        same: dict[str, list[Result]] = {"roomwire": [], "bare": []}
        for rep in range(plan.reps):
            for system, url, watch in (
                ("roomwire", ours_urls[0], [pod1]),
                ("bare", bare_url, [bare]),
            ):
                r = drive(
                    {**common, "system": system, "urlsA": url, "urlsB": url,
                     "mode": "saturate", "window": plan.window, "prefix": f"same{rep}"},
                    watch,
                )  # fmt: skip
                same[system].append(r)
                say(
                    f"same-pod saturated {system} #{rep + 1}: {r['throughput']:.0f} msg/s, "
                    f"p99 {r['p99']:.1f} ms, {r['cpu_us_per_msg']:.0f} us CPU/msg"
                )
        results["same_pod"] = same
        for p in (pod1, pod2, bare):
            p.stop()

        # -- idle connections -----------------------------------------------------------
        idle: Result = {}
        iport = free_port()
        pod3 = start_pod("rw-pod-idle", iport, f"{rurl}/3")
        procs.append(pod3)
        idle["roomwire"] = idle_rss(
            "roomwire", pod3, f"ws://127.0.0.1:{iport}/ws", plan.idle_conns, probe_s=PROBE_S
        )
        pod3.stop()
        bport2 = free_port()
        bare2 = start_bare("bare-aiohttp-idle", bport2)
        procs.append(bare2)
        idle["bare"] = idle_rss("bare", bare2, f"ws://127.0.0.1:{bport2}/ws", plan.idle_conns)
        bare2.stop()
        sport = free_port()
        sio3 = start_sio("sio-node-idle", sport, f"{rurl}/0")
        procs.append(sio3)
        idle["socketio"] = idle_rss("socketio", sio3, f"http://127.0.0.1:{sport}", plan.idle_conns)
        sio3.stop()
        for name, r in idle.items():
            say(
                f"idle {name}: {r['connections']} connections, RSS {r['rss_before_kb'] / 1024:.1f}"
                f" -> {r['rss_after_kb'] / 1024:.1f} MiB = {r['kb_per_conn']:.1f} KiB/conn"
            )
        for when in ("ping_empty", "ping_loaded"):
            pr = idle["roomwire"][when]
            say(
                f"ping probe, {when}: p50 {pr['p50']:.2f} ms, p99 {pr['p99']:.2f} ms, "
                f"max {pr['max']:.1f} ms ({pr['pings']} pings)"
            )
        results["idle"] = idle
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
        if profile_dir is not None:
            for i in (1, 2):
                path = profile_dir / f"pod{i}.prof"
                if path.exists():
                    say(f"profile of pod {i} (CPU time), top by own time:")
                    pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)
    return results


# ---- report ----------------------------------------------------------------------------


def ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def report(res: Result, seconds: float) -> str:
    sat, paced, same, idle = res["saturated"], res["paced"], res["same_pod"], res["idle"]

    def best(rs: list[Result]) -> Result:
        return max(rs, key=lambda r: float(r["throughput"]))

    ours_t, sio_t = best(sat["roomwire"]), best(sat["socketio"])
    same_t, bare_t = best(same["roomwire"]), best(same["bare"])

    def calm(rs: list[Result]) -> Result:
        return min(rs, key=lambda r: float(r["p99"]))

    ours_p, sio_p, floor = calm(paced["roomwire"]), calm(paced["socketio"]), calm(paced["floor"])
    bare_p = calm(paced["bare"])

    def p99s(rs: list[Result]) -> str:
        return ", ".join(f"{r['p99']:.1f}" for r in rs)

    thr_ratio = ours_t["throughput"] / sio_t["throughput"]
    p99_sio = ours_p["p99"] / sio_p["p99"]
    p99_floor = ours_p["p99"] / floor["p99"]
    same_ratio = same_t["throughput"] / bare_t["throughput"]
    kb = idle["roomwire"]["kb_per_conn"]
    pe, pl = idle["roomwire"]["ping_empty"], idle["roomwire"]["ping_loaded"]
    all_thr = ", ".join(f"{r['throughput']:.0f}" for r in sat["roomwire"])
    all_sio = ", ".join(f"{r['throughput']:.0f}" for r in sat["socketio"])
    load = os.getloadavg()
    plan = res["plan"]
    lines = [
        "## Workload",
        "",
        f"`{command().strip()}`, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; the whole "
        f"workload part took {seconds:.0f} s; the pods ran {res['version']}. Numbers are "
        "noisy: every process of the run shares the 2 cores, and so does whatever else the "
        "machine runs; see the runs of the day below for the spread.",
        "",
        "Setup: one Debian `redis-server` on loopback; Roomwire pods are "
        "`python -m signaling serve --redis-url ... --rate 100000 --rate-burst 100000 "
        "--drain 1` (the per-connection rate limit, 50 frames/s by default, is raised so "
        "that relay, not the limiter, is measured; a short drain only makes stopping "
        "quick); the baseline is two Node processes of socket.io 4 "
        "with `@socket.io/redis-adapter` on the same Redis (`bench/socketio/server.mjs`). "
        f"{plan['rooms']} rooms of 2 peers (peer a on pod 1, peer b on pod 2), ~200-byte "
        "JSON frames (an ICE candidate) in both directions. One Node driver "
        "(`bench/socketio/driver.mjs`) drives every system the same way: `ws` for "
        "Roomwire and the bare server, `socket.io-client` (WebSocket transport) for "
        "socket.io, permessage-deflate off everywhere, sender and receiver in one process "
        "so that latency is read on one clock. Why this is fair: the same driver code, "
        'connections, rooms, frame (socket.io adds its ~12-byte `42["relay",...]` '
        "framing) and pacing; no acks on either side; both servers stamp `from` and route "
        "through Redis pub/sub. Roomwire also stamps `seq` and keeps its resume records "
        "(its features; socket.io has none of them), and the redis-adapter sends every "
        "frame to every node (its design). Saturated: each direction keeps "
        f"{plan['window']} frames in flight; {plan['warmup_s']:.0f} s warm-up, "
        f"{plan['duration_s']:.0f} s measured, {plan['reps']} alternating runs per "
        "system, the best kept (highest throughput; for latency the lowest p99). "
        "Latency: an open-loop offered load of "
        f"{res['rate']:.0f} msg/s ({RATE_FRACTION:.0%} of the lower saturated throughput) "
        "for both systems and for the floor. CPU per message: utime+stime of the server "
        "processes and Redis in the measured window, divided by the frames delivered in it. "
        "Before anything is recorded, each system gets one unrecorded 3-s saturated run "
        "(Node's JIT and every cache warm).",
        "",
        "| measure | Roomwire | baseline | ratio | target | |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| cross-pod throughput, saturated (msg/s) | {ours_t['throughput']:.0f} "
        f"(runs: {all_thr}) | socket.io {sio_t['throughput']:.0f} (runs: {all_sio}) | "
        f"{thr_ratio:.2f}x | >= 1.0x | {ok(thr_ratio >= 1.0)} |",
        f"| cross-pod p50 / p99 at saturation (ms) | {ours_t['p50']:.1f} / "
        f"{ours_t['p99']:.1f} | socket.io {sio_t['p50']:.1f} / {sio_t['p99']:.1f} | - | - | |",
        f"| CPU per delivered frame, servers + Redis, saturated (us) | "
        f"{ours_t['cpu_us_per_msg']:.0f} | socket.io {sio_t['cpu_us_per_msg']:.0f} | "
        f"{ours_t['cpu_us_per_msg'] / sio_t['cpu_us_per_msg']:.2f}x | - | |",
        f"| cross-pod p50 at {res['rate']:.0f} msg/s (ms) | {ours_p['p50']:.2f} | "
        f"socket.io {sio_p['p50']:.2f}; Redis floor {floor['p50']:.2f} | "
        f"{ours_p['p50'] / sio_p['p50']:.2f}x | - | |",
        f"| cross-pod p99 at {res['rate']:.0f} msg/s (ms) vs socket.io | {ours_p['p99']:.2f} "
        f"(runs: {p99s(paced['roomwire'])}) | socket.io {sio_p['p99']:.2f} "
        f"(runs: {p99s(paced['socketio'])}) | {p99_sio:.2f}x | <= 1.0x | {ok(p99_sio <= 1.0)} |",
        f"| cross-pod p99 at {res['rate']:.0f} msg/s (ms) vs the Redis floor | "
        f"{ours_p['p99']:.2f} | redis-py pub/sub hop {floor['p99']:.2f} "
        f"(runs: {p99s(paced['floor'])}) | {p99_floor:.2f}x | "
        f"<= 3x | {ok(p99_floor <= 3.0)} |",
        f"| p99 at {res['rate']:.0f} msg/s (ms) of a bare aiohttp relay: one process, no "
        f"Redis, one hop in and one out (reference) | - | bare aiohttp {bare_p['p99']:.2f} "
        f"(runs: {p99s(paced['bare'])}; p50 {bare_p['p50']:.2f}) | "
        f"{bare_p['p99'] / floor['p99']:.2f}x the Redis floor | - | |",
        f"| same-pod throughput, saturated (msg/s) | {same_t['throughput']:.0f} | "
        f"bare aiohttp {bare_t['throughput']:.0f} | {same_ratio:.2f}x | - (ceiling) | |",
        f"| same-pod CPU per frame (us) | {same_t['cpu_us_per_msg']:.0f} | bare aiohttp "
        f"{bare_t['cpu_us_per_msg']:.0f} | "
        f"{same_t['cpu_us_per_msg'] / bare_t['cpu_us_per_msg']:.2f}x | - | |",
        f"| RSS per idle connection, {idle['roomwire']['connections']} joined sessions on "
        f"one pod (KiB) | {kb:.1f} ({idle['roomwire']['rss_before_kb'] / 1024:.0f} -> "
        f"{idle['roomwire']['rss_after_kb'] / 1024:.0f} MiB) | bare aiohttp "
        f"{idle['bare']['kb_per_conn']:.1f}; socket.io {idle['socketio']['kb_per_conn']:.1f} "
        f"| {kb / idle['bare']['kb_per_conn']:.2f}x bare | <= 25 KB | {ok(kb * 1.024 <= 25)} |",
        f"| ping round trip on that pod holding them, {PROBE_S:.0f} s (heartbeats included): "
        f"p50 / p99 / max (ms) | {pl['p50']:.2f} / {pl['p99']:.2f} / {pl['max']:.1f} | the "
        f"same pod empty {pe['p50']:.2f} / {pe['p99']:.2f} / {pe['max']:.1f} | "
        f"{pl['p99'] / pe['p99']:.2f}x (p99) | - | |",
        "",
        "CPU seconds per process in the measured window of the best saturated cross-pod "
        "runs: Roomwire "
        + ", ".join(f"{k} {v:.2f}" for k, v in ours_t["cpu_s"].items())
        + f" for {ours_t['received']} frames; socket.io "
        + ", ".join(f"{k} {v:.2f}" for k, v in sio_t["cpu_s"].items())
        + f" for {sio_t['received']} frames. The driver itself used "
        f"{ours_t.get('driverCpuS', 0):.2f} s and {sio_t.get('driverCpuS', 0):.2f} s of CPU in "
        "those runs (one Node process; it is the limit only if that nears the wall time, "
        f"{ours_t['wall_s']:.0f} s and {sio_t['wall_s']:.0f} s). The open-file limit was "
        f"raised to {res['nofile']} with setrlimit and inherited by every process.",
        "",
    ]
    if FINDINGS.exists():
        lines += [FINDINGS.read_text().rstrip("\n"), ""]
    return "\n".join(lines)


def write_results(section: str) -> None:
    path = write_section("## Workload", section, before="## Operator")
    say(f"results written to {path.relative_to(ROOT)} (## Workload)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 1,000 idle conns")
    parser.add_argument(
        "--profile", action="store_true", help="run the cross-pod pods under cProfile"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument(
        "--only-cross", action="store_true", help="cross-pod part only (with --profile)"
    )
    args = parser.parse_args(argv)
    plan = Plan()
    if args.quick:
        plan = Plan(warmup_s=1, duration_s=3, reps=1, idle_conns=1000)
    profile_dir = OUT if args.profile else None
    t0 = time.monotonic()
    res = run(plan, profile_dir, "cross" if args.only_cross else "")
    seconds = time.monotonic() - t0
    if args.only_cross:
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "workload.json").write_text(json.dumps(res, indent=1))
    section = report(res, seconds)
    print(section, flush=True)
    if not args.no_write and not args.quick:
        write_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
