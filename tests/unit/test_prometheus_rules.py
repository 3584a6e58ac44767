"""deploy/prometheus/: the rules, their unit tests and the scrape configuration checked
by promtool, the metric names the rules use checked against what the code exports, and
the file-based discovery of the local cluster's pods.

promtool comes with Debian's prometheus package (``scripts/ensure-deps.sh`` installs it,
``make test`` runs that first); without it these tests fail, they never skip.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from meetingroom_operator.metrics import Metrics as OperatorMetrics
from signaling.metrics import Metrics as WorkloadMetrics

HERE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = {
    "SignalingPodOverCapacity",
    "SkewNotConverging",
    "RelayErrors",
    "RedisUnavailable",
    "DrainOverDeadline",
    "OperatorNotReconciling",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is missing: run scripts/ensure-deps.sh as root "
            "(it installs Debian's prometheus package, which brings promtool)"
        )
    done = subprocess.run(
        [exe, *args], cwd=HERE, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_rules_are_valid() -> None:
    out = promtool("check", "rules", "rules.yaml").stdout
    assert "SUCCESS" in out


def test_scrape_config_is_valid() -> None:
    # The targets files exist only while targets.py runs: promtool warns, still valid.
    out = promtool("check", "config", "prometheus.yaml").stdout
    assert "is valid prometheus config file syntax" in out


def test_rule_unit_tests_pass() -> None:
    out = promtool("test", "rules", "tests.yaml").stdout
    assert "SUCCESS" in out


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    text = (HERE / "tests.yaml").read_text()
    defined = set(re.findall(r"^\s+- alert: (\w+)$", (HERE / "rules.yaml").read_text(), re.M))
    assert defined == ALERTS
    fires: set[str] = set()
    quiet: set[str] = set()
    # alertname, then its exp_alerts: a list of alerts, or [] (must not fire)
    for name, expected in re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text):
        (quiet if expected else fires).add(name)
    assert fires == ALERTS, f"no firing case for {ALERTS - fires}"
    assert quiet == ALERTS, f"no must-not-fire case for {ALERTS - quiet}"


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose, labelled children or not."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def test_rules_use_only_metrics_the_code_exports() -> None:
    exported = exported_names(WorkloadMetrics(lambda: 0, lambda: 0, lambda: 0).registry)
    exported |= exported_names(OperatorMetrics().registry)
    used: set[str] = set()
    for line in (HERE / "rules.yaml").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        # a metric name, not a recording rule's (level:metric:operation) name
        used.update(re.findall(r"(?<![\w:])(roomwire_\w+)(?![\w:])", line))
    assert used, "no roomwire_* metric found in rules.yaml"
    assert used <= exported, f"not exported by the code: {sorted(used - exported)}"


def load_targets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("roomwire_targets", HERE / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pod(
    name: str,
    app: str,
    port_name: str,
    port: int,
    local_ip: str | None,
    pod_ip: str = "198.18.1.2",
    phase: str = "Running",
) -> dict[str, Any]:
    annotations = {"devcluster.roomwire.io/local-ip": local_ip} if local_ip else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "roomwire",
            "labels": {"app.kubernetes.io/name": app},
            "annotations": annotations,
        },
        "spec": {
            "containers": [{"ports": [{"name": port_name, "containerPort": port}]}],
        },
        "status": {"phase": phase, "podIP": pod_ip},
    }


def test_targets_scrape_each_pod_at_its_loopback_address() -> None:
    t = load_targets()
    pods = [
        pod("signaling-b", "signaling", "http", 8080, "127.0.1.3"),
        pod("signaling-a", "signaling", "http", 8080, "127.0.1.2"),
        pod("meetingroom-operator-x", "meetingroom-operator", "metrics", 9090, "127.0.1.9"),
        # not annotated yet: only the API's alias, which nothing may connect to
        pod("signaling-c", "signaling", "http", 8080, None),
        # a real cluster: no annotation, a routable pod IP
        pod("signaling-d", "signaling", "http", 8080, None, pod_ip="10.0.0.7"),
        pod("signaling-old", "signaling", "http", 8080, "127.0.1.5", phase="Succeeded"),
        pod("redis-0", "redis", "redis", 6379, "127.0.1.8"),
    ]
    got = t.targets(pods)
    assert got == {
        "roomwire-signaling": [
            {
                "targets": ["127.0.1.2:8080"],
                "labels": {"namespace": "roomwire", "pod": "signaling-a"},
            },
            {
                "targets": ["127.0.1.3:8080"],
                "labels": {"namespace": "roomwire", "pod": "signaling-b"},
            },
            {
                "targets": ["10.0.0.7:8080"],
                "labels": {"namespace": "roomwire", "pod": "signaling-d"},
            },
        ],
        "roomwire-operator": [
            {
                "targets": ["127.0.1.9:9090"],
                "labels": {"namespace": "roomwire", "pod": "meetingroom-operator-x"},
            }
        ],
    }


def test_targets_files_are_what_the_scrape_config_reads(tmp_path: Path) -> None:
    t = load_targets()
    config = (HERE / "prometheus.yaml").read_text()
    for job in t.JOBS:
        assert f"job_name: {job}\n" in config
        assert f"targets/{job}.json]" in config
        t.write_atomically(tmp_path / f"{job}.json", [])
        assert json.loads((tmp_path / f"{job}.json").read_text()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{j}.json" for j in t.JOBS)
