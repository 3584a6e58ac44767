"""The chart on the local cluster: its objects accepted by the API server
(``helm template | kubectl apply --dry-run=server``), and one install then upgrade.

Nothing is faked: a real kube-apiserver, etcd and controller manager; pods are real
signaling, operator and Redis processes run by the node agent; clients are real
WebSocket clients through the Service (the local service proxy). The upgrade changes
the operator's capacity per pod (``operator.perPod``): the operator is recreated with it
and sizes the Deployment by it, while the clients keep relaying and lose nothing.

Opt-in: ``-m cluster``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devcluster.pytest_plugin import KubeCluster
from signaling.client import Client
from tests.cluster.objects import deployment_available
from tests.operator.harness import Follower
from tests.support import ROOT, eventually

from .chart import CHART, Helm, env_of, load_all
from .test_chart import VALUE_SETS

pytestmark = pytest.mark.cluster

CRD = ROOT / "crds" / "rtc.roomwire.io_meetingrooms.yaml"
SIGNALING = "app.kubernetes.io/name=signaling"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"
# The samples' phases: all-hands has its meeting window in 2030, so it waits Idle.
SAMPLE_PHASES = {"all-hands": "Idle", "boardroom": "Ready", "huddle-2": "Ready"}
DESIRED = re.compile(r"^roomwire_operator_desired_replicas (\S+)$", re.M)

Obj = dict[str, Any]


@pytest.fixture()
def cluster_helm(helm: Helm, kube_cluster: KubeCluster) -> Helm:
    return Helm(helm.exe, helm.home, kube_cluster.kubeconfig)


def _crd_established(cluster: KubeCluster) -> None:
    cluster.apply_yaml(CRD)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/meetingrooms.rtc.roomwire.io", "--timeout=30s"
    )


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_template_is_accepted_by_the_api_server(
    cluster_helm: Helm, kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path, name: str
) -> None:
    """Every values set, samples included, with the CRD: ``kubectl apply --dry-run=server``
    (the API server's validation and defaulting, nothing persisted)."""
    _crd_established(kube_cluster)
    values = {**VALUE_SETS[name], "samples.enabled": True}
    text = cluster_helm.template(values, namespace=kube_namespace)
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    out = kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(path))
    print(out.stdout)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(load_all(text))
    assert all(line.endswith("(server dry run)") for line in lines), lines


# ---- install, then upgrade with another capacity per pod --------------------------------


@dataclass
class Ring:
    """Each client relays ``candidate {n}`` to the next one, round after round, each
    frame resent until acked; every acked ``n`` must arrive."""

    followers: list[Follower]
    sent: dict[str, int] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def pairs(self) -> list[tuple[Follower, Follower]]:
        fs = self.followers
        return [(fs[i], fs[(i + 1) % len(fs)]) for i in range(len(fs))]

    async def round(self) -> None:
        async def one(a: Follower, b: Follower) -> None:
            n = self.sent.get(a.peer, 0)
            await a.send_n(b.peer, n, timeout=60)
            self.sent[a.peer] = n + 1

        await asyncio.gather(*(one(a, b) for a, b in self.pairs()))

    async def _run(self) -> None:
        for _ in range(2000):  # bounded: 0.3 s apart, far longer than the test
            if self.stopping.is_set():
                return
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.3)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await self.task

    def missing(self) -> dict[str, list[int]]:
        out = {}
        for a, b in self.pairs():
            got = set(b.received.get(a.peer, []))
            lost = sorted(set(range(self.sent.get(a.peer, 0))) - got)
            if lost:
                out[a.peer] = lost
        return out


def _pod(f: Follower) -> str:
    return str(f.client.joined.get("pod", ""))


def _desired_replicas(cluster: KubeCluster, pod: Obj) -> float | None:
    url = f"http://{cluster.local_ip(pod)}:9090/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            m = DESIRED.search(r.read().decode())
    except OSError:
        return None
    return float(m[1]) if m else None


def _control_secret(cluster: KubeCluster, ns: str) -> str:
    s = cluster.kube.get(f"/api/v1/namespaces/{ns}/secrets/roomwire-control")
    return base64.b64decode(s["data"]["control-secret"]).decode()


