"""The shipped manifests, applied verbatim, as a user would, on the local cluster.

``kubectl apply -k manifests/`` then ``kubectl apply -k manifests/samples/``: no URL,
image or namespace substituted, nothing removed. The tests of this module share that one
deployment (namespace ``roomwire``, as shipped) and run in order:

1. every Deployment Available within 60 s, the sample MeetingRooms Ready, no container
   restarted;
2. clients through the Service join a sample room and relay across pods; the operator
   scales out for a new room and the new pod takes connections; a pod deleted drains
   and its clients resume elsewhere without loss;
3. the Redis process stopped for 30 s (SIGSTOP, then SIGCONT: the container stays, its
   data too): no pod restarts, every signaling pod's and the operator's ``/readyz``
   503 during, 200 within 5 s after;
4. issue 14 with the operator running: kill -9 of one signaling pod; offers to its peer at
   3, 8, 13 and 20 s all acked, all delivered in order, exactly once, when the peer
   resumes on another pod at 25 s; the dead pod's sessions turned to grace once (by the
   operator or a surviving pod, never both);
5. Redis scaled to 0 and every signaling and operator pod replaced: the new pods live
   without Redis for 30 s (``/healthz`` 200, ``/readyz`` 503), Redis comes back, each
   ``/readyz`` is 200 within 5 s; no restart.

Opt-in: ``-m cluster``. About 2.5 minutes on a 2-core machine (cluster start included),
most of it the scenarios' own schedules (a drain, two 30 s Redis outages, the 25 s of
issue 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from devcluster.addresses import to_local
from devcluster.pytest_plugin import KubeCluster
from signaling.client import Client
from tests.cluster.objects import deployment_available
from tests.operator.harness import Follower
from tests.support import ROOT, eventually

pytestmark = pytest.mark.cluster

NS = "roomwire"  # the shipped namespace
SIGNALING = "app.kubernetes.io/name=signaling"
OPERATOR = "app.kubernetes.io/name=meetingroom-operator"
REDIS = "app.kubernetes.io/name=redis"
DEPLOYMENTS = ("meetingroom-operator", "redis", "signaling")
# The samples' phases: all-hands has its meeting window in 2030, so it waits Idle.
SAMPLE_PHASES = {"all-hands": "Idle", "boardroom": "Ready", "huddle-2": "Ready"}
MR = f"/apis/rtc.roomwire.io/v1alpha1/namespaces/{NS}/meetingrooms"

Obj = dict[str, Any]


@dataclass
class Deployed:
    cluster: KubeCluster
    available_s: float  # kubectl apply -k manifests/ -> every Deployment Available
    rooms_ready_s: float
    log: list[str] = field(default_factory=list)

    # -- reading the cluster
    def pods(self, selector: str = "") -> list[Obj]:
        return self.cluster.pods(NS, selector)

    def ready(self, selector: str) -> list[Obj]:
        return self.cluster.ready_pods(NS, selector)

    def by_name(self, selector: str) -> dict[str, Obj]:
        return {p["metadata"]["name"]: p for p in self.ready(selector)}

    def restarts(self, selector: str = "") -> dict[str, int]:
        """restartCount of every container of every pod (not being deleted)."""
        return {
            f"{p['metadata']['name']}/{cs['name']}": int(cs.get("restartCount", 0))
            for p in self.pods(selector)
            if not p["metadata"].get("deletionTimestamp")
            for cs in (p.get("status") or {}).get("containerStatuses") or []
        }

    def replicas(self, name: str = "signaling") -> int:
        d = self.cluster.kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
        return int(d["spec"]["replicas"])

    def service_url(self) -> str:
        host, port = self.cluster.service_address(NS, "signaling", 80)
        return f"ws://{host}:{port}/ws"

    def direct_url(self, pod: Obj) -> str:
        return f"ws://{self.cluster.local_ip(pod)}:8080/ws"

    def pid(self, pod: Obj, container: str) -> int:
        """The container's process, as the node agent records it."""
        assert self.cluster.state_dir is not None
        uid = pod["metadata"]["uid"]
        files = list(self.cluster.state_dir.rglob(f"pod-{uid}-{container}.json"))
        assert files, f"no pid record for {pod['metadata']['name']}/{container}"
        return int(json.loads(files[0].read_text())["pid"])

    def logs(self, selector: str, container: str) -> dict[str, str]:
        return {
            p["metadata"]["name"]: self.cluster.pod_log(NS, p["metadata"]["name"], container)
            for p in self.pods(selector)
        }


