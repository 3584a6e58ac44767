"""A fuzzer against running servers in Redis mode: generated and mutated frames from many
connections at once to two real pods sharing a real Redis, while a bystander pair keeps
signaling across the pods. Afterwards: no crash, both pods healthy and relaying, file
descriptors back to where they were, memory (the pods' RSS, Redis's) not growing with
the frames sent. The figures are printed (``pytest -s``).

``ROOMWIRE_FUZZ_FRAMES`` sets the number of frames (100,000 by default; ``make fuzz``
runs a million), ``ROOMWIRE_FUZZ_SEED`` the seed (the same frames every run by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from signaling.client import Client, Closed
from tests.conftest import Pod, PodFactory, wait_ready

FRAMES = int(os.environ.get("ROOMWIRE_FUZZ_FRAMES", "100000"))
SEED = int(os.environ.get("ROOMWIRE_FUZZ_SEED", "20261201"))
WORKERS = 16
ROOMS = 4
MAX_FRAME = 64 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_used_memory(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"INFO memory\r\n")
        data = b""
        while b"used_memory:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


class Generator:
    """Frames a client might send, valid or not, and mutations of them."""

    def __init__(self, rng: random.Random, peers: list[str]) -> None:
        self.rng = rng
        self.peers = peers

    def valid(self, me: str) -> dict[str, Any]:
        r = self.rng
        kind = r.choice(["offer", "answer", "candidate", "broadcast", "control", "ping"])
        to = r.choice([p for p in self.peers if p != me] or ["nobody"])
        data: Any = {"sdp": "v=0 " + "x" * r.randint(0, 200), "n": r.randint(0, 10**6)}
        frame: dict[str, Any] = {"type": kind, "data": data}
        if kind in ("offer", "answer", "candidate"):
            frame["to"] = to
        if kind == "broadcast":
            frame["topic"] = r.choice(["chat", "whiteboard", "a" * 70, "", "x y"])
        if kind == "control" and r.random() < 0.5:
            frame["to"] = to
        if r.random() < 0.7:
            frame["id"] = r.choice([r.randint(0, 10**9), "id-" + str(r.random()), None])
        return frame

    def weird(self) -> dict[str, Any] | list[Any] | str | int:
        """Something odd, as an object (``str``: already the frame's text)."""
        r = self.rng
        pick = r.randrange(12)
        if pick == 0:
            return {"type": r.choice([1, None, [], {}, "JOIN", "offer\x00"])}
        if pick == 1:
            return {"type": "join", "room": r.choice(["", "a" * 200, 5]), "peer": "p"}
        if pick == 2:
            return {"type": "offer", "to": {"x": 1}, "data": []}
        if pick == 3:
            depth = r.choice([100, 300, 1000])
            return '{"type":"broadcast","topic":"t","data":' + "[" * depth + "1" + "]" * depth + "}"
        if pick == 4:
            return {"type": "candidate", "to": "p", "data": {"n": 2**80, "f": 1e308}}
        if pick == 5:
            return {"type": "leave", "data": None, "extra": "x" * r.randint(0, 1000)}
        if pick == 6:
            return [r.random() for _ in range(r.randint(0, 50))]
        if pick == 7:
            return "just a string"
        if pick == 8:
            return r.randint(-(10**20), 10**20)
        if pick == 9:
            return {"type": "ping", "id": "i" * r.choice([10, 129, 5000])}
        if pick == 10:
            return {"type": "join", "room": "r", "peer": "p", "role": "edge", "token": "x.y.z"}
        return {"type": "control", "data": {"k": "\u202e\ud7ff\U0001f600" * r.randint(1, 50)}}

    def mutate(self, text: str) -> str:
        r = self.rng
        how = r.randrange(6)
        if how == 0 and text:
            return text[: r.randrange(len(text))]
        if how == 1 and text:
            i = r.randrange(len(text))
            return (
                text[:i]
                + chr(r.choice([0, 34, 44, 58, 91, 93, 123, 125, 0x7F, 0xFFFD]))
                + text[i + 1 :]
            )
        if how == 2:
            return text + text
        if how == 3:
            return text.replace('"', "'", r.randint(1, 3))
        if how == 4:
            return " " * r.randint(0, 10) + text + "\n"
        return text.replace(":", "::", 1)

    def next(self, me: str) -> str | bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.55:
            return json.dumps(self.valid(me), separators=(",", ":"))
        if roll < 0.75:
            odd = self.weird()
            return odd if isinstance(odd, str) and odd.startswith("{") else json.dumps(odd)
        if roll < 0.93:
            return self.mutate(json.dumps(self.valid(me)))
        if roll < 0.97:
            return bytes(r.randrange(256) for _ in range(r.randint(0, 64)))
        return "{" * r.randint(1, 5000)  # unbalanced, or just under the size limit


def answers(frame_id: str, frame: dict[str, Any]) -> bool:
    return bool(frame.get("id") == frame_id)


class Fuzzer:
    def __init__(self, pods: list[Pod], frames: int, seed: int) -> None:
        self.pods = pods
        self.left = frames
        self.rng = random.Random(seed)
        self.sent = 0
        self.connections = 0
        self.closes: dict[int | None, int] = {}
        self.replies = 0
        self.answered = 0  # connections whose every frame was answered before closing

    async def worker(self, n: int) -> None:
        rng = random.Random(self.rng.random())
        room = f"fz{n % ROOMS}"
        me = f"w{n}"
        peers = [f"w{k}" for k in range(WORKERS) if k % ROOMS == n % ROOMS]
        gen = Generator(rng, peers)
        while self.left > 0:
            c = Client(rng.choice(self.pods).ws_url)
            self.connections += 1
            try:
                await c.connect()
                if rng.random() < 0.9:
                    await c.join(room, me, rng.choice(["participant", "controller", "screen"]))
                for _ in range(rng.randint(20, 400)):
                    if self.left <= 0:
                        break
                    self.left -= 1
                    frame = gen.next(me)
                    assert c.ws is not None
                    if isinstance(frame, bytes):
                        await c.ws.send_bytes(frame)
                    else:
                        await c.send_raw(frame)
                    self.sent += 1
                    if self.sent % 64 == 0:
                        await asyncio.sleep(0)  # let the readers run
                    while not c.inbox.empty():
                        c.inbox.get_nowait()
                        self.replies += 1
                # Everything sent was read and answered before the next connection: the
                # server echoes this frame's id in its error (no relay to oneself).
                end = f"end-{n}-{self.connections}"
                await c.send_raw(json.dumps({"type": "offer", "to": me, "data": {}, "id": end}))
                await c.recv_until(partial(answers, end), timeout=30)
                self.answered += 1
            except (Closed, ConnectionError, OSError, TimeoutError, AssertionError):
                pass
            except Exception as e:  # the client's own complaints about a dead socket
                if "closing" not in str(e) and "closed" not in str(e):
                    raise
            finally:
                code = c.close_code if c.ws is not None and c.ws.closed else None
                self.closes[code] = self.closes.get(code, 0) + 1
                with contextlib.suppress(Exception):
                    await c.close()


async def bystanders(pods: list[Pod], stop: asyncio.Event, rtts: list[float]) -> None:
    """Two peers on the two pods relaying a numbered candidate back and forth."""
    a, b = Client(pods[0].ws_url), Client(pods[1].ws_url)
    await a.connect()
    await b.connect()
    try:
        await a.join("calm", "a")
        await b.join("calm", "b")
        n = 0
        while not stop.is_set():
            t = time.perf_counter()
            await a.relay("candidate", "b", {"n": n})
            got = await b.recv_until(lambda f: f["type"] == "candidate", timeout=10)
            assert got["data"]["n"] == n
            rtts.append(time.perf_counter() - t)
            n += 1
            await asyncio.sleep(0.02)
    finally:
        await a.close()
        await b.close()


async def test_fuzzing_two_pods_crashes_nothing_and_grows_nothing(
    redis_url: str, start_pod: PodFactory
) -> None:
    limits = ["--rate", "100000", "--rate-burst", "100000", "--max-frame-bytes", str(MAX_FRAME)]
    pods = [start_pod(redis_url, f"pod-{i}", args=limits, wait_ready=False) for i in (1, 2)]
    await asyncio.to_thread(wait_ready, *pods)
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    pids = [p.proc.pid for p in pods]
    fds0 = [fds(pid) for pid in pids]
    fuzzer = Fuzzer(pods, FRAMES, SEED)

    # Warm up with a tenth of the frames, then measure memory over the rest.
    warm = Fuzzer(pods, FRAMES // 10, SEED + 1)
    await asyncio.gather(*(warm.worker(n) for n in range(WORKERS)))
    rss1 = [rss_kb(pid) for pid in pids]
    mem1 = redis_used_memory(redis_port)

    stop, rtts = asyncio.Event(), list[float]()
    calm = asyncio.get_running_loop().create_task(bystanders(pods, stop, rtts))
    t0 = time.monotonic()
    await asyncio.gather(*(fuzzer.worker(n) for n in range(WORKERS)))
    took = time.monotonic() - t0
    stop.set()
    await calm

    rss2 = [rss_kb(pid) for pid in pids]
    mem2 = redis_used_memory(redis_port)
    for p in pods:
        assert p.proc.poll() is None, f"{p.pod_id} crashed: {p.log.read_text()[-3000:]}"
        assert p.get("/healthz")[0] == 200
    # Every fuzz connection is closed: descriptors back to the start (a few may still be
    # closing), within a bounded wait.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        fds(pid) > f0 + 4 for pid, f0 in zip(pids, fds0, strict=True)
    ):
        await asyncio.sleep(0.2)
    fds2 = [fds(pid) for pid in pids]
    p99 = statistics.quantiles(rtts, n=100)[98] * 1000 if len(rtts) > 2 else 0.0
    report = {
        "frames": fuzzer.sent + warm.sent,
        "seconds": round(took, 1),
        "frames/s": round(fuzzer.sent / took),
        "connections": fuzzer.connections + warm.connections,
        "closes by code": dict(sorted(fuzzer.closes.items(), key=lambda kv: str(kv[0]))),
        "replies read": fuzzer.replies,
        "connections answered to the end": fuzzer.answered,
        "pod RSS MB after warm-up -> end": [
            f"{a / 1024:.1f} -> {b / 1024:.1f}" for a, b in zip(rss1, rss2, strict=True)
        ],
        "redis used_memory MB": f"{mem1 / 2**20:.1f} -> {mem2 / 2**20:.1f}",
        "fds start -> end": list(zip(fds0, fds2, strict=True)),
        "bystander relays": len(rtts),
        "bystander round trip p50/p99 ms": (
            round(statistics.median(rtts) * 1000, 1) if rtts else 0.0,
            round(p99, 1),
        ),
    }
    print("fuzz:", json.dumps(report, default=str))
    assert fuzzer.sent + warm.sent >= FRAMES
    assert all(f2 <= f0 + 4 for f0, f2 in zip(fds0, fds2, strict=True)), report
    # Memory does not grow with the frames: 90% of them add under 16 MB per pod and
    # 16 MB in Redis (kept history and boxes are bounded), whatever their number.
    assert all(b - a < 16 * 1024 for a, b in zip(rss1, rss2, strict=True)), report
    assert mem2 - mem1 < 16 * 2**20, report
    assert rtts, "the bystanders relayed nothing"

    # The pods still relay across each other.
    x, y = Client(pods[0].ws_url), Client(pods[1].ws_url)
    try:
        await x.connect()
        await y.connect()
        await x.join("after", "x")
        await y.join("after", "y")
        await x.relay("offer", "y", {"ok": True}, frame_id=1)
        assert (await x.recv_until(lambda f: f["type"] in ("ack", "error")))["type"] == "ack"
        assert (await y.recv_until(lambda f: f["type"] == "offer"))["data"] == {"ok": True}
    finally:
        await x.close()
        await y.close()
