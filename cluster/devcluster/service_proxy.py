"""The service proxy: kube-proxy's part, in user space, on loopback.

For every Service port (TCP) it listens on a free loopback port (and on ``nodePort`` for
NodePort/LoadBalancer Services, when that port is free) and forwards each NEW connection to
a random ready endpoint, read live from the Service's EndpointSlices at accept time.
Established connections stay where they are, whatever happens to the endpoint afterwards,
as in a real cluster.

The table of listeners is written to ``<state>/services.json`` and served, with the open
connections, on a small admin HTTP port (``GET /services``, ``GET /connections``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .addresses import to_local
from .kube import Informer, Kube, Obj
from .node_agent.ippool import IpPool


@dataclass
class Listener:
    namespace: str
    service: str
    port_name: str
    port: int
    local_port: int
    node_port: int | None
    servers: list[asyncio.Server] = field(default_factory=list)


@dataclass
class Conn:
    service: str
    client: str
    endpoint: str
    pod: str


class ServiceProxy:
    def __init__(
        self, kube: Kube, state_dir: Path, log: Callable[[str], None], ips: IpPool | None = None
    ) -> None:
        self.kube = kube
        self.ips = ips or IpPool()
        self.service_ips: dict[tuple[str, str], str] = {}
        self.state_dir = state_dir
        self.log = log
        self.stop = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.listeners: dict[tuple[str, str, str], Listener] = {}
        self.lock = threading.Lock()
        self.conns: dict[int, Conn] = {}
        self.totals: dict[str, int] = {}
        self._conn_seq = 0
        self.services: Informer | None = None
        self.slices: Informer | None = None
        self.admin_port = 0
        self.ready = threading.Event()

    # -- lifecycle
    def start(self) -> None:
        threading.Thread(target=self.loop.run_forever, name="proxy loop", daemon=True).start()
        self.slices = Informer(
            self.kube,
            "/apis/discovery.k8s.io/v1/endpointslices",
            lambda k, o: None,
            self.stop,
            name="endpointslices",
        ).start()
        self.services = Informer(
            self.kube, "/api/v1/services", self.on_service, self.stop, name="services"
        ).start()
        admin = ThreadingHTTPServer(("127.0.0.1", 0), _admin_handler(self))
        self.admin_port = int(admin.server_address[1])
        threading.Thread(target=admin.serve_forever, name="proxy admin", daemon=True).start()
        self._admin = admin

    def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            self._admin.shutdown()

        async def close_all() -> None:
            for lst in list(self.listeners.values()):
                for s in lst.servers:
                    s.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    # -- services
    def on_service(self, kind: str, svc: Obj) -> None:
        meta = svc["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        spec = svc.get("spec") or {}
        wanted: dict[str, Obj] = {}
        if kind != "DELETED" and spec.get("type") != "ExternalName":
            for p in spec.get("ports") or []:
                if p.get("protocol", "TCP") == "TCP":
                    wanted[str(p.get("name") or "")] = p
        fut = asyncio.run_coroutine_threadsafe(self._sync(ns, name, wanted), self.loop)
        fut.result(30)
        self._write_table()

    async def _sync(self, ns: str, name: str, wanted: dict[str, Obj]) -> None:
        svc_ip = self.service_ips.get((ns, name))
        if wanted and svc_ip is None:
            svc_ip = self.service_ips[(ns, name)] = self.ips.allocate()
        elif not wanted and svc_ip is not None:
            del self.service_ips[(ns, name)]
            self.ips.release(svc_ip)
        for key in [k for k in self.listeners if k[0] == ns and k[1] == name]:
            lst = self.listeners[key]
            p = wanted.get(key[2])
            if p is None or int(p["port"]) != lst.port or p.get("nodePort") != lst.node_port:
                for s in lst.servers:
                    s.close()
                del self.listeners[key]
        for port_name, p in wanted.items():
            key = (ns, name, port_name)
            if key in self.listeners:
                continue

            def handler(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, key: tuple[str, str, str] = key
            ) -> Any:
                return self._handle(key, r, w)

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            local_port = int(server.sockets[0].getsockname()[1])
            lst = Listener(
                ns, name, port_name, int(p["port"]), local_port, p.get("nodePort"), [server]
            )
            try:  # the Service's own port on its loopback "cluster IP", as kube-proxy does
                assert svc_ip is not None
                lst.servers.append(await asyncio.start_server(handler, svc_ip, int(p["port"])))
            except OSError as e:
                self.log(f"service-proxy: {svc_ip}:{p['port']} for {ns}/{name}: {e}")
            if p.get("nodePort"):
                try:
                    lst.servers.append(
                        await asyncio.start_server(handler, "127.0.0.1", int(p["nodePort"]))
                    )
                except OSError as e:
                    self.log(f"service-proxy: nodePort {p['nodePort']} of {ns}/{name}: {e}")
            self.listeners[key] = lst
            self.log(f"service-proxy: {ns}/{name}:{p['port']} on 127.0.0.1:{local_port}")

    def _write_table(self) -> None:
        path = self.state_dir / "services.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.table(), indent=1, sort_keys=True))
        tmp.replace(path)
        self.ready.set()

    def table(self, live: bool = False) -> dict[str, Any]:
        """Service -> its ports and listen addresses (and, if ``live``, ready endpoints)."""
        out: dict[str, Any] = {}
        for lst in list(self.listeners.values()):
            entry = out.setdefault(
                f"{lst.namespace}/{lst.service}",
                {"ip": self.service_ips.get((lst.namespace, lst.service)), "ports": []},
            )
            port: dict[str, Any] = {
                "name": lst.port_name,
                "port": lst.port,
                "address": f"127.0.0.1:{lst.local_port}",
                "nodePort": lst.node_port,
            }
            if live:
                port["ready"] = [
                    {"ip": ip, "port": p, "pod": pod}
                    for ip, p, pod in self.endpoints(lst.namespace, lst.service, lst.port_name)
                ]
            entry["ports"].append(port)
        return out

    def service_env(self, ns: str) -> dict[str, str]:
        """``{SVC}_SERVICE_HOST``/``_PORT`` variables: the Service's loopback IP and port."""
        env: dict[str, str] = {}
        for lst in list(self.listeners.values()):
            ip = self.service_ips.get((lst.namespace, lst.service))
            if lst.namespace != ns or ip is None:
                continue
            prefix = lst.service.upper().replace("-", "_")
            env[f"{prefix}_SERVICE_HOST"] = ip
            if lst.port_name:
                suffix = lst.port_name.upper().replace("-", "_")
                env[f"{prefix}_SERVICE_PORT_{suffix}"] = str(lst.port)
            env.setdefault(f"{prefix}_SERVICE_PORT", str(lst.port))
        return env

    # -- what the cluster DNS server reads (devcluster.dns.ClusterView)
    def dns_services(self) -> list[Obj]:
        return self.services.items() if self.services is not None else []

    def dns_endpoint_slices(self) -> list[Obj]:
        return self.slices.items() if self.slices is not None else []

    def dns_service_ip(self, namespace: str, name: str) -> str | None:
        return self.service_ips.get((namespace, name))

    # -- endpoints
    def endpoints(self, ns: str, name: str, port_name: str) -> list[tuple[str, int, str]]:
        """Ready endpoints (ip, port, pod name) of one Service port, right now."""
        out: list[tuple[str, int, str]] = []
        if self.slices is None:
            return out
        for sl in self.slices.items():
            meta = sl["metadata"]
            if (
                meta.get("namespace") != ns
                or (meta.get("labels") or {}).get("kubernetes.io/service-name") != name
            ):
                continue
            port = None
            for p in sl.get("ports") or []:
                if str(p.get("name") or "") == port_name and p.get("port") is not None:
                    port = int(p["port"])
            if port is None:
                continue
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                target = str((ep.get("targetRef") or {}).get("name", ""))
                for addr in ep.get("addresses") or []:
                    out.append((to_local(str(addr)), port, target))
        return out

    async def _handle(
        self, key: tuple[str, str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ns, name, port_name = key
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else "?"
        eps = self.endpoints(ns, name, port_name)
        if not eps:
            writer.close()
            return
        ip, port, pod = random.choice(eps)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
        except (OSError, TimeoutError):
            writer.close()
            return
        with self.lock:
            self._conn_seq += 1
            cid = self._conn_seq
            endpoint = f"{ip}:{port}"
            self.conns[cid] = Conn(f"{ns}/{name}", client, endpoint, pod)
            self.totals[endpoint] = self.totals.get(endpoint, 0) + 1
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            with self.lock:
                self.conns.pop(cid, None)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        with contextlib.suppress(Exception):
            writer.close()


def _admin_handler(proxy: ServiceProxy) -> type[BaseHTTPRequestHandler]:
    class Admin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/services":
                body: Any = proxy.table(live=True)
            elif self.path == "/connections":
                with proxy.lock:
                    body = {
                        "open": [vars(c) for c in proxy.conns.values()],
                        "totals": dict(proxy.totals),
                    }
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Admin
