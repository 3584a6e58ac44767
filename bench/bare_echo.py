"""The framework's ceiling: a bare aiohttp WebSocket server with no protocol at all.

The first frame is a join (``{"room": ..., "peer": ...}``), answered ``{"type":"joined"}``;
after it every text frame is forwarded verbatim, unparsed, to the other connection of
the same room (an echo to the peer rather than to the sender, so that the benchmark's
1:1 message pattern is the same as Roomwire's). No registry, no seq, no rate limit.

    python -m bench.bare_echo --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from aiohttp import WSMsgType, web

ROOMS: dict[str, dict[str, web.WebSocketResponse]] = {}
JOINED = '{"type":"joined"}'


async def handle(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    room, peer = "", ""
    members: dict[str, web.WebSocketResponse] = {}
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            if not room:
                frame = json.loads(msg.data)
                room, peer = str(frame.get("room")), str(frame.get("peer"))
                members = ROOMS.setdefault(room, {})
                members[peer] = ws
                await ws.send_str(JOINED)
                continue
            for other, target in members.items():
                if other != peer:
                    await target.send_str(msg.data)
    finally:
        if room and members.get(peer) is ws:
            del members[peer]
            if not members:
                ROOMS.pop(room, None)
    return ws


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