def _room_phases(cluster: KubeCluster) -> dict[str, str]:
    got = cluster.kube.get_or_none(MR)
    return {
        o["metadata"]["name"]: str((o.get("status") or {}).get("phase", ""))
        for o in (got or {}).get("items") or []
    }


@pytest.fixture(scope="module")
def deployed(kube_cluster: KubeCluster) -> Iterator[Deployed]:
    kube_cluster.require_local()
    if kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{NS}") is not None:
        pytest.fail(f"namespace {NS} exists already on this cluster: not a fresh install")
    started = time.monotonic()
    out = kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
    print(out.stdout)
    samples = kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "samples"), check=False)
    print(samples.stdout, samples.stderr)
    assert samples.returncode == 0, samples.stderr

    def every_deployment_available() -> list[str] | None:
        items = kube_cluster.kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments")["items"]
        names = sorted(d["metadata"]["name"] for d in items if deployment_available(d))
        return names if names == sorted(DEPLOYMENTS) else None

    try:
        kube_cluster.wait_for(every_deployment_available, 120, "every Deployment Available")
    except TimeoutError:
        for p in kube_cluster.pods(NS):
            print(p["metadata"]["name"], json.dumps(p.get("status"), default=str)[:1500])
        raise
    available_s = time.monotonic() - started
    print(f"every Deployment Available {available_s:.1f} s after kubectl apply -k manifests/")
    # The waits docs/cluster.md gives users hold too (they return at once by now).
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/meetingrooms.rtc.roomwire.io", "--timeout=30s"
    )
    kube_cluster.kubectl(
        "-n", NS, "wait", "deployment", "--all", "--for=condition=Available", "--timeout=60s"
    )

    def rooms_ready() -> dict[str, str] | None:
        phases = _room_phases(kube_cluster)
        return phases if phases == SAMPLE_PHASES else None

    try:
        kube_cluster.wait_for(rooms_ready, 60, f"sample MeetingRooms {SAMPLE_PHASES}")
    finally:
        print("rooms:", _room_phases(kube_cluster))
    rooms_ready_s = time.monotonic() - started
    print(f"sample MeetingRooms Ready {rooms_ready_s:.1f} s after kubectl apply -k manifests/")
    yield Deployed(kube_cluster, available_s, rooms_ready_s)
    kube_cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_manifests_come_up_verbatim_within_60s_with_no_restarts(deployed: Deployed) -> None:
    assert deployed.available_s <= 60, f"Available after {deployed.available_s:.1f} s"
    restarts = deployed.restarts()
    print("restartCount:", restarts)
    assert len(restarts) == 4 and set(restarts.values()) == {0}, restarts
    assert deployed.replicas() >= 2


# ---- clients ---------------------------------------------------------------------------


async def _join(url: str, room: str, peer: str, service_url: str) -> Follower:
    """A client that joins at ``url`` and follows reconnect/migrate orders (and resumes
    through the Service when its connection drops)."""
    cl = Client(url)
    await cl.connect()
    await cl.join(room, peer)
    f = Follower(cl, service_url, room, peer)
    f.start()
    return f


def _pod(f: Follower) -> str:
    return str(f.client.joined.get("pod", ""))


async def _leave(followers: list[Follower]) -> None:
    """End the sessions (``leave``), so that no grace session outlives the test."""
    for f in followers:
        if f.task is not None:
            f.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await f.task
        with contextlib.suppress(Exception):
            await f.client.send({"type": "leave"})
            await f.client.wait_closed(5)
        await f.client.close()


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

    async def _run(self, every: float) -> None:
        while not self.stopping.is_set():
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    def start(self, every: float = 0.5) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(every))

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await self.task

    def missing(self) -> dict[str, list[int]]:
        return {
            a.peer: sorted(set(range(self.sent.get(a.peer, 0))) - set(b.received.get(a.peer, [])))
            for a, b in self.pairs()
            if set(b.received.get(a.peer, [])) != set(range(self.sent.get(a.peer, 0)))
        }

    async def check(self) -> int:
        """Every acked frame delivered (bounded wait); returns how many were."""

        async def complete() -> bool:
            return not self.missing()

        with contextlib.suppress(AssertionError):
            await eventually(complete, 15, "every acked frame delivered")
        assert not self.missing(), f"lost: {self.missing()}"
        return sum(self.sent.values())