async def test_install_then_upgrade_capacity_per_pod_drops_nothing(
    cluster_helm: Helm, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """``helm install`` (samples on, 200 sessions per pod: the rooms' 26 seats ask for
    2 pods), 8 clients through the Service relaying in a ring; ``helm upgrade
    --reuse-values --set operator.perPod=10``: the operator is recreated with 10 and
    scales the Deployment to ceil(26 / 10) + 1 buffer = 4 pods, then rebalances the
    clients onto them; the signaling pods of the install are not restarted, the
    generated control secret is kept, every client keeps its session (moved ones
    resume) and every acked frame arrives. A third revision asking for 2 replicas
    leaves the operator's 4."""
    kube_cluster.require_local()
    ns, h, cl = kube_namespace, cluster_helm, kube_cluster
    started = time.monotonic()
    out = await asyncio.to_thread(
        h.run, "install", "roomwire", str(CHART), "-n", ns,
        "--set", "samples.enabled=true", "--wait", "--timeout", "180s",
    )  # fmt: skip
    installed_s = time.monotonic() - started
    print(out.stdout)
    print(f"helm install --wait returned after {installed_s:.1f} s")

    def rooms() -> dict[str, str] | None:
        got = cl.kube.get(f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{ns}/meetingrooms")
        phases = {o["metadata"]["name"]: (o.get("status") or {}).get("phase") for o in got["items"]}
        return phases if phases == SAMPLE_PHASES else None

    await asyncio.to_thread(cl.wait_for, rooms, 60, f"sample rooms {SAMPLE_PHASES}")
    print(f"sample rooms placed {time.monotonic() - started:.1f} s after helm install")
    old_pods = {
        p["metadata"]["name"]: p for p in await asyncio.to_thread(cl.ready_pods, ns, SIGNALING)
    }
    (old_operator,) = await asyncio.to_thread(cl.ready_pods, ns, OPERATOR)
    assert len(old_pods) == 2, sorted(old_pods)
    assert env_of(old_operator, "operator")["ROOMWIRE_PER_POD"] == "200"

    secret = await asyncio.to_thread(_control_secret, cl, ns)
    host, port = await asyncio.to_thread(cl.service_address, ns, "signaling", 80)
    url = f"ws://{host}:{port}/ws"
    followers: list[Follower] = []
    ring = Ring(followers)
    try:
        for i in range(8):
            c = Client(url)
            await c.connect()
            await c.join("boardroom", f"p{i}")
            f = Follower(c, url, "boardroom", f"p{i}")
            f.start()
            followers.append(f)
        print(
            "clients per pod before:", {p: [_pod(f) for f in followers].count(p) for p in old_pods}
        )
        await ring.round()
        ring.start()

        upgraded_at = time.monotonic()
        out = await asyncio.to_thread(
            h.run, "upgrade", "roomwire", str(CHART), "-n", ns, "--reuse-values",
            "--set", "operator.perPod=10", "--wait", "--timeout", "180s",
        )  # fmt: skip
        print(out.stdout)
        print(f"helm upgrade --wait returned after {time.monotonic() - upgraded_at:.1f} s")

        def new_operator() -> Obj | None:
            pods = cl.ready_pods(ns, OPERATOR)
            new = [p for p in pods if p["metadata"]["uid"] != old_operator["metadata"]["uid"]]
            return new[0] if len(pods) == 1 and new else None

        operator = await asyncio.to_thread(cl.wait_for, new_operator, 60, "the new operator")
        assert env_of(operator, "operator")["ROOMWIRE_PER_POD"] == "10"

        def scaled() -> int | None:
            d = cl.kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/signaling")
            return 4 if d["spec"]["replicas"] == 4 and deployment_available(d) else None

        await asyncio.to_thread(cl.wait_for, scaled, 90, "signaling scaled to 4")
        pods = await asyncio.to_thread(cl.wait_ready_pods, ns, SIGNALING, 4, 90)
        took = time.monotonic() - upgraded_at
        print(f"operator scaled signaling 2 -> 4 {took:.1f} s after helm upgrade started")
        desired = await asyncio.to_thread(_desired_replicas, cl, operator)
        print(f"the new operator's roomwire_operator_desired_replicas: {desired}")
        assert desired == 4.0
        now = {p["metadata"]["name"]: p for p in pods}
        assert set(old_pods) <= set(now), "helm upgrade restarted signaling pods"
        for name, pod in old_pods.items():
            assert now[name]["metadata"]["uid"] == pod["metadata"]["uid"]
        restarts = [
            int(cs.get("restartCount", 0))
            for p in pods
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        ]
        assert set(restarts) == {0}, restarts

        assert await asyncio.to_thread(_control_secret, cl, ns) == secret  # kept

        # The operator rebalances onto the new pods (after its skew persisted 10 s): the
        # clients it moves resume there while the ring goes on.
        async def spread() -> bool:
            return len({_pod(f) for f in followers} & set(now)) >= 3 and all(
                f.ready.is_set() for f in followers
            )

        await eventually(spread, 60, "clients rebalanced onto the new pods", every=0.2)
        print(
            f"clients spread over 3+ pods {time.monotonic() - upgraded_at:.1f} s after the upgrade"
        )
        rounds = sum(ring.sent.values())

        async def more_rounds() -> bool:
            return sum(ring.sent.values()) >= rounds + 3 * len(followers)

        await eventually(more_rounds, 60, "three more rounds")
        await ring.stop()

        async def complete() -> bool:
            return not ring.missing() and all(f.ready.is_set() for f in followers)

        with contextlib.suppress(AssertionError):
            await eventually(complete, 15, "every acked frame delivered, every client ready")
        moves = sum(f.moves for f in followers)
        print(
            f"ring: {sum(ring.sent.values())} frames acked; clients moved {moves} times; "
            "clients per pod after:",
            {p: [_pod(f) for f in followers].count(p) for p in now},
        )
        assert not ring.missing(), f"lost: {ring.missing()}"
        assert all(f.ready.is_set() for f in followers)
        assert all(f.client.joined.get("resumed") for f in followers if f.moves), [
            f.errors for f in followers
        ]
        # The operator owns the replica count: an upgrade asking for 2 leaves its 4.
        await asyncio.to_thread(
            h.run, "upgrade", "roomwire", str(CHART), "-n", ns, "--reuse-values",
            "--set", "signaling.replicas=2", "--wait", "--timeout", "60s",
        )  # fmt: skip
        d = await asyncio.to_thread(
            cl.kube.get, f"/apis/apps/v1/namespaces/{ns}/deployments/signaling"
        )
        print(f"after helm upgrade --set signaling.replicas=2: replicas {d['spec']['replicas']}")
        assert d["spec"]["replicas"] == 4
        history = await asyncio.to_thread(h.run, "history", "roomwire", "-n", ns)
        print(history.stdout)
        assert "deployed" in history.stdout.splitlines()[-1]
    finally:
        ring.stopping.set()
        if ring.task is not None:
            ring.task.cancel()
            with contextlib.suppress(BaseException):
                await ring.task
        for f in followers:
            with contextlib.suppress(Exception):
                await f.client.send({"type": "leave"})
            await f.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(h.run, "uninstall", "roomwire", "-n", ns, "--wait", check=False)
