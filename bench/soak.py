"""Soak (issue 12, item 10): steady cross-pod load for a long time, with joins, leaves,
resumes, rooms coming and going and a pod replaced every few minutes; the pods' RSS and
file descriptors and Redis's ``used_memory`` are sampled throughout and must stay flat.

    python -m bench.soak [--minutes 30] [--write | --no-write]     (``make soak``,
    ``SOAK_MINUTES=2 make soak`` for a short run)

What runs: one Debian ``redis-server`` and three ``signaling serve`` pods sharing it, on
loopback; one driver process (this one) holding ``ROOMS`` rooms of ``PEERS`` peers
spread over the pods. Every peer sends an ICE-candidate-sized relay, with an ``id``, to
another peer of its room about once a second, and a broadcast now and then. Meanwhile:

- a peer now and then leaves and another (a new peer id) joins in its place;
- a peer now and then loses its connection (the socket aborted, no close) and resumes,
  a moment later, at another pod;
- now and then a whole room ends (every peer leaves) and a new room starts in its place
  (an emptied room's history expires after ``--room-idle-ttl``, set to 60 s here);
- every ``--replace-every`` seconds a new pod is started, and once it is ready the
  oldest is stopped with SIGTERM: it drains (``reconnect`` to each client) and its
  clients resume on the others, as in a rolling update.

Clients (re)connect to the pod with the fewest of them, as a Service balanced by the
operator's weights would send them: every pod keeps about the same number of sessions,
so a pod's RSS and descriptors can be compared over its life.

Every ``--sample-every`` seconds: each running pod's RSS and open descriptors (from
``/proc``) and WebSocket connections (its ``/metrics``), Redis's ``used_memory``. After
the warm-up (a quarter of the run, at most 5 minutes; and each pod's first 60 s) the
slopes are fitted by least squares, per hour: per pod, and pooled over the pods with one
intercept per pod (pods come and go; the pooled slope is the growth within a pod's
life). Verdict against the bounds below (in runs of 10 minutes or more); the exit status
is 1 if one is exceeded, or if a peer saw a ``seq`` gap or repeat, or a resume found its
session gone, or a pod died.

Two settings differ from the defaults, both to make a bounded thing fill during the
warm-up rather than look like growth: ``--room-history 100`` (the default 1,000 events
would take ~16 minutes to fill at this broadcast rate; fewer in a run so short that its
warm-up is under 200 s; the bound itself is checked in ``tests/workload/test_budgets.py``)
and ``--room-idle-ttl 60``. A short run (``SOAK_MINUTES=2``) checks that everything
works (no gap, no repeat, every resume a resume, every pod exiting 0); its slopes,
fitted over a minute and a half, are printed and not judged. Results go to
``bench/RESULTS.md`` under "## Soak" for runs of 30 minutes or more (``--write`` for any).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tests.support import free_port, stop_process

from bench.results import write_section
from bench.workload_bench import OUT, Proc, raise_nofile, start_redis, wait_http, workload_version
from signaling.client import Client, ClientError, Closed

ROOMS = 30
PEERS = 4  # per room
RELAY_EVERY_S = 1.0  # per peer, with jitter
BROADCAST_CHANCE = 0.25  # per relay tick: about one broadcast a second per room
LEAVE_CHANCE = 1 / 600  # per tick: a peer leaves, a new one joins (~12 a minute)
DROP_CHANCE = 1 / 600  # per tick: a connection is lost, then resumed at another pod
ROOM_END_EVERY_S = 60.0
DRAIN_S = 5.0
POD_WARMUP_S = 60.0
# Bounds: growth per hour within a pod's life (pooled over pods) and of Redis.
BOUND_RSS_MB_H = 10.0
BOUND_FDS_H = 10.0  # descriptors beyond the pod's WebSocket connections
BOUND_REDIS_MB_H = 10.0
# Slopes are judged in runs this long or longer; a shorter run's are fitted over too
# little time past the warm-up to mean much (bounded things still filling read as
# growth), so they are printed but decide nothing.
JUDGE_SLOPES_MIN = 10.0
POD_FLAGS = ["--drain", str(DRAIN_S), "--room-idle-ttl", "60", "--log-level", "WARNING"]


def room_history(warmup_s: float) -> int:
    """Events a room keeps: 100, fewer in a short run, so that the history (about one
    broadcast a second a room) fills within half the warm-up."""
    return int(min(100, max(10, warmup_s / 2)))


def say(msg: str) -> None:
    print(f"[soak] {msg}", flush=True)


# ---- measuring ------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_info(port: int) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"INFO\r\n")
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            head += chunk
        size_line, _, data = head.partition(b"\r\n")
        size = int(size_line[1:])
        while len(data) < size + 2:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value
    return out


def ws_connections(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("roomwire_ws_connections "):
            return int(float(line.split()[1]))
    return None


def slope_per_hour(groups: list[list[tuple[float, float]]]) -> float | None:
    """Least-squares slope of value over time (seconds), per hour, with one intercept per
    group: the growth within each group, pooled. Groups of fewer than 3 points count not."""
    num = den = 0.0
    for points in groups:
        if len(points) < 3:
            continue
        mt = sum(t for t, _ in points) / len(points)
        mv = sum(v for _, v in points) / len(points)
        num += sum((t - mt) * (v - mv) for t, v in points)
        den += sum((t - mt) ** 2 for t, _ in points)
    return num / den * 3600 if den > 0 else None


# ---- the pods -------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    port: int
    proc: Proc
    started: float  # monotonic
    stopped: float | None = None
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Stats:
    relays: int = 0
    broadcasts: int = 0
    acks: int = 0
    received: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    joins: int = 0
    leaves: int = 0
    drops: int = 0
    resumes: int = 0
    drain_moves: int = 0
    room_ends: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    sessions_lost: int = 0  # a resume that found its session over (resumed: false)
    before_joined: int = 0  # frames that came before `joined` on a resume
    resume_failures: int = 0  # attempts that failed (pod gone meanwhile); retried
    closes: dict[str, int] = field(default_factory=dict)


class Soak:
    def __init__(self, minutes: float, replace_every: float, sample_every: float) -> None:
        self.duration = minutes * 60
        self.warmup = min(300.0, self.duration / 4)
        self.replace_every = replace_every
        self.sample_every = sample_every
        self.pods: list[Pod] = []  # every pod ever started
        self.serving: list[Pod] = []  # those clients may (re)connect to
        self.load: dict[str, int] = {}
        self.rooms = [f"room-{i}" for i in range(ROOMS)]
        self.members: dict[str, set[str]] = {r: set() for r in self.rooms}
        self.stats = Stats()
        self.samples: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.t0 = 0.0
        self.next_peer = 0
        self.redis: Proc | None = None
        self.redis_port = 0
        self.redis_url = ""
        self.session: aiohttp.ClientSession | None = None
        self.rng = random.Random(20261201)
        self.lost_log: list[str] = []
        self.traces: dict[str, list[str]] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- pods --

    def start_pod(self) -> Pod:
        name = f"pod-{len(self.pods) + 1}"
        port = free_port()
        argv = [sys.executable, "-m", "signaling", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--pod-id", name, "--redis-url", self.redis_url]
        argv += ["--room-history", str(room_history(self.warmup))]
        proc = Proc(f"soak-{name}", [*argv, *POD_FLAGS]).start()
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        pod = Pod(name, port, proc, time.monotonic())
        self.pods.append(pod)
        self.load[name] = 0
        return pod

    def pick(self, avoid: str | None = None) -> Pod:
        """The serving pod with the fewest clients (ties at random), not ``avoid``."""
        choices = [p for p in self.serving if p.name != avoid] or self.serving
        least = min(self.load[p.name] for p in choices)
        return self.rng.choice([p for p in choices if self.load[p.name] == least])

    async def replace_pods(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.replace_every)
                return
            new = await asyncio.to_thread(self.start_pod)
            old = self.serving.pop(0)
            self.serving.append(new)
            say(f"{self.now():6.0f}s: {new.name} ready; draining {old.name}")
            assert old.proc.proc is not None
            code = await asyncio.to_thread(stop_process, old.proc.proc, DRAIN_S + 20)
            old.stopped, old.exit_code = time.monotonic(), code
            say(f"{self.now():6.0f}s: {old.name} exited {code}")

    # -- sampling --

    async def sample(self) -> None:
        while not self.stop.is_set():
            t = self.now()
            row: dict[str, Any] = {"t": round(t, 1), "pods": {}}
            for pod in self.pods:
                if pod.stopped is not None or not pod.proc.alive():
                    continue
                try:
                    rss, fds = pod.proc.rss_kb(), fd_count(pod.proc.pid)
                except (OSError, RuntimeError):
                    continue
                conns = await asyncio.to_thread(ws_connections, pod.port)
                row["pods"][pod.name] = {
                    "age": round(time.monotonic() - pod.started, 1),
                    "rss_kb": rss,
                    "fds": fds,
                    "ws": conns,
                    "serving": pod in self.serving,
                    "clients": self.load[pod.name],
                }
            info = await asyncio.to_thread(redis_info, self.redis_port)
            row["redis_used_memory"] = int(info["used_memory"])
            row["redis_keys"] = sum(
                int(v.split(",")[0].split("=")[1]) for k, v in info.items() if k.startswith("db")
            )
            self.samples.append(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.sample_every)

    # -- peers --

    def new_peer(self) -> str:
        self.next_peer += 1
        return f"p{self.next_peer}"

    async def connect(self, c: Client, avoid: str | None = None) -> Pod:
        """Connect to the least loaded pod, another if that one is going away."""
        for _ in range(20):
            pod = self.pick(avoid)
            try:
                await c.connect(pod.url)
                return pod
            except (aiohttp.ClientError, OSError):
                self.stats.resume_failures += 1
                avoid = pod.name
                await asyncio.sleep(0.2)
        raise RuntimeError("no pod accepted a connection in 20 attempts")

    async def peer(self, slot: int) -> None:
        """One seat of a room: a peer that relays, broadcasts, sometimes loses its
        connection and resumes, sometimes leaves and is replaced, follows drains."""
        room_index = slot // PEERS
        rng = random.Random(slot)
        await asyncio.sleep(rng.random() * 3)
        while not self.stop.is_set():
            room = self.rooms[room_index]
            me = self.new_peer()
            c = Client("", session=self.session)
            pod = await self.connect(c)
            self.load[pod.name] += 1
            try:
                await c.join(room, me, timeout=10)
            except (ClientError, Closed, TimeoutError) as e:
                self.stats.errors[f"join: {e}"] = self.stats.errors.get(f"join: {e}", 0) + 1
                self.load[pod.name] -= 1
                await c.close()
                await asyncio.sleep(1)
                continue
            self.stats.joins += 1
            self.trace(me, f"joined {room} at {pod.name}")
            self.members[room].add(me)
            try:
                pod = await self.session_life(c, pod, room, me, rng, room_index)
            finally:
                self.members[room].discard(me)
                self.load[pod.name] -= 1
                with contextlib.suppress(Exception):
                    await c.close()

    def trace(self, peer: str, what: str) -> None:
        t = self.traces.setdefault(peer, [])
        t.append(f"{self.now():.1f} {what}")
        del t[:-12]

    def check_seq(self, frame: dict[str, Any], last: list[int | None]) -> None:
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return
        prev = last[0]
        if prev is not None:
            if seq <= prev:
                self.stats.seq_repeats += 1
            elif seq != prev + 1:
                self.stats.seq_gaps += 1
        last[0] = seq if prev is None else max(prev, seq)

    def handle(self, frame: dict[str, Any], last: list[int | None]) -> dict[str, Any] | None:
        """Count a frame; return it when it asks this peer to move (reconnect, migrate)."""
        self.check_seq(frame, last)
        kind = frame.get("type")
        if kind == "ack":
            self.stats.acks += 1
        elif kind == "error":
            code = str(frame.get("code"))
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        elif kind in ("candidate", "broadcast"):
            self.stats.received += 1
        elif kind in ("reconnect", "migrate"):
            return frame
        return None

    async def session_life(
        self, c: Client, pod: Pod, room: str, me: str, rng: random.Random, room_index: int
    ) -> Pod:
        """Until the peer leaves (by chance, its room ending, or the end of the run);
        returns the pod it was last connected to."""
        last: list[int | None] = [None]
        next_tick = time.monotonic() + rng.random() * RELAY_EVERY_S
        n = 0
        while not self.stop.is_set():
            move: dict[str, Any] | None = None
            lost = False
            try:
                frame = await c.recv(timeout=max(0.0, next_tick - time.monotonic()))
                move = self.handle(frame, last)
            except TimeoutError:
                pass
            except Closed as e:
                self.trace(me, f"closed {e.code}")
                key = str(e.code)
                self.stats.closes[key] = self.stats.closes.get(key, 0) + 1
                lost = True
            if move is None and not lost and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + RELAY_EVERY_S * (0.5 + rng.random())
                if self.rooms[room_index] != room or rng.random() < LEAVE_CHANCE:
                    with contextlib.suppress(Closed):
                        await c.send({"type": "leave"})
                        await c.wait_closed(5)
                    self.stats.leaves += 1
                    return pod
                if rng.random() < DROP_CHANCE:
                    self.stats.drops += 1
                    self.trace(me, "drop")
                    await c.abort()
                    lost = True
                else:
                    others = sorted(self.members[room] - {me})
                    n += 1
                    try:
                        if others:
                            to = rng.choice(others)
                            data = {"candidate": "candidate:1 1 UDP 2122 10.0.0.1 5000 typ host"}
                            await c.relay("candidate", to, {**data, "n": n}, frame_id=n)
                            self.stats.relays += 1
                        if rng.random() < BROADCAST_CHANCE:
                            await c.broadcast("chat", {"text": "x" * 100}, frame_id=f"b{n}")
                            self.stats.broadcasts += 1
                    except Closed:
                        lost = True
            if move is None and not lost:
                continue
            # Moving: after a drain's `reconnect` (at its time), a `migrate`, or a lost
            # connection (a moment later, as a client's back-off would).
            if move is not None:
                self.stats.drain_moves += 1
                self.trace(me, f"{move.get('type')} {move.get('after_ms')}")
                c.resume_token = move.get("resume") or c.resume_token
                await asyncio.sleep(min(float(move.get("after_ms", 0)) / 1000, DRAIN_S))
            else:
                await asyncio.sleep(0.2 + rng.random())
            pod = await self.resume(c, pod, last, "moved" if move is not None else "lost")
        return pod

    async def resume(self, c: Client, pod: Pod, last: list[int | None], why: str) -> Pod:
        """Close what is left of the connection, count what it delivered, resume at
        another pod; frames before ``joined`` are counted (none are expected)."""
        if c.ws is not None and not c.ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.ws.close(), 5)
        with contextlib.suppress(Exception):
            await c.wait_closed(5)
        while not c.inbox.empty():
            self.handle(c.inbox.get_nowait(), last)
        old = pod.name
        for _ in range(10):
            self.load[pod.name] -= 1
            pod = await self.connect(c, avoid=pod.name)
            self.load[pod.name] += 1
            try:
                await c.send(
                    {
                        "type": "join",
                        "room": c.room,
                        "peer": c.peer,
                        "role": c.role,
                        "resume": c.resume_token,
                        "last_seq": c.last_seq,
                        "last_rn": c.last_rn,
                    }
                )
                while True:
                    frame = await c.recv(timeout=10)
                    if frame.get("type") == "joined":
                        break
                    if frame.get("type") == "error":
                        raise ClientError(str(frame.get("code")))
                    self.stats.before_joined += 1
                    self.handle(frame, last)
            except (ClientError, Closed, TimeoutError) as e:
                self.trace(c.peer, f"resume at {pod.name} failed: {e!r}")
                self.stats.resume_failures += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.ws.close() if c.ws else asyncio.sleep(0), 5)
                await asyncio.sleep(0.5)
                continue
            c.joined, c.resume_token = frame, frame["resume"]
            self.stats.resumes += 1
            self.trace(c.peer, f"resumed {frame.get('resumed')} at {pod.name} ({why})")
            if not frame.get("resumed"):
                self.stats.sessions_lost += 1
                if len(self.lost_log) < 20:
                    self.lost_log.append(
                        f"{self.now():.1f}s {c.peer} {why} {old} -> {pod.name}: "
                        f"{self.traces.get(c.peer)}"
                    )
                last[0] = None
            return pod
        raise RuntimeError(f"{c.peer} could not resume in 10 attempts")

    async def end_rooms(self) -> None:
        """Now and then a room ends: its peers leave, a new room takes its place."""
        k = 0
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), ROOM_END_EVERY_S)
                return
            k += 1
            i = self.rng.randrange(ROOMS)
            new = f"room-{i}-{k}"
            self.members[new] = set()
            old, self.rooms[i] = self.rooms[i], new
            self.stats.room_ends += 1
            # The old room's members set goes once they have all left.
            asyncio.get_running_loop().call_later(30, self.members.pop, old, None)

    # -- the run --

    async def run(self) -> None:
        workdir = tempfile.mkdtemp(prefix="rw-soak-")
        self.redis_port = free_port()
        self.redis = start_redis(self.redis_port, workdir)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        try:
            for _ in range(3):
                self.serving.append(self.start_pod())
            # No pool limit: aiohttp's default (100 connections) would hold the 101st
            # WebSocket until another closed.
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            self.t0 = time.monotonic()
            say(
                f"{len(self.serving)} pods, {ROOMS} rooms x {PEERS} peers, "
                f"{self.duration / 60:g} min (warm-up {self.warmup:.0f} s), "
                f"a pod replaced every {self.replace_every:.0f} s"
            )
            tasks = [asyncio.create_task(self.peer(s)) for s in range(ROOMS * PEERS)]
            tasks += [
                asyncio.create_task(self.sample()),
                asyncio.create_task(self.replace_pods()),
                asyncio.create_task(self.end_rooms()),
            ]
            deadline = time.monotonic() + self.duration
            while time.monotonic() < deadline:
                await asyncio.sleep(min(60.0, max(0.0, deadline - time.monotonic())))
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise RuntimeError("a soak task failed") from t.exception()
                self.progress()
            self.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        finally:
            if self.session is not None:
                await self.session.close()
            for pod in self.pods:
                if pod.stopped is None:
                    assert pod.proc.proc is not None
                    pod.exit_code = stop_process(pod.proc.proc, DRAIN_S + 20)
                    pod.stopped = time.monotonic()
            self.redis.stop()

    def progress(self) -> None:
        last: dict[str, Any] = (
            self.samples[-1] if self.samples else {"pods": {}, "redis_used_memory": 0}
        )
        pods = ", ".join(
            f"{n} {p['rss_kb'] / 1024:.1f}MB/{p['fds']}fd/{p['ws']}ws"
            for n, p in last["pods"].items()
        )
        s = self.stats
        say(
            f"{self.now():6.0f}s: {pods}; redis {last['redis_used_memory'] / 2**20:.2f}MB; "
            f"relays {s.relays} acks {s.acks} received {s.received}; joins {s.joins} "
            f"resumes {s.resumes}; gaps {s.seq_gaps} repeats {s.seq_repeats} "
            f"lost {s.sessions_lost}"
        )

    # -- the verdict --

    def figures(self) -> dict[str, Any]:
        after = [r for r in self.samples if r["t"] >= self.warmup]
        rss: dict[str, list[tuple[float, float]]] = {}
        fds: dict[str, list[tuple[float, float]]] = {}
        raw_fds: dict[str, list[tuple[float, float]]] = {}
        for row in after:
            for name, p in row["pods"].items():
                if p["age"] < POD_WARMUP_S or p["ws"] is None or not p["serving"]:
                    continue
                rss.setdefault(name, []).append((row["t"], p["rss_kb"] / 1024))
                fds.setdefault(name, []).append((row["t"], p["fds"] - p["ws"]))
                raw_fds.setdefault(name, []).append((row["t"], p["fds"]))
        redis = [(r["t"], r["redis_used_memory"] / 2**20) for r in after]
        keys = [(r["t"], float(r["redis_keys"])) for r in after]
        per_pod = {
            name: {
                "minutes": round((pts[-1][0] - pts[0][0]) / 60, 1),
                "rss_mb": f"{pts[0][1]:.1f} -> {pts[-1][1]:.1f}",
                "rss_mb_per_h": _r(slope_per_hour([pts])),
                "fds": f"{raw_fds[name][0][1]:.0f} -> {raw_fds[name][-1][1]:.0f}",
                "fds_beyond_ws_per_h": _r(slope_per_hour([fds[name]])),
            }
            for name, pts in rss.items()
        }
        exits = {p.name: p.exit_code for p in self.pods}
        return {
            "minutes": self.duration / 60,
            "warmup_s": self.warmup,
            "samples": len(self.samples),
            "pods_started": len(self.pods),
            "pod_exit_codes": exits,
            "rss_mb_per_h_pooled": _r(slope_per_hour(list(rss.values()))),
            "fds_beyond_ws_per_h_pooled": _r(slope_per_hour(list(fds.values()))),
            "fds_per_h_pooled": _r(slope_per_hour(list(raw_fds.values()))),
            "redis_mb_per_h": _r(slope_per_hour([redis])),
            "redis_keys_per_h": _r(slope_per_hour([keys])),
            "redis_mb": f"{redis[0][1]:.2f} -> {redis[-1][1]:.2f}" if redis else "-",
            "redis_keys": f"{keys[0][1]:.0f} -> {keys[-1][1]:.0f}" if keys else "-",
            "per_pod": per_pod,
            "stats": self.stats.__dict__,
        }

    def verdict(self, f: dict[str, Any]) -> list[str]:
        s = self.stats
        failures = []
        checks = [
            ("pods' RSS", f["rss_mb_per_h_pooled"], BOUND_RSS_MB_H, "MB/h"),
            ("pods' fds beyond connections", f["fds_beyond_ws_per_h_pooled"], BOUND_FDS_H, "/h"),
            ("Redis used_memory", f["redis_mb_per_h"], BOUND_REDIS_MB_H, "MB/h"),
        ]
        for what, value, bound, unit in checks:
            if f["minutes"] < JUDGE_SLOPES_MIN:
                break
            if value is None or value > bound:
                failures.append(f"{what}: {value} {unit} (bound {bound})")
        if s.seq_gaps or s.seq_repeats:
            failures.append(f"seq gaps {s.seq_gaps}, repeats {s.seq_repeats}")
        if s.sessions_lost:
            failures.append(f"{s.sessions_lost} resumes found their session over")
        if s.before_joined:
            failures.append(f"{s.before_joined} frames before joined")
        bad_exit = {n: c for n, c in f["pod_exit_codes"].items() if c not in (0, None)}
        if bad_exit:
            failures.append(f"pods exited badly: {bad_exit}")
        return failures


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def report(soak: Soak, f: dict[str, Any], failures: list[str], load: str) -> str:
    s = soak.stats
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    cmd = "make soak" if "MAKELEVEL" in os.environ else "python -m bench.soak"
    lines = [
        "## Soak",
        "",
        f"`{cmd}` (`SOAK_MINUTES={f['minutes']:g}`), {when} UTC, {os.cpu_count()} CPUs, "
        f"load average at the end {load}; the pods ran {workload_version()}. "
        f"{len(soak.serving)} pods (`--room-history {room_history(soak.warmup)} "
        f"--room-idle-ttl 60 --drain {DRAIN_S:g}`) on one Redis, {ROOMS} rooms x {PEERS} "
        "peers relaying "
        f"~1 frame/s each plus ~1 broadcast/s per room, peers leaving and joining, "
        f"connections lost and resumed at another pod, a room ended every "
        f"{ROOM_END_EVERY_S:.0f} s, a pod replaced (SIGTERM, drain) every "
        f"{soak.replace_every / 60:g} min ({f['pods_started']} pods in all). Sampled every "
        f"{soak.sample_every:g} s; slopes fitted after a {f['warmup_s'] / 60:g}-min warm-up "
        f"(and each pod's first {POD_WARMUP_S:.0f} s), per hour, pooled over pods with "
        "one intercept each (`bench/soak.py` says how).",
        "",
        "| measure | slope | bound | over the run | |",
        "| --- | --- | --- | --- | --- |",
        f"| pods' RSS (pooled) | {f['rss_mb_per_h_pooled']} MB/h | {BOUND_RSS_MB_H:g} MB/h "
        f"| see per pod | {_ok(f['rss_mb_per_h_pooled'], BOUND_RSS_MB_H, f)} |",
        f"| pods' fds beyond their WebSockets (pooled) | {f['fds_beyond_ws_per_h_pooled']} /h "
        f"| {BOUND_FDS_H:g} /h | all fds: {f['fds_per_h_pooled']} /h "
        f"| {_ok(f['fds_beyond_ws_per_h_pooled'], BOUND_FDS_H, f)} |",
        f"| Redis used_memory | {f['redis_mb_per_h']} MB/h | {BOUND_REDIS_MB_H:g} MB/h "
        f"| {f['redis_mb']} MB | {_ok(f['redis_mb_per_h'], BOUND_REDIS_MB_H, f)} |",
        f"| Redis keys | {f['redis_keys_per_h']} /h | - | {f['redis_keys']} | |",
        "",
        "| pod | minutes judged | RSS (MB) | RSS slope (MB/h) | fds | fds beyond WS slope (/h) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in f["per_pod"].items():
        lines.append(
            f"| {name} | {p['minutes']} | {p['rss_mb']} | {p['rss_mb_per_h']} | {p['fds']} "
            f"| {p['fds_beyond_ws_per_h']} |"
        )
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "none"
    closes = ", ".join(f"{k} {v}" for k, v in sorted(s.closes.items())) or "none"
    lines += [
        "",
        f"Traffic: {s.relays} relays ({s.acks} acks for relays and broadcasts), "
        f"{s.broadcasts} broadcasts, {s.received} frames received; {s.joins} joins, "
        f"{s.leaves} leaves, {s.room_ends} rooms ended, {s.drops} connections lost and "
        f"{s.resumes} resumes ({s.drain_moves} of them after a drain's `reconnect`; "
        f"{s.resume_failures} attempts retried). Errors: {errors}. Closes seen: {closes}. "
        f"seq gaps {s.seq_gaps}, repeats {s.seq_repeats}; resumes that found the session "
        f"over {s.sessions_lost}; frames before `joined` {s.before_joined}. Pod exit codes: "
        + ", ".join(f"{n} {c}" for n, c in f["pod_exit_codes"].items())
        + ".",
        "",
        "Verdict: "
        + (
            f"slopes not judged (a run under {JUDGE_SLOPES_MIN:g} min); "
            if f["minutes"] < JUDGE_SLOPES_MIN
            else ""
        )
        + (
            ("flat, every bound met." if f["minutes"] >= JUDGE_SLOPES_MIN else "no failure.")
            if not failures
            else "; ".join(failures)
        ),
    ]
    return "\n".join(lines) + "\n"


def _ok(value: float | None, bound: float, f: dict[str, Any]) -> str:
    if f["minutes"] < JUDGE_SLOPES_MIN:
        return f"not judged (under {JUDGE_SLOPES_MIN:g} min)"
    return "met" if value is not None and value <= bound else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "30"))
    )
    parser.add_argument("--replace-every", type=float, default=None, help="seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md whatever")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args(argv)
    # Every 5 minutes in a long run; at least twice in a short one.
    replace_every = args.replace_every or min(300.0, args.minutes * 60 / 3)
    raise_nofile(8192)
    soak = Soak(args.minutes, replace_every, args.sample_every)
    asyncio.run(soak.run())
    for line in soak.lost_log:
        say(f"session over on resume: {line}")
    f = soak.figures()
    failures = soak.verdict(f)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps({"figures": f, "samples": soak.samples}))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    section = report(soak, f, failures, load)
    print(section, flush=True)
    if not args.no_write and (args.write or args.minutes >= 30):
        write_section("## Soak", section, before="## Edge")
        say("written to bench/RESULTS.md (## Soak)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