def _apply_room(d: Deployed, name: str, capacity: int) -> None:
    room = {
        "apiVersion": "rtc.roomwire.io/v1alpha1",
        "kind": "MeetingRoom",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"displayName": name, "capacity": capacity},
    }
    d.cluster.apply(room)


async def test_clients_through_the_service_relay_scale_out_and_a_pod_deleted(
    deployed: Deployed,
) -> None:
    d = deployed
    url = await asyncio.to_thread(d.service_url)
    old = sorted(await asyncio.to_thread(d.by_name, SIGNALING))
    assert len(old) == 2, old
    followers: list[Follower] = []
    ring = Ring(followers)
    try:
        # Through the Service: random endpoints, until both pods hold clients.
        for i in range(24):
            followers.append(await _join(url, "boardroom", f"b{i}", url))
            if i >= 5 and {_pod(f) for f in followers} == set(old):
                break
        by_pod = {p: sum(_pod(f) == p for f in followers) for p in old}
        print("boardroom clients per pod:", by_pod)
        assert set(by_pod) == set(old) and all(by_pod.values()), by_pod
        await ring.round()
        await ring.check()
        cross = sum(_pod(a) != _pod(b) for a, b in ring.pairs())
        print(f"relay: {len(ring.pairs())} pairs, {cross} of them across pods")
        assert cross >= 1
        ring.start()

        # Scale-out, as the operator decides it: a 300-seat room asks for one more pod.
        started = time.monotonic()
        await asyncio.to_thread(_apply_room, d, "town-hall", 300)
        await eventually(lambda: asyncio.to_thread(lambda: d.replicas() == 3), 30, "replicas 3")
        pods = await asyncio.to_thread(d.cluster.wait_ready_pods, NS, SIGNALING, 3, 60)
        took = time.monotonic() - started
        new = sorted({p["metadata"]["name"] for p in pods} - set(old))
        print(f"operator scaled signaling 2 -> 3: new pod {new} Ready {took:.1f} s after the room")
        assert len(new) == 1
        # The new pod takes connections through the Service.
        newcomers: list[Follower] = []
        for i in range(30):
            f = await _join(url, "boardroom", f"t{i}", url)
            newcomers.append(f)
            if _pod(f) == new[0]:
                break
        print(
            "newcomers per pod:",
            {p: [_pod(f) for f in newcomers].count(p) for p in [*old, *new]},
        )
        on_new = [f for f in newcomers if _pod(f) == new[0]]
        assert on_new, f"no connection through the Service reached {new[0]}"
        talk = Ring([on_new[0], followers[0]])
        await talk.round()
        await talk.check()
        await _leave([f for f in newcomers])

        # A pod deleted (graceful): it drains, its clients resume elsewhere, no loss.
        victim = max(old, key=lambda p: sum(_pod(f) == p for f in followers))
        moved = [f for f in followers if _pod(f) == victim]
        deleted = time.monotonic()
        await asyncio.to_thread(
            d.cluster.kubectl, "delete", "pod", "-n", NS, victim, "--wait=false"
        )

        async def resumed_elsewhere() -> bool:
            return all(_pod(f) not in ("", victim) and f.ready.is_set() for f in moved)

        await eventually(resumed_elsewhere, 60, f"clients of {victim} resumed elsewhere")
        print(
            f"pod {victim} deleted: its {len(moved)} clients resumed on other pods "
            f"{time.monotonic() - deleted:.1f} s later"
        )
        assert all(f.client.joined.get("resumed") for f in moved)
        await asyncio.to_thread(d.cluster.wait_ready_pods, NS, SIGNALING, 3, 60)
        await ring.stop()
        delivered = await ring.check()
        print(f"ring: {delivered} frames acked and delivered across scale-out and deletion")
        restarts = await asyncio.to_thread(d.restarts)
        print("restartCount:", restarts)
        assert set(restarts.values()) == {0}, restarts
    finally:
        ring.stopping.set()
        if ring.task is not None:
            ring.task.cancel()
            with contextlib.suppress(BaseException):
                await ring.task
        await _leave(followers)


# ---- Redis away for 30 s -------------------------------------------------------------


