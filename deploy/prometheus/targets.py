"""Prometheus file-based service discovery for Roomwire's pods on the local cluster.

Lists the pods of a namespace with ``kubectl get pods -o json`` and writes one targets
file per job (``roomwire-signaling.json``, ``roomwire-operator.json``) in the format of
``file_sd_configs``; Prometheus re-reads them when they change. Each pod is scraped at
its own loopback address, from the node agent's annotation
``devcluster.roomwire.io/local-ip`` (the API shows a ``198.18`` alias that nothing may
send packets to, see docs/cluster.md), or at its pod IP on a real cluster.

    python deploy/prometheus/targets.py --every 15   # from the checkout's root

Standard library only; ``kubectl`` is the cluster's pinned one (``.cluster/bin``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOCAL_IP_ANNOTATION = "devcluster.roomwire.io/local-ip"
ALIAS_PREFIXES = ("198.18.", "198.19.")
NAME_LABEL = "app.kubernetes.io/name"

# job -> (the pods' app.kubernetes.io/name, the container port's name)
JOBS: Mapping[str, tuple[str, str]] = {
    "roomwire-signaling": ("signaling", "http"),
    "roomwire-operator": ("meetingroom-operator", "metrics"),
}


def pod_address(pod: Mapping[str, Any]) -> str | None:
    """Where the pod listens: its loopback address on the local cluster, else its IP;
    None when it has none yet or only an alias."""
    meta = pod.get("metadata") or {}
    local = (meta.get("annotations") or {}).get(LOCAL_IP_ANNOTATION)
    ip = local or (pod.get("status") or {}).get("podIP")
    if not ip or str(ip).startswith(ALIAS_PREFIXES):
        return None
    return str(ip)


def port_named(pod: Mapping[str, Any], name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def targets(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The file_sd target groups of each job, one group per pod, sorted by pod name.
    Pods that finished (Succeeded, Failed) are left out; terminating ones are kept
    (they may still be draining connections)."""
    out: dict[str, list[dict[str, Any]]] = {job: [] for job in JOBS}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        address = pod_address(pod)
        if address is None:
            continue
        app = (meta.get("labels") or {}).get(NAME_LABEL)
        for job, (wanted_app, port_name) in JOBS.items():
            port = port_named(pod, port_name)
            if app != wanted_app or port is None:
                continue
            labels = {"namespace": str(meta.get("namespace", "")), "pod": str(meta["name"])}
            out[job].append({"targets": [f"{address}:{port}"], "labels": labels})
    return out


def write_atomically(path: Path, data: object) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path``, so
    that Prometheus never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def list_pods(kubectl: str, kubeconfig: str, namespace: str) -> list[dict[str, Any]]:
    cmd = [kubectl, "--kubeconfig", kubeconfig, "-n", namespace, "get", "pods", "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    items: list[dict[str, Any]] = json.loads(done.stdout).get("items") or []
    return items


def refresh(kubectl: str, kubeconfig: str, namespace: str, out_dir: Path) -> None:
    for job, groups in targets(list_pods(kubectl, kubeconfig, namespace)).items():
        write_atomically(out_dir / f"{job}.json", groups)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubectl", default="kubectl", help="kubectl to run")
    ap.add_argument("--kubeconfig", default=".cluster/kubeconfig", help="the cluster's")
    ap.add_argument("--namespace", default="roomwire", help="namespace of the pods")
    ap.add_argument(
        "--out", default=".cluster/prometheus/targets", help="folder of the targets files"
    )
    ap.add_argument("--every", type=float, default=0.0, help="seconds between refreshes (0: once)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    while True:
        try:
            refresh(args.kubectl, args.kubeconfig, args.namespace, out_dir)
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            print(f"targets: {e}", file=sys.stderr)
            if args.every <= 0:
                return 1
        if args.every <= 0:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
