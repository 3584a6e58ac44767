"""Cluster DNS: a real DNS server (UDP and TCP, port 53) for the names of the local cluster.

It runs inside the node-agent process and answers from what the service proxy already
watches, so an answer is never older than the proxy's own view:

- ``<svc>.<ns>.svc.cluster.local`` A: the Service's loopback "cluster IP", where the service
  proxy listens; never the API's ``spec.clusterIP``, which nothing serves here;
- headless Services (``clusterIP: None``): one A record per ready endpoint, at the pod's
  loopback address (``198.18.X.Y`` from the EndpointSlice mapped back to ``127.0.X.Y``), and
  ``<hostname>.<svc>.<ns>.svc.cluster.local`` for endpoints with a hostname (StatefulSets);
- ExternalName Services: a CNAME to ``spec.externalName``;
- ``a-b-c-d.<ns>.pod.cluster.local``: the pod address ``a.b.c.d`` (loopback only);
- a name in the zone that does not exist: NXDOMAIN with the zone's SOA (negative TTL 5 s),
  so resolvers walk their ``search`` list correctly; a name that exists without records
  of the asked type (AAAA, or ``<ns>.svc.cluster.local``): NOERROR with no answer;
- names outside the zone: forwarded to ``upstreams`` when some are given; else NXDOMAIN:
  pods here may reach only loopback, so for them nothing outside the cluster exists, and a
  C resolver then fails at once with "Name or service not known" as for an unknown name in
  a real cluster (REFUSED, which CoreDNS answers for a zone it does not serve, makes
  ``getaddrinfo`` report a temporary failure that clients retry).

Only addresses in ``127.0.0.0/8`` are ever answered for the zone: an endpoint address that
does not map to loopback is left out, so no pod is ever steered off this machine.

The wire format is dnspython's (message parsing, name compression, EDNS, truncation); the
server is a small asyncio loop in its own thread. SRV records are not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .addresses import to_local
from .kube import Obj

CLUSTER_DOMAIN = "cluster.local"
TTL = 5  # seconds, for answers and (SOA minimum) for negative answers, as CoreDNS's kubernetes
TCP_IDLE = 10.0  # seconds a TCP client may stay silent before its connection is closed
FORWARD_TIMEOUT = 2.0


class ClusterView(Protocol):
    """What the DNS server reads: the service proxy implements it."""

    def dns_services(self) -> list[Obj]:
        """Every Service object (as watched)."""
        ...

    def dns_endpoint_slices(self) -> list[Obj]:
        """Every EndpointSlice object (as watched)."""
        ...

    def dns_service_ip(self, namespace: str, name: str) -> str | None:
        """The Service's loopback IP, where the proxy listens; None if it has none."""
        ...


@dataclass(frozen=True)
class Record:
    rdtype: str  # "A" or "CNAME"
    value: str


def _is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.version == 4 and addr.is_loopback


def _find_service(view: ClusterView, ns: str, name: str) -> Obj | None:
    for svc in view.dns_services():
        meta = svc.get("metadata") or {}
        if meta.get("namespace") == ns and meta.get("name") == name:
            return svc
    return None


def ready_addresses(
    view: ClusterView, ns: str, name: str, hostname: str | None = None
) -> list[str]:
    """Loopback addresses of the Service's ready endpoints (optionally one hostname's)."""
    out: set[str] = set()
    for sl in view.dns_endpoint_slices():
        meta = sl.get("metadata") or {}
        if (
            meta.get("namespace") != ns
            or (meta.get("labels") or {}).get("kubernetes.io/service-name") != name
            or sl.get("addressType", "IPv4") != "IPv4"
        ):
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            if hostname is not None and str(ep.get("hostname") or "").lower() != hostname:
                continue
            for addr in ep.get("addresses") or []:
                local = to_local(str(addr))
                if _is_loopback(local):
                    out.add(local)
    return sorted(out, key=lambda ip: ipaddress.ip_address(ip))


def lookup(view: ClusterView, labels: tuple[str, ...]) -> list[Record] | None:
    """Records of a name in the cluster zone, given its labels below the zone, lowercase
    (``("redis", "default", "svc")``). None: no such name (NXDOMAIN); []: the name exists
    but holds no records (an empty non-terminal such as ``svc`` or ``<ns>.svc``)."""
    if not labels:
        return []  # the zone's apex
    kind = labels[-1]
    if kind == "svc":
        if len(labels) == 1:
            return []
        ns = labels[-2]
        if len(labels) == 2:
            known = any(
                (s.get("metadata") or {}).get("namespace") == ns for s in view.dns_services()
            )
            return [] if known else None
        svc = _find_service(view, ns, labels[-3])
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        name = labels[-3]
        if spec.get("type") == "ExternalName":
            target = str(spec.get("externalName") or "")
            return [Record("CNAME", target)] if len(labels) == 3 and target else None
        headless = spec.get("clusterIP") == "None"
        if len(labels) == 3:
            if headless:
                return [Record("A", ip) for ip in ready_addresses(view, ns, name)]
            ip = view.dns_service_ip(ns, name)
            return [Record("A", ip)] if ip and _is_loopback(ip) else []
        if len(labels) == 4 and headless:
            ips = ready_addresses(view, ns, name, hostname=labels[0])
            return [Record("A", ip) for ip in ips] or None
        return None
    if kind == "pod":
        if len(labels) == 1:
            return []
        if len(labels) == 2:
            return []  # namespaces are not watched here: any namespace "exists"
        if len(labels) == 3:
            local = to_local(labels[0].replace("-", "."))
            return [Record("A", local)] if _is_loopback(local) else None
        return None
    return None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDns) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._spawn(self.server._udp_query(self, data, addr))