def _status(url: str) -> int:
    """The HTTP status of a GET (0: no answer within a second)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


@dataclass
class ReadyzWatch:
    """Every ``/readyz`` answer of each target, timestamped, polled every 0.2 s."""

    urls: dict[str, str]
    seen: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self.stopping.is_set():
            codes = await asyncio.gather(
                *(asyncio.to_thread(_status, u) for u in self.urls.values())
            )
            now = time.monotonic()
            for name, code in zip(self.urls, codes, strict=True):
                self.seen.setdefault(name, []).append((now, code))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.2)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await self.task

    def ok_for(self, since: float, span: float) -> bool:
        """Every target answered 200, and only 200, for ``span`` s, after ``since``."""
        for s in self.seen.values():
            after = [(at, code) for at, code in s if at >= since]
            bad = max((at for at, code in after if code != 200), default=since)
            ok = [at for at, code in after if code == 200 and at > bad]
            if not ok or ok[-1] - ok[0] < span:
                return False
        return True

    def figures(self, stopped: float, resumed: float) -> dict[str, dict[str, float | None]]:
        """Per target: seconds from the stop to its first non-200, and from the resume to
        the first 200 after which it stayed 200."""
        out: dict[str, dict[str, float | None]] = {}
        for name, s in self.seen.items():
            down = next((at - stopped for at, code in s if stopped <= at and code != 200), None)
            after = [(at, code) for at, code in s if at >= resumed]
            last_bad = max((at for at, code in after if code != 200), default=None)
            ok = [at for at, code in after if code == 200 and (last_bad is None or at > last_bad)]
            out[name] = {
                "unready_after_s": None if down is None else round(down, 2),
                "ready_again_s": round(ok[0] - resumed, 2) if ok else None,
            }
        return out


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def test_redis_stopped_for_30s_no_restarts_and_readiness_follows(
    deployed: Deployed,
) -> None:
    """The Redis process stopped (SIGSTOP) for 30 s, then continued: to every client it
    answers nothing, as a hung or cut-off Redis. The node agent's TCP probes still
    connect (the kernel accepts), so the Redis container is not restarted either."""
    d = deployed
    redis_pod = (await asyncio.to_thread(d.ready, REDIS))[0]
    pid = await asyncio.to_thread(d.pid, redis_pod, "redis")
    assert await asyncio.to_thread(_comm, pid) == "redis-server"
    signaling = await asyncio.to_thread(d.ready, SIGNALING)
    operator = await asyncio.to_thread(d.ready, OPERATOR)
    urls = {p["metadata"]["name"]: f"http://{d.cluster.local_ip(p)}:8080/readyz" for p in signaling}
    urls |= {p["metadata"]["name"]: f"http://{d.cluster.local_ip(p)}:9090/readyz" for p in operator}
    before = await asyncio.to_thread(d.restarts)
    assert {n: _status(u) for n, u in urls.items()} == dict.fromkeys(urls, 200)
    watch = ReadyzWatch(urls)
    watch.start()
    api_unready: set[str] = set()  # pods the API showed not Ready during the outage
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while time.monotonic() < stopped + 30:  # the scenario's own schedule
            ready = await asyncio.to_thread(d.by_name, "")
            api_unready |= set(urls) - set(ready)
            await asyncio.sleep(1)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    try:

        async def back() -> bool:
            return watch.ok_for(resumed, 1.0)

        await eventually(back, 15, "every /readyz 200 again (for a second)")
    finally:
        await watch.stop()
    figures = watch.figures(stopped, resumed)
    print("Redis stopped 30 s; /readyz per pod:", figures)
    api_back = await asyncio.to_thread(
        d.cluster.wait_for,
        lambda: set(urls) <= set(d.by_name("")),
        15,
        "every pod Ready in the API again",
    )
    print(
        f"pods the API showed not Ready during: {sorted(api_unready)}; "
        f"all Ready again {time.monotonic() - resumed:.1f} s after Redis continued ({api_back})"
    )
    after = await asyncio.to_thread(d.restarts)
    print("restartCount:", after)
    for name, f in figures.items():
        assert f["unready_after_s"] is not None, f"{name} stayed ready without Redis"
        assert f["ready_again_s"] is not None and f["ready_again_s"] <= 5, (name, f)
    assert after == before and set(after.values()) == {0}, (before, after)
    assert api_unready == set(urls), api_unready


# ---- issue 14: kill -9 with the operator running ---------------------------------------

REAPED = re.compile(r"pod (\S+) stopped heartbeating: (\d+) of its sessions now in grace")
DIED = re.compile(r"pod (\S+) died: (\d+) sessions to grace")
SESSIONS = re.compile(r"^roomwire_sessions(?:\{[^}]*\})? (\S+)$", re.M)


def _conversions(d: Deployed, dead: str) -> list[tuple[str, int]]:
    """(whose log, sessions turned) for every line, in every pod log of the namespace
    (deleted pods' too), that turned ``dead``'s sessions to grace: a signaling pod's
    ``stopped heartbeating`` or the operator's ``died``."""
    assert d.cluster.state_dir is not None
    out = []
    for path in sorted((d.cluster.state_dir / "logs" / "pods").glob(f"{NS}_*.log")):
        text = path.read_text(errors="replace")
        for pattern in (REAPED, DIED):
            out += [(path.stem, int(m[2])) for m in pattern.finditer(text) if m[1] == dead]
    return out


def _held(d: Deployed, pod: Obj) -> int:
    """The sessions a pod holds, from its own ``roomwire_sessions`` gauge."""
    url = f"http://{d.cluster.local_ip(pod)}:8080/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        m = SESSIONS.search(r.read().decode())
    assert m, "no roomwire_sessions gauge"
    return int(float(m[1]))


def _answers(frame_id: int, frame: Obj) -> bool:
    return frame.get("id") == frame_id


async def _at(start: float, offset: float) -> None:
    """Until ``offset`` seconds after ``start`` (the scenario's own schedule)."""
    await asyncio.sleep(max(0.0, start + offset - time.monotonic()))


async def test_kill_9_offers_acked_then_delivered_once_on_resume_with_the_operator(
    deployed: Deployed,
) -> None:
    """Issue 14 on the cluster, the operator running: alice on pod 1, bob on pod 2;
    kill -9 of pod 1; bob's offers to alice at 3, 8, 13 and 20 s are all acked; alice
    resumes on pod 2 at 25 s and gets all four, in order, exactly once. Pod 1's sessions
    were turned to grace once: by the operator or by a surviving pod, not both."""
    d = deployed
    pods = sorted(await asyncio.to_thread(d.ready, SIGNALING), key=lambda p: p["metadata"]["name"])
    assert len(pods) >= 2
    pod1, pod2 = pods[0], pods[1]
    name1, name2 = pod1["metadata"]["name"], pod2["metadata"]["name"]
    a, b = Client(d.direct_url(pod1)), Client(d.direct_url(pod2))
    try:
        await a.connect()
        await a.join("huddle-2", "alice")
        await b.connect()
        await b.join("huddle-2", "bob")
        assert (a.joined["pod"], b.joined["pod"]) == (name1, name2)
        held = await asyncio.to_thread(_held, d, pod1)
        before = await asyncio.to_thread(d.restarts)
        pid = await asyncio.to_thread(d.pid, pod1, "signaling")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        print(f"kill -9 of {name1} (pid {pid}), holding {held} session(s)")
        answers = []
        for i, offset in enumerate((3, 8, 13, 20)):
            await _at(killed, offset)
            await b.relay("offer", "alice", {"n": i}, frame_id=i)
            answers.append(await b.recv_until(partial(_answers, i), timeout=10))
        print("answers to bob's offers at 3, 8, 13, 20 s:", [f["type"] for f in answers])
        assert [f["type"] for f in answers] == ["ack"] * 4, answers

        await _at(killed, 25)
        reply = await a.resume(d.direct_url(pod2))
        assert reply["resumed"] is True and reply["pod"] == name2, reply
        got = [await a.recv_until(lambda f: f["type"] == "offer", timeout=5) for _ in range(4)]
        extra = await a.recv_within(
            1.0, lambda f: f["type"] == "offer"
        )  # a copy would come right behind the kept ones
        print(
            f"alice resumed on {name2} at 25 s: kept {reply.get('kept')}, "
            f"offers {[f['data']['n'] for f in got]}, seq {[f['seq'] for f in got]}, "
            f"extra {len(extra)}"
        )
        assert [f["data"]["n"] for f in got] == [0, 1, 2, 3]
        assert all(f["from"] == "bob" for f in got)
        seqs = [f["seq"] for f in got]
        assert seqs == list(range(seqs[0], seqs[0] + 4)), seqs
        assert extra == [], extra
        left = [
            f
            for f in await b.recv_within(0.1, lambda f: f["type"] == "peer-left")
            if f.get("peer") == "alice"
        ]
        assert left == [], left  # she was in grace, never gone

        conversions = await asyncio.to_thread(_conversions, d, name1)
        print(f"who turned {name1}'s sessions to grace:", conversions)
        assert sum(n for _, n in conversions) == held, (held, conversions)
        assert len([n for _, n in conversions if n]) == 1, conversions
        after = await asyncio.to_thread(d.restarts)
        print("restartCount:", after)
        expected = {**before, f"{name1}/signaling": before[f"{name1}/signaling"] + 1}
        assert after == expected, (before, after)  # only the killed container restarted
    finally:
        for c in (a, b):
            with contextlib.suppress(Exception):
                await c.send({"type": "leave"})
            await c.close()


# ---- Redis started 30 s after the pods --------------------------------------------------


def _redis_answers(address: tuple[str, int]) -> bool:
    """Redis answers a command (NOAUTH: the shipped Redis has its default user off)."""
    try:
        with socket.create_connection(address, timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


async def test_pods_started_30s_before_redis_stay_alive_and_become_ready_within_5s(
    deployed: Deployed,
) -> None:
    """Redis scaled to 0; every signaling pod and the operator replaced (their new pods
    start without Redis); 30 s later Redis is scaled back to 1. The new pods serve
    ``/healthz`` from the start, ``/readyz`` 503 until Redis answers and 200 within 5 s
    after; none restarts."""
    d = deployed
    kubectl = d.cluster.kubectl
    await asyncio.to_thread(kubectl, "-n", NS, "scale", "deployment/redis", "--replicas=0")
    await asyncio.to_thread(
        d.cluster.wait_for, lambda: not d.pods(REDIS) or None, 60, "the Redis pod gone"
    )
    old = {p["metadata"]["name"] for p in await asyncio.to_thread(d.pods)}
    for selector in (SIGNALING, OPERATOR):
        await asyncio.to_thread(kubectl, "-n", NS, "delete", "pod", "-l", selector, "--wait=false")
    want = await asyncio.to_thread(d.replicas)

    def started() -> dict[str, str] | None:
        """The new pods' /healthz URLs once each of them answers it."""
        health: dict[str, str] = {}
        for p in d.pods():
            name, ip = p["metadata"]["name"], (p.get("status") or {}).get("podIP")
            if name in old or not ip or p["metadata"].get("deletionTimestamp"):
                continue
            if name.startswith("signaling-"):
                health[name] = f"http://{to_local(ip)}:8080"
            elif name.startswith("meetingroom-operator-"):
                health[name] = f"http://{to_local(ip)}:8081"
        up = len(health) == want + 1 and all(
            _status(u + "/healthz") == 200 for u in health.values()
        )
        return health if up else None

    health = await asyncio.to_thread(d.cluster.wait_for, started, 60, "the new pods live")
    pods_up = time.monotonic()
    print(f"new pods serving /healthz without Redis: {sorted(health)}")
    urls = {
        n: (u + "/readyz" if n.startswith("signaling-") else u[: -len("8081")] + "9090/readyz")
        for n, u in health.items()
    }
    watch = ReadyzWatch(urls)
    watch.start()
    try:
        await _at(pods_up, 30)  # the scenario's own schedule
        await asyncio.to_thread(kubectl, "-n", NS, "scale", "deployment/redis", "--replicas=1")
        address = await asyncio.to_thread(d.cluster.service_address, NS, "redis", 6379)

        down_at = [time.monotonic()]  # when the last probe that found Redis away began

        async def redis_up() -> bool:
            began = time.monotonic()
            answers = await asyncio.to_thread(_redis_answers, address)
            if not answers:
                down_at[0] = began
            return answers

        await eventually(redis_up, 60, "Redis answering through its Service", every=0.1)
        redis_at = time.monotonic()

        async def back() -> bool:
            return watch.ok_for(redis_at, 1.0)

        await eventually(back, 15, "every /readyz 200 (for a second)")
    finally:
        await watch.stop()
    # Before Redis: what the pods answered while a probe still found Redis away (a pod
    # may reach it a moment before this test's next probe does).
    before = {n: [c for at, c in s if at < down_at[0]] for n, s in watch.seen.items()}
    figures = {n: f["ready_again_s"] for n, f in watch.figures(pods_up, redis_at).items()}
    print(f"Redis answered {redis_at - pods_up:.1f} s after the pods; /readyz 200 after:", figures)
    print("/readyz answers before Redis:", {n: sorted(set(c)) for n, c in before.items()})
    for name, codes in before.items():
        assert 503 in codes and 200 not in codes, (name, codes)  # never ready without Redis
    assert all(s is not None and s <= 5 for s in figures.values()), figures
    restarts = await asyncio.to_thread(d.restarts)
    print("restartCount:", restarts)
    assert set(restarts.values()) == {0}, restarts
