"""The node-agent process: node agent, service proxy and cluster DNS together, until SIGTERM.

``DEVCLUSTER_DNS_UPSTREAMS`` (``ip[:port]``, comma-separated): where the cluster DNS server
forwards names outside ``cluster.local``; unset, they do not exist (pods reach only loopback).
``DEVCLUSTER_RUNTIME``: ``process`` (default) or ``podman`` (``devcluster.node_agent.runtime``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .addresses import LOCAL_IP_ANNOTATION
from .dns import ClusterDns, parse_upstreams
from .images import ImageMap
from .kube import ApiError, Kube
from .node_agent.agent import NodeAgent
from .node_agent.clock import now_iso
from .node_agent.ippool import IpPool
from .node_agent.runtime import runtime_name
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

    try:
        runtime = runtime_name()
    except ValueError as e:
        log(f"{now_iso()} {e}")
        return 1
    ips = IpPool()  # pods and Services share this node agent's block of loopback IPs
    for ip in _pods_ips(kube, str(state["node"])):  # pods of an earlier agent keep theirs
        ips.reserve(ip)
    proxy = ServiceProxy(kube, state_dir, lambda m: log(f"{now_iso()} {m}"), ips)
    proxy.start()
    # the cluster DNS server: port 53 (resolv.conf names no port) of an address of our block
    dns_ip = ips.allocate()
    cluster_dns = ClusterDns(
        proxy,
        dns_ip,
        53,
        upstreams=parse_upstreams(os.environ.get("DEVCLUSTER_DNS_UPSTREAMS", "")),
        log=lambda m: log(f"{now_iso()} {m}"),
    )
    try:
        cluster_dns.start()
    except OSError as e:
        log(
            f"{now_iso()} cannot serve cluster DNS on {dns_ip}:53: {e} "
            "(the node agent must run as root, like a kubelet)"
        )
        proxy.shutdown()
        return 1
    log(f"{now_iso()} cluster DNS on {cluster_dns.address} (UDP and TCP)")
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
        dns_ip=dns_ip,
        runtime=runtime,
    )
    agent.start()
    if proxy.services is not None:
        proxy.services.synced.wait(30)
    (state_dir / "agent.json").write_text(
        json.dumps({"proxy_admin": f"127.0.0.1:{proxy.admin_port}", "dns": cluster_dns.address})
    )
    log(f"{now_iso()} node agent and service proxy running")
    while not stop.wait(1):
        pass
    log(f"{now_iso()} stopping: pods first")
    agent.shutdown()
    proxy.shutdown()
    cluster_dns.stop()
    log(f"{now_iso()} stopped")
    return 0


def _pods_ips(kube: Kube, node: str) -> list[str]:
    """The local addresses of the pods bound to this node that an earlier node agent ran
    (after a restart of the agent; none on a fresh cluster)."""
    try:
        pods = kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")["items"]
    except (ApiError, OSError):
        return []
    return [
        str(ip)
        for p in pods
        if (ip := (p["metadata"].get("annotations") or {}).get(LOCAL_IP_ANNOTATION))
    ]
