"""The Node: registered once, its status (Ready, addresses, capacity) patched as a heartbeat."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from ..kube import ApiError, Kube, Obj
from .clock import now_iso

HEARTBEAT_SECONDS = 30


def node_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.roomwire.io/devcluster": "true",
            },
        },
    }


def node_status(
    name: str, at: str, kube_version: str, kernel: str, cpus: int = 0, mem_kib: int = 0
) -> Obj:
    """The Node's status at time ``at``: every condition fine and Ready; with ``cpus``, also
    capacity and allocatable (the first heartbeat)."""
    conds = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ]
    status: Obj = {
        "conditions": [
            {
                "type": ty,
                "status": st,
                "reason": why,
                "message": f"devcluster node agent: {why}",
                "lastHeartbeatTime": at,
                "lastTransitionTime": at,
            }
            for ty, st, why in conds
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "kubeletVersion": kube_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "containerRuntimeVersion": "devcluster://local-processes",
            "kernelVersion": kernel,
            "osImage": "local processes",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
    if cpus:
        cap = {
            "cpu": str(cpus),
            "memory": f"{mem_kib}Ki",
            "pods": "250",
            "ephemeral-storage": "100Gi",
        }
        status["capacity"] = cap
        status["allocatable"] = cap
    return status


def heartbeat(kube: Kube, name: str, cpus: int = 0, mem_kib: int = 0) -> None:
    status = node_status(
        name,
        now_iso(),
        os.environ.get("DEVCLUSTER_KUBE_VERSION", "v0.0.0"),
        os.uname().release,
        cpus,
        mem_kib,
    )
    kube.patch(f"/api/v1/nodes/{name}/status", {"status": status}, kind="strategic")


def register(kube: Kube, name: str) -> None:
    """Create the Node (or find it there) and send the first heartbeat, with capacity."""
    cpus = os.cpu_count() or 1
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        kube.post("/api/v1/nodes", node_object(name))
    except ApiError as e:
        if not e.conflict:
            raise
    heartbeat(kube, name, cpus, mem_kib)


def heartbeats(kube: Kube, name: str, stopping: threading.Event) -> None:
    """Keep the Node Ready until ``stopping`` is set (run in a thread of its own)."""
    while not stopping.wait(HEARTBEAT_SECONDS):
        with contextlib.suppress(ApiError, OSError):
            heartbeat(kube, name)
