"""pytest fixtures for a real Kubernetes control plane (register: ``devcluster.pytest_plugin``).

- ``kube_cluster`` (session): a ``KubeCluster``. Which cluster, chosen by ``ROOMWIRE_CLUSTER``:

  * unset or ``local``: this session starts its own (etcd, kube-apiserver,
    kube-controller-manager, node agent, service proxy) under ``.cluster/pytest-<pid>/``
    and stops every process of it at the end;
  * ``running``: the one ``make cluster-up`` started (``.cluster/``), left running;
  * ``kubeconfig``: a real cluster from ``$KUBECONFIG``, only with
    ``ROOMWIRE_KUBE_CONTEXT`` naming the context to use, which must also be the
    kubeconfig's current context (tests refuse a context they were not pointed at).
    Tests that need the local node agent or service proxy skip there.

- ``kube_namespace`` (function): a fresh namespace, deleted after the test.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from . import control_plane
from .addresses import to_local
from .kube import ApiError, Kube, Obj, load_kubeconfig, wait_for

T = TypeVar("T")


@dataclass
class KubeCluster:
    """A reachable cluster and the helpers tests need around it."""

    kubeconfig: Path
    kube: Kube
    local: bool
    state_dir: Path | None = None
    proxy_admin: str = ""
    kubectl_path: Path | None = None
    dns: str = ""  # the cluster DNS server (ip:53) of the local cluster

    # -- clients
    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (the official Python client)."""
        import kubernetes

        factory: Any = kubernetes.config.new_client_from_config
        return factory(config_file=str(self.kubeconfig), context=self.kube.creds.context or None)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster."""
        exe = self.kubectl_path or control_plane.binaries(build=False)["kubectl"]
        return subprocess.run(
            [str(exe), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def require_local(self) -> None:
        if not self.local:
            pytest.skip("needs the local node agent and service proxy")

    # -- waiting
    def wait_for(
        self, check: Callable[[], T | None], timeout: float = 60, what: str = "", every: float = 0.2
    ) -> T:
        """Poll ``check`` until it returns something truthy (bounded); return that."""
        result: T = wait_for(check, timeout, what or getattr(check, "__name__", "condition"), every)
        return result

    # -- objects
    def apply(self, obj: Obj) -> Obj:
        """Server-side apply one object (any kind the API knows)."""
        return self.kube.apply(obj, self.object_path(obj), manager="pytest")

    def apply_yaml(self, text_or_path: str | Path) -> list[Obj]:
        text = Path(text_or_path).read_text() if isinstance(text_or_path, Path) else text_or_path
        return [self.apply(d) for d in yaml.safe_load_all(text) if d]

    def object_path(self, obj: Obj) -> str:
        api_version = str(obj["apiVersion"])
        kind = str(obj["kind"])
        meta = obj.get("metadata") or {}
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        resources = self.kube.get(base)["resources"]
        res = next(r for r in resources if r["kind"] == kind and "/" not in r["name"])
        ns = meta.get("namespace")
        prefix = f"{base}/namespaces/{ns}" if res["namespaced"] and ns else base
        return f"{prefix}/{res['name']}/{meta['name']}"

    def pods(self, namespace: str, selector: str = "") -> list[Obj]:
        q = {"labelSelector": selector} if selector else {}
        items: list[Obj] = self.kube.get(f"/api/v1/namespaces/{namespace}/pods", **q)["items"]
        return items

    def ready_pods(self, namespace: str, selector: str = "") -> list[Obj]:
        """Running pods whose Ready condition is True and that are not being deleted."""
        return [
            p
            for p in self.pods(namespace, selector)
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions") or []
            )
        ]

    def wait_ready_pods(
        self, namespace: str, selector: str, count: int, timeout: float = 90
    ) -> list[Obj]:
        def enough() -> list[Obj] | None:
            pods = self.ready_pods(namespace, selector)
            return pods if len(pods) == count else None

        return self.wait_for(enough, timeout, f"{count} ready pods {selector} in {namespace}")

    def ready_endpoints(self, namespace: str, service: str) -> set[str]:
        """Addresses of the ready endpoints in the Service's EndpointSlices."""
        slices = self.kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            labelSelector=f"kubernetes.io/service-name={service}",
        )["items"]
        return {
            addr
            for sl in slices
            for ep in sl.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready") is not False
            for addr in ep.get("addresses") or []
        }

    def set_pod_condition(self, namespace: str, pod: str, ctype: str, status: bool) -> None:
        """Write a pod condition (e.g. a readiness gate), as a controller would."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": ctype, "status": "True" if status else "False",
                "lastTransitionTime": stamp}  # fmt: skip
        self.kube.patch(
            f"/api/v1/namespaces/{namespace}/pods/{pod}/status",
            {"status": {"conditions": [cond]}},
            kind="strategic",
        )

    @staticmethod
    def local_ip(pod: Obj) -> str:
        """Where a local pod really listens (its loopback IP; the API shows an alias)."""
        return to_local(str(pod["status"]["podIP"]))

    # -- the local service proxy
    def _proxy(self, path: str) -> Any:
        self.require_local()
        with urllib.request.urlopen(f"http://{self.proxy_admin}{path}", timeout=5) as r:
            return json.loads(r.read())

    def service_address(
        self, namespace: str, name: str, port: int | str | None = None, timeout: float = 30
    ) -> tuple[str, int]:
        """(host, port) where the service proxy serves this Service port on loopback."""

        def lookup() -> tuple[str, int] | None:
            entry = self._proxy("/services").get(f"{namespace}/{name}")
            for p in (entry or {}).get("ports") or []:
                if port is None or p["port"] == port or p["name"] == port:
                    host, lport = p["address"].rsplit(":", 1)
                    return host, int(lport)
            return None

        return self.wait_for(lookup, timeout, f"service proxy for {namespace}/{name}")

    def proxy_services(self) -> dict[str, Any]:
        """The service proxy's table: per Service, ports, listen address, ready endpoints."""
        result: dict[str, Any] = self._proxy("/services")
        return result

    def proxy_connections(self) -> dict[str, Any]:
        """Open connections through the service proxy (client, endpoint, pod) and totals."""
        result: dict[str, Any] = self._proxy("/connections")
        return result

    # -- restarting the local cluster's own processes (chaos tests)
    def restart_apiserver(self, kill: bool = False) -> float:
        """Stop kube-apiserver (SIGTERM, or SIGKILL with ``kill``) and start it again on
        the same port; return the seconds until its ``/readyz`` answers ok."""
        self.require_local()
        assert self.state_dir is not None
        return control_plane.restart(self.state_dir, "kube-apiserver", kill, say=_say)

    def restart_node_agent(self) -> float:
        """Stop the node agent (SIGTERM: it stops every pod first, grace capped) and start
        it again; it starts the pods bound to the node anew. The service proxy and the
        cluster DNS listen on new addresses afterwards (``service_address`` finds them).
        Returns the seconds until the new agent serves."""
        self.require_local()
        assert self.state_dir is not None
        took = control_plane.restart(self.state_dir, "node-agent", say=_say)
        fresh = _local(self.state_dir)
        self.proxy_admin, self.dns = fresh.proxy_admin, fresh.dns
        return took

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        self.require_local()
        assert self.state_dir is not None
        path = self.state_dir / "logs" / "pods" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _say(message: str) -> None:
    print(f"[devcluster] {message}", flush=True)


