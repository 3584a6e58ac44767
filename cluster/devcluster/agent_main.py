"""The node-agent process: node agent and service proxy together, until SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .images import ImageMap
from .kube import Kube
from .node_agent import IpPool, NodeAgent, now_iso
from .service_proxy import ServiceProxy


def run(state_dir: Path, workdir: Path) -> int:
    state = json.loads((state_dir / "state.json").read_text())
    kube = Kube.from_kubeconfig(state_dir / "node-agent.kubeconfig")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(msg: str) -> None:
        print(msg, flush=True)

    ips = IpPool()  # pods and Services share this node agent's block of loopback IPs
    proxy = ServiceProxy(kube, state_dir, lambda m: log(f"{now_iso()} {m}"), ips)
    proxy.start()
    agent = NodeAgent(
        kube,
        str(state["node"]),
        state_dir,
        ImageMap(python=sys.executable),
        str(state_dir / "pki" / "ca.crt"),
        workdir,
        service_env=proxy.service_env,
        log=log,
        ips=ips,
    )
    agent.start()
    if proxy.services is not None:
        proxy.services.synced.wait(30)
    (state_dir / "agent.json").write_text(
        json.dumps({"proxy_admin": f"127.0.0.1:{proxy.admin_port}"})
    )
    log(f"{now_iso()} node agent and service proxy running")
    while not stop.wait(1):
        pass
    log(f"{now_iso()} stopping: pods first")
    agent.shutdown()
    proxy.shutdown()
    log(f"{now_iso()} stopped")
    return 0
