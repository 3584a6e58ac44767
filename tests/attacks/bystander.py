"""A bystander pair in a process of its own: peer ``x`` on one pod and ``y`` on the
other, in a room of their own, relaying a numbered candidate x -> y -> x every 20 ms,
one line per round trip (milliseconds) on stdout, until stdin closes. Its own process,
so that what the attacker's side of the test costs is not read as the pods' latency.

    python -m tests.attacks.bystander WS_URL_X WS_URL_Y [LOCAL_ADDRESS [TOKEN_X TOKEN_Y]]

A line ``ready`` once both have joined; ``error ...`` (and exit 1) if a frame is lost
(nothing within 10 s), a connection closes, or a frame comes back wrong.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp

from signaling.client import Client


async def main(
    url_x: str, url_y: str, address: str, token_x: str | None, token_y: str | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stdin_readable() -> None:
        if not os.read(sys.stdin.fileno(), 1):
            stop.set()

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
    x, y = Client(url_x, session=http), Client(url_y, session=http)
    try:
        await x.connect()
        await y.connect()
        await x.join("bystanders", "x", token=token_x)
        await y.join("bystanders", "y", token=token_y)
        print("ready", flush=True)
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.perf_counter()
            await x.relay("candidate", "y", {"n": n})
            got = await y.recv_until(lambda f: f.get("type") == "candidate", timeout=10)
            if got["data"] != {"n": n} or got["from"] != "x":
                raise AssertionError(f"y got {got}")
            await y.relay("candidate", "x", {"n": n})
            back = await x.recv_until(lambda f: f.get("type") == "candidate", timeout=10)
            if back["data"] != {"n": n}:
                raise AssertionError(f"x got {back}")
            print(f"{(time.perf_counter() - sent) * 1000:.3f}", flush=True)
            await asyncio.sleep(0.02)
    except Exception as e:
        print(f"error {type(e).__name__}: {e}", flush=True)
        return 1
    finally:
        await x.close()
        await y.close()
        await http.close()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    address = args[2] if len(args) > 2 else "127.0.0.2"
    tokens = (args[3], args[4]) if len(args) > 4 else (None, None)
    sys.exit(asyncio.run(main(args[0], args[1], address, *tokens)))
