"""The whole system on the local cluster with ``RUNTIME=podman`` (markers ``cluster`` and
``images``): every signaling pod and the operator a podman container of the image
``make images`` built, run by the node agent as the shipped manifests ask.

This module starts a cluster of its own (its node agent with ``DEVCLUSTER_RUNTIME=podman``,
under ``.cluster/pytest-podman-<pid>/``) after building the images, applies ``manifests/``
(the namespace ``roomwire``, the CRD, Redis, the signaling Deployment, the operator with
its RBAC) and ``manifests/samples/`` as shipped, except the operator's sizing: 40 sessions
a pod instead of 200 and the tests' fast loops, so that 100 clients ask for 4 pods. Redis
is the manifests' own pod, which stays a process (``redis`` is no image of this project:
the node agent runs Debian's ``redis-server`` for it). Clients are real WebSocket clients
through the Service, following the operator's ``migrate``/``reconnect``. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster import control_plane, podman
from devcluster.pytest_plugin import KubeCluster
from meetingroom_operator.planning.rebalance import minimum_moves, skew
from meetingroom_operator.store import Store
from signaling.client import Client
from tests.operator.harness import FAST_OPERATOR_ENV, Follower, kustomize
from tests.support import ROOT, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.images, pytest.mark.timeout(1200)]

NS = "roomwire"
SIGNALING = "app.kubernetes.io/name=signaling"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"
REDIS = "app.kubernetes.io/name=redis"
ROOMS, PER_ROOM = 25, 4  # 100 sessions: 40 a pod -> 3 pods + 1 spare = 4
OPERATOR_ENV = {
    **FAST_OPERATOR_ENV,
    "ROOMWIRE_PER_POD": "40",
    "ROOMWIRE_BUFFER_PODS": "1",
    "ROOMWIRE_MIN_REPLICAS": "2",
    "ROOMWIRE_MAX_REPLICAS": "4",
}


@pytest.fixture(scope="module")
def image_ids() -> dict[str, str]:
    """``make images``; the ID of each built image, by component."""
    cp = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-images.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert cp.returncode == 0, f"make images failed:\n{cp.stderr[-3000:]}"
    ids = {}
    for component in podman.IMAGES:
        info = podman.image_info(podman.image_tag(component))
        assert info is not None, component
        ids[component] = str(info["Id"])
    return ids


@pytest.fixture(scope="module")
def podman_cluster(image_ids: dict[str, str]) -> Iterator[KubeCluster]:
    if os.environ.get("ROOMWIRE_CLUSTER", "local") != "local":
        pytest.skip("starts a local cluster of its own, with RUNTIME=podman")
    state = control_plane.DEFAULT_STATE / f"pytest-podman-{os.getpid()}"
    try:
        info = control_plane.up(state, say=lambda m: print(f"[devcluster] {m}"), runtime="podman")
    except control_plane.ClusterError as e:
        pytest.fail(f"local cluster with RUNTIME=podman did not start: {e}")
    try:
        yield KubeCluster(
            info.kubeconfig, info.kube(), True, state, info.proxy_admin, info.kubectl, info.dns
        )
    finally:
        control_plane.down(state, say=lambda m: None)
        left = podman.cluster_containers(state)
        shutil.rmtree(state, ignore_errors=True)
        assert not left, f"containers left after devcluster down: {left}"


def shipped(cluster: KubeCluster) -> list[dict[str, Any]]:
    """``manifests/`` as kustomize renders it, the operator's sizing set for this test."""
    objs = kustomize(cluster.kubectl, ROOT / "manifests")
    for o in objs:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "meetingroom-operator":
            c = o["spec"]["template"]["spec"]["containers"][0]
            env = [e for e in c["env"] if e["name"] not in OPERATOR_ENV]
            c["env"] = env + [
                {"name": k, "value": v}
                for k, v in OPERATOR_ENV.items()
                if k != "ROOMWIRE_METRICS_PORT"  # the operator's readiness is served there
            ]
    return objs


def crd_established(cluster: KubeCluster) -> bool:
    got = cluster.kube.get_or_none(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/meetingrooms.rtc.roomwire.io"
    )
    conds = ((got or {}).get("status") or {}).get("conditions") or []
    return any(x["type"] == "Established" and x["status"] == "True" for x in conds)


