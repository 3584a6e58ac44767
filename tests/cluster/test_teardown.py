"""``devcluster down`` leaves no process behind: control plane, node agent, pods.

Starts a second, separate local cluster in its own state folder (the session's cluster is
not touched), runs a pod on it, stops it, and checks every PID it had recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import control_plane
from devcluster.kube import Kube, wait_for
from devcluster.procs import ProcRef

from .objects import small_server_pod

pytestmark = pytest.mark.cluster


def test_cluster_down_leaves_no_process(kube_cluster: object) -> None:
    if os.environ.get("ROOMWIRE_CLUSTER", "local") == "kubeconfig":
        pytest.skip("only for the local cluster")
    state = control_plane.DEFAULT_STATE / f"pytest-teardown-{os.getpid()}"
    devcluster = [sys.executable, "-m", "devcluster", "--state", str(state)]
    up = subprocess.run([*devcluster, "up"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        kube = Kube.from_kubeconfig(state / "kubeconfig")
        kube.post("/api/v1/namespaces/default/pods", small_server_pod("default", "lonely"))

        def running() -> bool:
            pod = kube.get("/api/v1/namespaces/default/pods/lonely")
            return pod.get("status", {}).get("phase") == "Running"

        wait_for(running, 60, "the pod to run")
        recorded = [
            ProcRef.from_json(p) for p in json.loads((state / "state.json").read_text())["procs"]
        ]
        recorded += [
            ProcRef.from_json(json.loads(f.read_text())) for f in (state / "pids").glob("*.json")
        ]
        assert len(recorded) >= 5 and all(p.alive() for p in recorded)
        pod_pid = next(p for p in recorded if p.name.startswith("pod "))
        down = subprocess.run([*devcluster, "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert [p for p in recorded if p.alive()] == []
        assert not Path(f"/proc/{pod_pid.pid}").exists() or not pod_pid.alive()
    finally:
        subprocess.run([*devcluster, "down"], capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(state, ignore_errors=True)
