"""Admission and closing abusers (issue 12, items 2 and 3), against real pod processes.

- connections that upgrade and never join are closed after ``--join-deadline`` (4008);
- half-sent HTTP requests are dropped after ``--handshake-timeout``;
- the caps on open WebSockets refuse upgrades (429 per address, 503 in total) while a
  joined pair keeps relaying;
- a socket closed for abuse (4003) is cut at once: the pod stops reading it.

Each prints the figure it measured. Settings go in as ``SIGNALING_*`` variables.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import struct
import threading
import time

import aiohttp
import pytest

from signaling.client import Client
from tests.conftest import Pod, PodFactory

pytestmark = pytest.mark.timeout(90)


def gauge(pod: Pod, name: str, labels: str = "") -> float:
    status, text = pod.get("/metrics")
    assert status == 200
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def until(check, timeout: float, what: str, every: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def session_from(address: str) -> aiohttp.ClientSession:
    """A client session whose connections come from ``address`` (any of 127/8)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_connections_that_never_join_are_closed_after_the_deadline(
    start_pod: PodFactory,
) -> None:
    pod = start_pod(env={"SIGNALING_JOIN_DEADLINE_S": "1"})
    n = 50
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(pod.ws_url) for _ in range(n)]
        held_before = gauge(pod, "roomwire_ws_connections")
        started = time.monotonic()
        codes: list[int | None] = []

        async def closed(ws: aiohttp.ClientWebSocketResponse) -> None:
            msg = await ws.receive(timeout=8)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            codes.append(ws.close_code)

        results = await asyncio.gather(*(closed(ws) for ws in sockets), return_exceptions=True)
        took = time.monotonic() - started
        with contextlib.suppress(AssertionError):
            await until(lambda: gauge(pod, "roomwire_ws_connections") == 0, 5, "the pod to let go")
        held_after = gauge(pod, "roomwire_ws_connections")
        print(
            f"\nnever-joined connections held: {held_before:.0f} before the 1 s deadline, "
            f"{held_after:.0f} after; {len(codes)} closed within {took:.2f} s, codes {set(codes)}"
        )
        assert held_before == n
        assert held_after == 0
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert codes == [4008] * n
        # A client that joins in time is served.
        c = Client(pod.ws_url, session=http)
        await c.connect()
        await c.join("room", "alice")
        await asyncio.sleep(0)
        assert c.close_code is None
        await c.close()


async def test_half_sent_requests_are_dropped_after_the_handshake_timeout(
    start_pod: PodFactory,
) -> None:
    pod = start_pod(env={"SIGNALING_HANDSHAKE_TIMEOUT_S": "1"})
    n = 20
    conns = [await asyncio.open_connection("127.0.0.1", pod.port) for _ in range(n)]
    for _, w in conns:
        w.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        await w.drain()
    started = time.monotonic()
    dropped_at: list[float] = []

    async def dropped(r: asyncio.StreamReader) -> None:
        try:
            data = await asyncio.wait_for(r.read(), 6)
        except ConnectionError:
            data = b""
        assert data == b"", data
        dropped_at.append(time.monotonic() - started)

    results = await asyncio.gather(*(dropped(r) for r, _ in conns), return_exceptions=True)
    held = sum(isinstance(r, BaseException) for r in results)
    for _, w in conns:
        w.close()
    print(
        f"\nhalf-sent requests: {n} sent, {held} still held 6 s later; the others dropped "
        f"{min(dropped_at, default=-1):.2f}-{max(dropped_at, default=-1):.2f} s after the "
        "partial headers (timeout 1 s)"
    )
    assert held == 0
    assert max(dropped_at) < 4
    assert pod.get("/healthz")[0] == 200


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    try:
        ws = await http.ws_connect(url)
    except aiohttp.WSServerHandshakeError as e:
        return e.status, None
    return 101, ws