class ClusterDns:
    """The DNS server: ``start()`` binds UDP and TCP on ``host:port`` (or raises OSError)."""

    def __init__(
        self,
        view: ClusterView,
        host: str,
        port: int = 53,
        domain: str = CLUSTER_DOMAIN,
        upstreams: Iterable[tuple[str, int]] = (),
        log: Callable[[str], None] = lambda m: None,
    ) -> None:
        self.view = view
        self.host = host
        self.port = port
        self.zone = dns.name.from_text(domain)
        self.upstreams = list(upstreams)
        self.log = log
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dns", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._soa = dns.rrset.from_text(
            self.zone,
            TTL,
            "IN",
            "SOA",
            f"ns.dns.{domain}. hostmaster.{domain}. 1 7200 1800 86400 {TTL}",
        )

    # -- lifecycle
    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._bind(), self.loop).result(10)
        except BaseException:
            self.stop()
            raise

    async def _bind(self) -> None:
        for _ in range(20):  # port 0 (tests): UDP picks, TCP must get the same port
            transport, _proto = await self.loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self.port)
            )
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, self.host, port)
            except OSError:
                transport.close()
                if self.port:
                    raise
                continue
            self._udp = transport
            self.port = port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    def stop(self) -> None:
        async def close() -> None:
            if self._udp is not None:
                self._udp.close()
            if self._tcp is not None:
                self._tcp.close()
            for t in list(self._tasks):
                t.cancel()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transports
    async def _udp_query(self, proto: _Udp, data: bytes, addr: tuple[str, int]) -> None:
        out = await self.handle(data, udp=True)
        if out is not None and proto.transport is not None:
            proto.transport.sendto(out, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE
                )
                out = await self.handle(data, udp=False)
                if out is None:
                    break
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    # -- queries
    async def handle(self, data: bytes, udp: bool) -> bytes | None:
        """One query's wire bytes in, the response's wire bytes out (None: drop it)."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            if len(data) < 12:
                return None
            # FORMERR: the query's id, QR set, opcode kept, no sections
            flags = 0x8000 | (int.from_bytes(data[2:4], "big") & 0x7800) | dns.rcode.FORMERR
            return data[:2] + flags.to_bytes(2, "big") + bytes(8)
        if query.flags & dns.flags.QR:
            return None  # a response: never answer those
        question = query.question[0] if len(query.question) == 1 else None
        if (
            question is not None
            and query.opcode() == dns.opcode.QUERY
            and not question.name.is_subdomain(self.zone)
            and question.rdclass == dns.rdataclass.IN
            and self.upstreams
        ):
            response = await self._forward(query, udp)
        else:
            response = self.respond(query)
        limit = 65535
        if udp:
            limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.flags |= dns.flags.TC
            response.answer = []
            response.authority = []
            response.additional = []
            return response.to_wire(max_size=limit)

    def respond(self, query: dns.message.Message) -> dns.message.Message:
        """The answer to a query for the cluster zone (NXDOMAIN outside it)."""
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if not q.name.is_subdomain(self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)  # no upstream: nothing else exists
            return response
        response.flags |= dns.flags.AA
        labels = tuple(
            label.decode("ascii", "replace").lower()
            for label in q.name.relativize(self.zone).labels
        )
        if labels == ("@",):
            labels = ()
        records = lookup(self.view, labels)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa)
            return response
        if not labels and q.rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(self._soa)
            return response
        wanted = [
            r
            for r in records
            if r.rdtype == "CNAME"
            or q.rdtype == dns.rdatatype.ANY
            or dns.rdatatype.from_text(r.rdtype) == q.rdtype
        ]
        if not wanted:
            response.authority.append(self._soa)  # NODATA
            return response
        by_type: dict[str, list[str]] = {}
        for r in wanted:
            value = r.value if r.rdtype != "CNAME" or r.value.endswith(".") else r.value + "."
            by_type.setdefault(r.rdtype, []).append(value)
        for rdtype, values in by_type.items():
            response.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", rdtype, values))
        return response

    async def _forward(self, query: dns.message.Message, udp: bool) -> dns.message.Message:
        for host, port in self.upstreams:
            try:
                if udp:
                    answer = await dns.asyncquery.udp(
                        query, host, timeout=FORWARD_TIMEOUT, port=port, ignore_trailing=True
                    )
                else:
                    answer = await dns.asyncquery.tcp(
                        query, host, timeout=FORWARD_TIMEOUT, port=port
                    )
            except (dns.exception.DNSException, OSError) as e:
                self.log(f"dns: upstream {host}:{port}: {e!r}")
                continue
            return answer
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response


def parse_upstreams(text: str) -> list[tuple[str, int]]:
    """``"127.0.0.53, 127.0.0.1:5353"`` -> ``[("127.0.0.53", 53), ("127.0.0.1", 5353)]``."""
    out: list[tuple[str, int]] = []
    for item in text.replace(",", " ").split():
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        out.append((host or item, int(port) if port else 53))
    return out
