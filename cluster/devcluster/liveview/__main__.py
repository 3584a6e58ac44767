"""``python -m devcluster.liveview --kubeconfig PATH --namespace NS [--redis-url URL]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from ..kube import Kube
from .collect import Collector
from .server import make_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster.liveview", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    parser.add_argument("--namespace", default="roomwire")
    parser.add_argument(
        "--redis-url", default="", help="Redis of the namespace, for the moves in flight"
    )
    parser.add_argument("--deployment", default="signaling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kube = Kube.from_kubeconfig(ns.kubeconfig, ns.context)
    collector = Collector(kube, ns.namespace, ns.redis_url, ns.deployment)
    print(f"live view of namespace {ns.namespace} on http://{ns.host}:{ns.port}/", flush=True)
    web.run_app(make_app(collector, ns.interval), host=ns.host, port=ns.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