def _external() -> KubeCluster:
    path = os.environ.get("KUBECONFIG")
    context = os.environ.get("ROOMWIRE_KUBE_CONTEXT")
    if not path or not context:
        pytest.fail("ROOMWIRE_CLUSTER=kubeconfig needs KUBECONFIG and ROOMWIRE_KUBE_CONTEXT")
    cfg = yaml.safe_load(Path(path).read_text())
    if cfg.get("current-context") != context:
        pytest.fail(
            f"refusing: KUBECONFIG's current context is {cfg.get('current-context')!r}, "
            f"tests were pointed at {context!r}"
        )
    return KubeCluster(Path(path), Kube(load_kubeconfig(path, context)), local=False)


def _local(state_dir: Path) -> KubeCluster:
    info = control_plane.ClusterInfo.load(state_dir)
    return KubeCluster(
        info.kubeconfig, info.kube(), True, state_dir, info.proxy_admin, info.kubectl, info.dns
    )


def _clean_stale_sessions() -> None:
    """Stop clusters left by pytest sessions that died without their teardown."""
    for state in control_plane.DEFAULT_STATE.glob("pytest-*"):
        pid = state.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            try:
                control_plane.down(state, say=lambda m: None)
            except control_plane.ClusterError:
                continue
            import shutil

            shutil.rmtree(state, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after `-m` deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Build missing binaries before any test runs, outside every test's timeout."""
    if os.environ.get("ROOMWIRE_CLUSTER", "local") != "local":
        return
    if any(item.get_closest_marker("cluster") for item in items):
        try:
            control_plane.binaries(build=True, say=lambda m: print(f"[devcluster] {m}"))
        except control_plane.ClusterError as e:
            print(f"[devcluster] {e}")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    mode = os.environ.get("ROOMWIRE_CLUSTER", "local")
    if mode == "kubeconfig":
        yield _external()
        return
    if mode == "running":
        state = control_plane.DEFAULT_STATE
        if not control_plane.is_up(state):
            pytest.fail("ROOMWIRE_CLUSTER=running, but no cluster is up: run `make cluster-up`")
        yield _local(state)
        return
    _clean_stale_sessions()
    state = control_plane.DEFAULT_STATE / f"pytest-{os.getpid()}"
    try:
        control_plane.up(state, say=lambda m: print(f"[devcluster] {m}", flush=True))
    except control_plane.ClusterError as e:
        pytest.fail(f"local cluster did not start: {e}")
    try:
        yield _local(state)
    finally:
        control_plane.down(state, say=lambda m: None)
        import shutil

        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture()
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    kube_cluster.kube.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )

    def has_sa() -> bool:
        return (
            kube_cluster.kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            is not None
        )

    kube_cluster.wait_for(has_sa, 30, f"default ServiceAccount in {name}")
    yield name
    try:
        kube_cluster.kube.delete(f"/api/v1/namespaces/{name}")
    except (ApiError, OSError, http.client.HTTPException):
        pass