async def test_caps_refuse_new_upgrades_while_a_joined_pair_keeps_relaying(
    start_pod: PodFactory,
) -> None:
    total, per_address = 20, 5
    pod = start_pod(
        env={
            "SIGNALING_MAX_CONNECTIONS": str(total),
            "SIGNALING_MAX_CONNECTIONS_PER_ADDRESS": str(per_address),
            "SIGNALING_JOIN_DEADLINE_S": "60",
        }
    )
    legit = session_from("127.0.0.2")
    sessions = {a: session_from(a) for a in ("127.0.0.1", "127.0.0.4", "127.0.0.5", "127.0.0.6")}
    held: list[object] = []
    try:
        alice, bob = Client(pod.ws_url, session=legit), Client(pod.ws_url, session=legit)
        for c, peer in ((alice, "alice"), (bob, "bob")):
            await c.connect()
            await c.join("room", peer)
        rtts: list[float] = []
        flooding = True

        async def ping_pong() -> None:
            i = 0
            while flooding and i < 2000:
                i += 1
                sent = time.perf_counter()
                await alice.relay("candidate", "bob", {"i": i})
                await bob.recv_until(lambda f: f.get("type") == "candidate", timeout=5)
                await bob.relay("candidate", "alice", {"i": i})
                await alice.recv_until(lambda f: f.get("type") == "candidate", timeout=5)
                rtts.append(time.perf_counter() - sent)
                await asyncio.sleep(0.01)  # paced: 50 frames/s is the default rate limit

        pinger = asyncio.get_running_loop().create_task(ping_pong())
        # One address goes past its cap: 429, while another address is still admitted.
        one = [await _status(sessions["127.0.0.1"], pod.ws_url) for _ in range(per_address + 10)]
        statuses = [s for s, _ in one]
        held += [ws for _, ws in one if ws is not None]
        assert statuses == [101] * per_address + [429] * 10, statuses
        async with session_from("127.0.0.3") as other:
            c = Client(pod.ws_url, session=other)
            await c.connect()
            await c.join("room", "carol")
            await c.close()
        # Several addresses go past the total: 503 for everyone new.
        refused_total = 0
        for address in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):
            for _ in range(per_address + 2):
                status, ws = await _status(sessions[address], pod.ws_url)
                if ws is not None:
                    held.append(ws)
                refused_total += status == 503
        assert refused_total > 0
        assert len(held) + 2 == total, len(held)
        async with session_from("127.0.0.7") as late:
            assert (await _status(late, pod.ws_url))[0] == 503
        # The flood of refused upgrades goes on for a second; the pair keeps relaying.
        deadline, refused = time.monotonic() + 1.0, 0
        while time.monotonic() < deadline:
            status, _ = await _status(sessions["127.0.0.1"], pod.ws_url)
            refused += status in (429, 503)
        flooding = False
        await pinger
        rtts.sort()
        print(
            f"\ncaps {per_address}/address, {total} total: {len(held)} flood sockets held, "
            f"{refused + 10 + refused_total + 1} upgrades refused; the joined pair's relay round "
            f"trip during the flood: median {rtts[len(rtts) // 2] * 1000:.1f} ms, max "
            f"{rtts[-1] * 1000:.1f} ms over {len(rtts)}"
        )
        assert len(rtts) >= 10
        assert alice.close_code is None and bob.close_code is None
        assert gauge(pod, "roomwire_admission_refused_total", '{reason="per-address"}') >= 10
        assert gauge(pod, "roomwire_admission_refused_total", '{reason="total"}') >= 2
        await alice.close()
        await bob.close()
    finally:
        for ws in held:
            await ws.close()  # type: ignore[attr-defined]
        for s in sessions.values():
            await s.close()
        await legit.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + mask + body


def close_frame_in(buf: bytes) -> bool:
    """Whether the server's frames in ``buf`` (unmasked) include a close frame."""
    i = 0
    while i + 2 <= len(buf):
        opcode, n, i = buf[i] & 0x0F, buf[i + 1] & 0x7F, i + 2
        if opcode == 0x8:
            return True
        if n == 126:
            n, i = int.from_bytes(buf[i : i + 2]), i + 2
        elif n == 127:
            n, i = int.from_bytes(buf[i : i + 8]), i + 8
        i += n
    return False


class Flooder:
    """A raw WebSocket that writes bad frames as fast as it can, reading what comes back
    on a thread: ``cut`` is when the server's close frame, EOF or a reset arrived."""

    def __init__(self, port: int, frame: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 4096:
            head += self.sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.cut: float | None = None
        self.cut_event = threading.Event()
        self.writes_failed_at: float | None = None
        self.stop = threading.Event()
        self.frame = frame
        self.threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        deadline = time.monotonic() + 30
        buf = b""
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            buf += data
            if not data or close_frame_in(buf):
                self.cut = time.monotonic()
                self.cut_event.set()
                return

    def _write(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                self.sock.sendall(self.frame)
            except TimeoutError:
                continue
            except OSError:
                self.writes_failed_at = time.monotonic()
                return

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.sock.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(masked_text(b"{nope") * 50, 4003, id="bad-frames"),
        pytest.param(masked_text(b"x" * 70_000), 1009, id="too-big"),
    ],
)
def test_an_abusive_socket_is_cut_at_once(start_pod: PodFactory, frame: bytes, code: int) -> None:
    pod = start_pod()
    flooders = [Flooder(pod.port, frame) for _ in range(3)]
    try:
        for f in flooders:
            assert f.cut_event.wait(10), "the server never decided to close the flooder"
        decided = min(f.cut for f in flooders if f.cut is not None)
        cpu0 = cpu_seconds(pod.proc.pid)
        window = 5.0
        # Measured over a fixed window: the flooders keep writing while they can.
        threading.Event().wait(max(0.0, decided + window - time.monotonic()))
        cpu = cpu_seconds(pod.proc.pid) - cpu0
        failed = [f.writes_failed_at for f in flooders]
        print(
            f"\n3 flooders closed with {code}: pod CPU in the {window:.0f} s after the decision "
            f"{cpu:.2f} CPU-s; flooders' writes failed "
            + ", ".join("never" if t is None else f"{t - decided:.2f} s" for t in failed)
            + " after it"
        )
        assert cpu < 0.5
        assert all(t is not None and t - decided < 2 for t in failed)
        assert gauge(pod, "roomwire_closes_total", f'{{code="{code}"}}') == 3
    finally:
        for f in flooders:
            f.close()
