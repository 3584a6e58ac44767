"""Many edges in one process, for the scale test and the benchmark: one ``Edge`` (the
very class ``signaling edge`` runs) per room, each with its own port and its own
upstream, on one event loop. 100 edge processes would cost 100 interpreters on a
2-core machine; what each edge does is the same.

    python -m tests.edge.edge_host SPEC_JSON

SPEC_JSON: ``[{"room": R, "upstream": URL}, ...]`` plus, optionally, ``{"settings":
{...}}`` as its first item for settings every edge shares. Each edge listens on a port
of its own that the system picks (a port picked beforehand may be taken meanwhile by
another edge's upstream connection); once all listen it prints ``ready`` and the ports
as JSON (room -> port); stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from signaling.edge.server import Edge, build_app
from signaling.edge.settings import EdgeSettings


async def serve(spec: list[dict[str, Any]]) -> None:
    shared: dict[str, Any] = {}
    if spec and "settings" in spec[0]:
        shared = spec.pop(0)["settings"]
    runners = []
    ports: dict[str, int] = {}
    for e in spec:
        settings = EdgeSettings(
            room=e["room"],
            host="127.0.0.1",
            port=int(e.get("port", 0)),
            upstream=e.get("upstream"),
            edge_id=f"edge-{e['room']}",
            backoff_min_s=0.05,
            backoff_max_s=0.5,
            **shared,
        )
        runner = web.AppRunner(build_app(Edge(settings)), handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port, backlog=512).start()
        runners.append(runner)
        ports[e["room"]] = int(runner.addresses[0][1])
    print("ready " + json.dumps(ports), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(sys.argv[1])
    try:
        import uvloop

        uvloop.run(serve(spec))
    except ImportError:
        asyncio.run(serve(spec))


if __name__ == "__main__":
    main()
