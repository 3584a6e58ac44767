"""Operator benchmark (issue 4), against the real local control plane, real Redis and
real signaling pods. Run: ``python -m bench.operator_bench`` (``make bench`` runs it).

1. 1,000 MeetingRooms created at once (32 concurrent API clients): seconds until every
   one is Ready, and the operator's peak RSS (VmHWM of the kopf process).
2. Rebalance: 2 pods, 400 clients (100 rooms of 4) through the service proxy, scaled
   out to 4. First without the operator (the baseline: what Kubernetes alone does),
   then with it: seconds until max/mean <= 1.15, and moved sessions / minimum moves.

Results are printed and written to ``bench/RESULTS.md`` under "## Operator".
``ROOMWIRE_CLUSTER=running`` reuses the cluster ``make cluster-up`` started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from tests.operator.harness import (
    CRD,
    FAST_OPERATOR_ENV,
    ROOT,
    SECRET,
    Follower,
    kustomize,
    room,
    workload_objects,
)
from tests.support import free_port, stop_process

from bench.results import write_section
from devcluster import control_plane
from devcluster.pytest_plugin import KubeCluster, _local
from meetingroom_operator.planning.rebalance import minimum_moves, skew
from meetingroom_operator.store import Store
from signaling.client import Client

SIGNALING = "app.kubernetes.io/name=signaling"
ROOMS = int(os.environ.get("BENCH_ROOMS", "1000"))
CLIENT_ROOMS = int(os.environ.get("BENCH_CLIENT_ROOMS", "100"))


def say(msg: str) -> None:
    print(f"[operator-bench] {msg}", flush=True)


class Operator:
    """The real operator as a local process (admin kubeconfig), so that its RSS is ours
    to read."""

    def __init__(self, cluster: KubeCluster, ns: str, redis_url: str, env: dict[str, str]):
        full = {k: v for k, v in os.environ.items() if not k.startswith("ROOMWIRE_")}
        full.update(FAST_OPERATOR_ENV)
        full.update({
            "KUBECONFIG": str(cluster.kubeconfig), "ROOMWIRE_NAMESPACE": ns,
            "ROOMWIRE_REDIS_URL": redis_url, "ROOMWIRE_CONTROL_SECRET": SECRET,
            "MALLOC_ARENA_MAX": "2", **env,
        })  # fmt: skip
        self.log = Path(tempfile.mkstemp(prefix="operator-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={ns}",
                 "--quiet", "-m", "meetingroom_operator.main"],
                stdout=out, stderr=subprocess.STDOUT, env=full, cwd=ROOT,
            )  # fmt: skip

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        stop_process(self.proc, 20)


def setup_namespace(cluster: KubeCluster, ns: str, redis_url: str, replicas: int) -> None:
    cluster.kube.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": ns}})  # fmt: skip
    cluster.wait_for(
        lambda: cluster.kube.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
        30, "default ServiceAccount",
    )  # fmt: skip
    objs = kustomize(cluster.kubectl, ROOT / "manifests" / "workload")
    for o in workload_objects(objs, ns, redis_url, replicas):
        cluster.apply(o)
    cluster.wait_ready_pods(ns, SIGNALING, replicas, timeout=120)


def bench_rooms(cluster: KubeCluster, redis_url: str) -> dict[str, Any]:
    ns = f"bench-rooms-{os.getpid()}"
    setup_namespace(cluster, ns, redis_url, 2)
    op = Operator(cluster, ns, redis_url, {"ROOMWIRE_SCALING_ENABLED": "false",
                                           "ROOMWIRE_REBALANCE_ENABLED": "false",
                                           "ROOMWIRE_STATUS_INTERVAL_S": "5"})  # fmt: skip
    try:
        time.sleep(3)  # the operator's start-up (not counted)
        base = f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{ns}/meetingrooms"
        objs = [room(ns, f"room-{i:04d}", 2 + i % 30, displayName=f"Room {i}")
                for i in range(ROOMS)]  # fmt: skip
        say(f"creating {ROOMS} MeetingRooms")
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda o: cluster.kube.post(base, o), objs))
        created = time.monotonic() - started

        def ready() -> int:
            items = cluster.kube.get(base)["items"]
            return sum(1 for o in items if (o.get("status") or {}).get("phase") == "Ready")

        n = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            n = ready()
            if n == ROOMS:
                break
            time.sleep(0.5)
        all_ready = time.monotonic() - started
        rss = op.peak_rss_mb()
        say(f"{n}/{ROOMS} Ready after {all_ready:.1f}s (created in {created:.1f}s), "
            f"operator peak RSS {rss:.0f} MB")  # fmt: skip
        return {"rooms": ROOMS, "ready": n, "created_s": created, "ready_s": all_ready,
                "peak_rss_mb": rss}  # fmt: skip
    finally:
        op.stop()
        cluster.kube.delete(f"/api/v1/namespaces/{ns}")


async def _counts(store: Store, pods: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter({p: 0 for p in pods})
    counts.update(s.pod for s in await store.live_sessions(pods))
    return counts


def names(cluster: KubeCluster, ns: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in cluster.ready_pods(ns, SIGNALING))


async def bench_rebalance(cluster: KubeCluster, redis_url: str) -> dict[str, Any]:
    ns = f"bench-rebalance-{os.getpid()}"
    await asyncio.to_thread(setup_namespace, cluster, ns, redis_url, 2)
    store = Store(redis_url)
    host, port = await asyncio.to_thread(cluster.service_address, ns, "signaling", 80)
    url = f"ws://{host}:{port}/ws"
    followers: list[Follower] = []
    op: Operator | None = None
    try:
        sem = asyncio.Semaphore(50)

        async def one(r: int, p: int) -> Follower:
            async with sem:
                cl = Client(url)
                await cl.connect()
                await cl.join(f"room-{r}", f"r{r}p{p}")
                return Follower(cl, url, f"room-{r}", f"r{r}p{p}")

        followers = list(await asyncio.gather(
            *(one(r, p) for r in range(CLIENT_ROOMS) for p in range(4))))  # fmt: skip
        for f in followers:
            f.start()
        total = len(followers)
        say(f"{total} clients connected through the service proxy; scaling out to 4")
        await asyncio.to_thread(cluster.kubectl, "scale", "-n", ns, "deployment/signaling",
                                "--replicas=4")  # fmt: skip
        await asyncio.to_thread(cluster.wait_ready_pods, ns, SIGNALING, 4, 120)
        pods = await asyncio.to_thread(names, cluster, ns)
        await asyncio.sleep(15)  # the baseline: Kubernetes alone, 15 s after scale-out
        base = await _counts(store, pods)
        baseline_skew = skew(base)
        minimum = minimum_moves(base)
        say(f"baseline (no operator) after 15 s: {dict(base)} skew {baseline_skew:.2f}")
        started = time.monotonic()
        op = Operator(cluster, ns, redis_url, {"ROOMWIRE_SCALING_ENABLED": "false"})
        reached: float | None = None
        counts = base
        while time.monotonic() - started < 120:
            counts = await _counts(store, pods)
            if sum(counts.values()) == total and skew(counts) <= 1.15:
                reached = time.monotonic() - started
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)
        moved = sum(f.moves for f in followers)
        twice = sum(1 for f in followers if f.moves > 1)
        result = {
            "clients": total, "baseline_counts": dict(base), "baseline_skew": baseline_skew,
            "reached_s": reached, "final_counts": dict(counts), "final_skew": skew(counts),
            "moved": moved, "minimum": minimum, "ratio": moved / minimum if minimum else 0.0,
            "moved_twice": twice, "peak_rss_mb": op.peak_rss_mb(),
        }  # fmt: skip
        say(f"with the operator: {result}")
        return result
    finally:
        for f in followers:
            await f.stop()
        if op is not None:
            op.stop()
        await store.close()
        await asyncio.to_thread(cluster.kube.delete, f"/api/v1/namespaces/{ns}")


def _counts_of(counts: dict[str, int]) -> str:
    return "/".join(str(n) for n in sorted(counts.values(), reverse=True))


def write_results(rooms: dict[str, Any], reb: dict[str, Any], env: str) -> None:
    ok = lambda b: "meets" if b else "MISSES"  # noqa: E731
    reached = reb["reached_s"]
    took = f"{reached:.1f} s" if reached is not None else "not reached in 120 s"
    lines = [
        "## Operator",
        "",
        f"`python -m bench.operator_bench` ({env}), {time.strftime('%Y-%m-%d')}: the real local",
        "control plane (devcluster), real Redis, real signaling pods; the operator runs as a",
        "local kopf process so that its peak RSS (VmHWM) can be read. Time to Ready counts",
        "from the first create request; the API server's own write rate is part of it.",
        "",
        "| measure | result | target | |",
        "| --- | --- | --- | --- |",
        f"| {rooms['rooms']} MeetingRooms created at once: all Ready | "
        f"{rooms['ready_s']:.1f} s ({rooms['ready']}/{rooms['rooms']} Ready; creating them "
        f"took {rooms['created_s']:.1f} s) | <= 60 s | {ok(rooms['ready_s'] <= 60)} |",
        f"| operator peak RSS with {rooms['rooms']} rooms | {rooms['peak_rss_mb']:.0f} MB | "
        f"<= 200 MB | {ok(rooms['peak_rss_mb'] <= 200)} |",
        f"| rebalance, no operator (baseline): max/mean 15 s after 2 -> 4 pods | "
        f"{reb['baseline_skew']:.2f} (sessions per pod {_counts_of(reb['baseline_counts'])}) "
        f"| - | |",
        f"| rebalance with the operator: time to max/mean <= 1.15 | "
        f"{took} "
        f"(final max/mean {reb['final_skew']:.2f}: {_counts_of(reb['final_counts'])}) | <= 60 s | "
        f"{ok(reached is not None and reached <= 60)} |",
        f"| moved sessions / minimum moves | {reb['moved']} / {reb['minimum']} = "
        f"{reb['ratio']:.2f} (sessions moved twice: {reb['moved_twice']}) | <= 1.2 | "
        f"{ok(reb['ratio'] <= 1.2)} |",
        "",
    ]
    section = "\n".join(lines)
    path = write_section("## Operator", section)
    say(f"results written to {path.relative_to(ROOT)}")


def main() -> int:
    running = os.environ.get("ROOMWIRE_CLUSTER") == "running"
    state = control_plane.DEFAULT_STATE if running else (
        control_plane.DEFAULT_STATE / f"bench-{os.getpid()}")  # fmt: skip
    if not running:
        control_plane.up(state, say=say)
    redis_dir = tempfile.mkdtemp(prefix="rw-bench-redis-")
    rport = free_port()
    redis_proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(rport), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", redis_dir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        cluster = _local(state)
        cluster.apply(yaml.safe_load(CRD.read_text()))
        time.sleep(2)
        r1 = bench_rooms(cluster, f"redis://127.0.0.1:{rport}/1")
        r2 = asyncio.run(bench_rebalance(cluster, f"redis://127.0.0.1:{rport}/2"))
        write_results(r1, r2, f"{os.cpu_count()} CPUs")
        return 0
    finally:
        stop_process(redis_proc)
        shutil.rmtree(redis_dir, ignore_errors=True)
        if not running:
            control_plane.down(state, say=lambda m: None)
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