def room_phases(cluster: KubeCluster) -> dict[str, str]:
    items = cluster.kube.get(f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{NS}/meetingrooms")
    return {
        r["metadata"]["name"]: str((r.get("status") or {}).get("phase", "")) for r in items["items"]
    }


def proc_uids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return line.split()[1:]
    return []


def containers_of(cluster: KubeCluster, selector: str, image_id: str) -> list[dict[str, Any]]:
    """Each ready pod's container, checked to be a podman container of ``image_id``
    running as uid 10001 on a read-only root filesystem; podman's view of each."""
    out = []
    for pod in cluster.ready_pods(NS, selector):
        name = pod["metadata"]["name"]
        (cs,) = pod["status"]["containerStatuses"]
        assert cs["containerID"].startswith("podman://"), (name, cs["containerID"])
        assert cs["imageID"] == f"sha256:{image_id}", (name, cs["imageID"])
        cid = cs["containerID"].removeprefix("podman://")
        (got,) = json.loads(podman.run("container", "inspect", cid).stdout)
        assert got["Image"] == image_id and got["State"]["Running"], (name, got["State"])
        assert got["HostConfig"]["ReadonlyRootfs"] is True, name
        assert got["Config"]["Labels"]["io.kubernetes.pod.name"] == name
        uids = proc_uids(int(got["State"]["Pid"]))
        assert set(uids) == {"10001"}, (name, uids)
        out.append({"pod": name, "container": cid[:12], "memory": got["HostConfig"]["Memory"]})
    return out


def redis_url(cluster: KubeCluster, ip: str) -> str:
    """The manifests' Redis at ``ip``, as the operator reaches it: with the ACL user of
    the Secret ``roomwire-redis`` when the manifests have one."""
    secret = cluster.kube.get_or_none(f"/api/v1/namespaces/{NS}/secrets/roomwire-redis")
    password = ((secret or {}).get("data") or {}).get("password")
    if password is None:
        return f"redis://{ip}:6379/0"
    return f"redis://roomwire:{base64.b64decode(password).decode()}@{ip}:6379/0"


async def counts(store: Store, pods: list[str]) -> Counter[str]:
    c: Counter[str] = Counter({p: 0 for p in pods})
    c.update(s.pod for s in await store.live_sessions(pods))
    return c


async def connect(url: str) -> list[Follower]:
    sem = asyncio.Semaphore(25)

    async def one(r: int, p: int) -> Follower:
        async with sem:
            cl = Client(url)
            await cl.connect()
            await cl.join(f"room-{r}", f"r{r}p{p}")
            return Follower(cl, url, f"room-{r}", f"r{r}p{p}")

    made = [one(r, p) for r in range(ROOMS) for p in range(PER_ROOM)]
    followers = list(await asyncio.gather(*made))
    for f in followers:
        f.start()
    return followers


async def test_rooms_ready_and_a_2_to_4_rebalance_with_every_pod_a_container_of_the_image(
    podman_cluster: KubeCluster, image_ids: dict[str, str]
) -> None:
    cluster = podman_cluster
    t0 = time.monotonic()
    for o in shipped(cluster):
        await asyncio.to_thread(cluster.apply, o)
    await asyncio.to_thread(cluster.wait_for, lambda: crd_established(cluster), 30, "CRD")
    for o in kustomize(cluster.kubectl, ROOT / "manifests" / "samples"):
        await asyncio.to_thread(cluster.apply, o)
    for selector, n in ((REDIS, 1), (SIGNALING, 2), (OPERATOR, 1)):
        await asyncio.to_thread(cluster.wait_ready_pods, NS, selector, n, 120)
    available = time.monotonic() - t0

    def rooms_ready() -> dict[str, str] | None:
        phases = room_phases(cluster)
        ok = phases.get("boardroom") == "Ready" and phases.get("huddle-2") == "Ready"
        return phases if ok else None

    phases = await asyncio.to_thread(cluster.wait_for, rooms_ready, 60, "sample rooms Ready")
    ready_after = time.monotonic() - t0
    assert phases["all-hands"] == "Idle"  # its meeting window is in 2030
    before = containers_of(cluster, SIGNALING, image_ids["workload"])
    assert len(before) == 2 and all(c["memory"] == 2**30 for c in before), before
    (op,) = containers_of(cluster, OPERATOR, image_ids["operator"])
    assert op["memory"] == 256 * 2**20, op
    (redis_pod,) = cluster.ready_pods(NS, REDIS)
    assert redis_pod["status"]["containerStatuses"][0]["containerID"].startswith("local://")

    store = Store(redis_url(cluster, cluster.local_ip(redis_pod)))
    host, port = await asyncio.to_thread(cluster.service_address, NS, "signaling", 80)
    followers = await connect(f"ws://{host}:{port}/ws")
    try:
        t1 = time.monotonic()
        old = sorted(p["metadata"]["name"] for p in cluster.ready_pods(NS, SIGNALING))

        async def all_registered() -> Counter[str] | None:
            c = await counts(store, old)
            return c if sum(c.values()) == ROOMS * PER_ROOM else None

        start = await eventually(all_registered, 20, "every session registered")
        assert len(old) == 2 and set(start) == set(old)
        # The operator sees 100 sessions, 40 a pod: it scales 2 -> 4 and rebalances.
        four = await asyncio.to_thread(cluster.wait_ready_pods, NS, SIGNALING, 4, 120)
        scaled_after = time.monotonic() - t1
        pods = sorted(p["metadata"]["name"] for p in four)

        async def balanced() -> Counter[str] | None:
            c = await counts(store, pods)
            return c if sum(c.values()) == ROOMS * PER_ROOM and skew(c) <= 1.15 else None

        after = await eventually(balanced, 120, "100 sessions balanced on 4 pods", every=0.5)
        converged_after = time.monotonic() - t1
        moved = sum(f.moves for f in followers)
        assert max(f.moves for f in followers) <= 1, "a session was moved twice"
        base = Counter({p: start.get(p, 0) for p in pods})
        result = {
            "deployments ready (s)": round(available, 1),
            "rooms Ready (s)": round(ready_after, 1),
            "4 pods ready after clients (s)": round(scaled_after, 1),
            "balanced after clients (s)": round(converged_after, 1),
            "before": dict(start),
            "after": dict(after),
            "moved": moved,
            "minimum": minimum_moves(base),
        }
        print("podman e2e:", result)
        # Every signaling pod, the two first and the two new, a container of the image.
        final = containers_of(cluster, SIGNALING, image_ids["workload"])
        assert sorted(c["pod"] for c in final) == pods, final
        labelled = podman.cluster_containers(cluster.state_dir or Path())
        assert len(labelled) == 5, labelled  # 4 signaling + the operator; Redis a process
        # Relaying still works after the moves (r0p0 to r0p1, wherever each now is).
        a, b = followers[0], followers[1]  # r0p0, r0p1: the same room
        await a.send_n(b.peer, 0)
        await eventually(lambda: _got(b, a.peer), 10, "a relayed frame after the rebalance")
    finally:
        for f in followers:
            await f.stop()
        await store.close()


async def _got(f: Follower, sender: str) -> bool:
    return 0 in f.received.get(sender, [])


def test_a_root_user_is_refused_and_a_failing_container_restarts(
    podman_cluster: KubeCluster, image_ids: dict[str, str]
) -> None:
    """Two pods of the signaling image in a namespace of their own: one asks for uid 0
    with ``runAsNonRoot`` (the kubelet refuses it: Pending, CreateContainerConfigError,
    one Warning event, no container); one whose command exits 3 is restarted with
    back-off, each run a new container, and an ``exec`` readiness probe runs inside it."""
    cluster = podman_cluster
    ns = f"t-{os.getpid()}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    sa = f"/api/v1/namespaces/{ns}/serviceaccounts/default"
    cluster.wait_for(lambda: cluster.kube.get_or_none(sa), 30, f"default ServiceAccount in {ns}")
    image = podman.image_tag("workload")

    def pod(name: str, container: dict[str, Any], sc: dict[str, Any]) -> dict[str, Any]:
        spec = {"securityContext": sc, "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": image, **container}]}  # fmt: skip
        meta = {"name": name, "namespace": ns}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    cluster.apply(pod("as-root", {"args": ["serve"]}, {"runAsNonRoot": True, "runAsUser": 0}))
    script = "import os, sys; print('uid', os.getuid(), flush=True); sys.exit(3)"
    crashing = {
        "command": ["python", "-c", script],
        "readinessProbe": {"exec": {"command": ["id", "-u"]}, "periodSeconds": 1},
    }
    cluster.apply(pod("exits-3", crashing, {"runAsNonRoot": True}))

    def status(name: str) -> dict[str, Any]:
        got = cluster.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        result: dict[str, Any] = got.get("status") or {}
        return result

    def refused() -> dict[str, Any] | None:
        (cs,) = status("as-root").get("containerStatuses") or [{}]
        waiting = (cs.get("state") or {}).get("waiting") or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = cluster.wait_for(refused, 30, "as-root refused")
    assert "runAsUser breaks non-root policy" in waiting["message"], waiting
    assert status("as-root")["phase"] == "Pending"
    events = cluster.kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
    said = [e for e in events if e["involvedObject"]["name"] == "as-root"]
    assert any("non-root" in e["message"] and e["type"] == "Warning" for e in said), said

    def restarted() -> dict[str, Any] | None:
        (cs,) = status("exits-3").get("containerStatuses") or [{}]
        return cs if cs.get("restartCount", 0) >= 2 else None

    cs = cluster.wait_for(restarted, 60, "exits-3 restarted twice")
    assert cs["lastState"]["terminated"]["exitCode"] == 3, cs
    assert cs["imageID"] == f"sha256:{image_ids['workload']}", cs
    log = cluster.pod_log(ns, "exits-3", "c")
    assert log.count("uid 10001") >= 2, log[-2000:]  # the image's user, each run
    pods_of_containers = []
    for cid in podman.cluster_containers(cluster.state_dir or Path()):
        labels = "{{json .Config.Labels}}"
        cp = podman.run("container", "inspect", "--format", labels, cid, check=False)
        if cp.returncode == 0:  # (a container of exits-3 may be gone meanwhile)
            pods_of_containers.append(json.loads(cp.stdout).get("io.kubernetes.pod.name"))
    assert "as-root" not in pods_of_containers, pods_of_containers
    cluster.kube.delete(f"/api/v1/namespaces/{ns}")
