"""The cluster DNS server without a cluster: a fixed view of Services and EndpointSlices.

Real: the DNS server on loopback (UDP and TCP), dnspython as the client, and (as root) the C
library's resolver (``getent``) in a mount namespace whose ``/etc/resolv.conf`` points at
the server on port 53 of a claimed loopback address. Faked: the API objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from devcluster.dns import ClusterDns, parse_upstreams
from devcluster.kube import Obj
from devcluster.node_agent import IpPool


@dataclass
class FakeView:
    services: list[Obj] = field(default_factory=list)
    slices: list[Obj] = field(default_factory=list)
    ips: dict[tuple[str, str], str] = field(default_factory=dict)

    def dns_services(self) -> list[Obj]:
        return self.services

    def dns_endpoint_slices(self) -> list[Obj]:
        return self.slices

    def dns_service_ip(self, namespace: str, name: str) -> str | None:
        return self.ips.get((namespace, name))


def _svc(ns: str, name: str, **spec: object) -> Obj:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"ports": [], **spec}}


def _slice(ns: str, svc: str, endpoints: list[tuple[str, bool, str | None]]) -> Obj:
    return {
        "metadata": {
            "namespace": ns,
            "name": f"{svc}-x",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ready},
                **({"hostname": host} if host else {}),
            }
            for ip, ready, host in endpoints
        ],
    }


def _view() -> FakeView:
    return FakeView(
        services=[
            _svc("shop", "redis", clusterIP="10.96.0.7"),  # the API's clusterIP: never answered
            _svc("shop", "db", clusterIP="None"),
            _svc("shop", "ext", type="ExternalName", externalName="redis.shop.svc.cluster.local"),
            _svc("other", "redis", clusterIP="10.96.0.8"),
        ],
        slices=[
            _slice(
                "shop",
                "db",
                [
                    ("198.18.9.4", True, "db-0"),
                    ("198.18.9.5", True, "db-1"),
                    ("198.18.9.6", False, "db-2"),  # not ready: left out
                    ("10.1.2.3", True, None),  # not a pod of this machine: left out
                ],
            )
        ],
        ips={("shop", "redis"): "127.0.9.2", ("other", "redis"): "127.0.9.3"},
    )


@pytest.fixture()
def server() -> Iterator[ClusterDns]:
    s = ClusterDns(_view(), "127.0.0.1", port=0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _ask(
    server: ClusterDns, name: str, rdtype: str = "A", tcp: bool = False
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, server.host, port=server.port, timeout=3)
    return dns.query.udp(q, server.host, port=server.port, timeout=3)


def _a(msg: dns.message.Message) -> list[str]:
    return sorted(
        r.to_text() for rrset in msg.answer for r in rrset if rrset.rdtype == dns.rdatatype.A
    )


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_service_answers_its_loopback_ip_on_udp_and_tcp(server: ClusterDns, tcp: bool) -> None:
    msg = _ask(server, "redis.shop.svc.cluster.local", tcp=tcp)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert _a(msg) == ["127.0.9.2"]
    assert _a(_ask(server, "REDIS.Other.svc.cluster.local.", tcp=tcp)) == ["127.0.9.3"]


def test_headless_service_answers_ready_pods_at_their_loopback_addresses(
    server: ClusterDns,
) -> None:
    assert _a(_ask(server, "db.shop.svc.cluster.local")) == ["127.0.9.4", "127.0.9.5"]
    assert _a(_ask(server, "db-1.db.shop.svc.cluster.local")) == ["127.0.9.5"]
    assert _ask(server, "db-2.db.shop.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_unknown_names_are_nxdomain_with_the_zone_soa(server: ClusterDns) -> None:
    for name in (
        "nosuch.shop.svc.cluster.local",
        "redis.nowhere.svc.cluster.local",
        "x.cluster.local",
    ):
        msg = _ask(server, name)
        assert msg.rcode() == dns.rcode.NXDOMAIN, name
        assert msg.flags & dns.flags.AA
        assert [r.rdtype for r in msg.authority] == [dns.rdatatype.SOA]


def test_existing_names_without_records_of_the_type_are_nodata(server: ClusterDns) -> None:
    for name, rdtype in (
        ("redis.shop.svc.cluster.local", "AAAA"),
        ("shop.svc.cluster.local", "A"),
        ("svc.cluster.local", "A"),
        ("cluster.local", "A"),
    ):
        msg = _ask(server, name, rdtype)
        assert msg.rcode() == dns.rcode.NOERROR, name
        assert msg.answer == [] and [r.rdtype for r in msg.authority] == [dns.rdatatype.SOA]
    assert _ask(server, "cluster.local", "SOA").answer[0].rdtype == dns.rdatatype.SOA


def test_external_name_is_a_cname_and_pod_names_map_to_loopback(server: ClusterDns) -> None:
    msg = _ask(server, "ext.shop.svc.cluster.local")
    assert [r.to_text() for rrset in msg.answer for r in rrset] == ["redis.shop.svc.cluster.local."]
    assert _a(_ask(server, "198-18-9-4.shop.pod.cluster.local")) == ["127.0.9.4"]
    assert _a(_ask(server, "127-0-9-4.shop.pod.cluster.local")) == ["127.0.9.4"]
    assert _ask(server, "10-1-2-3.shop.pod.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_names_outside_the_zone_do_not_exist_or_are_forwarded(server: ClusterDns) -> None:
    assert _ask(server, "example.com").rcode() == dns.rcode.NXDOMAIN
    # a second server forwards what is not its own zone to the first, over UDP and TCP
    fwd = ClusterDns(
        FakeView(),
        "127.0.0.1",
        port=0,
        domain="other.local",
        upstreams=[("127.0.0.1", server.port)],
    )
    fwd.start()
    try:
        assert _a(_ask(fwd, "redis.shop.svc.cluster.local")) == ["127.0.9.2"]
        assert _a(_ask(fwd, "redis.shop.svc.cluster.local", tcp=True)) == ["127.0.9.2"]
        assert _ask(fwd, "x.svc.other.local").rcode() == dns.rcode.NXDOMAIN
    finally:
        fwd.stop()


def test_garbage_gets_formerr_and_big_answers_are_truncated_on_udp() -> None:
    many = FakeView(
        services=[_svc("ns", "big", clusterIP="None")],
        slices=[_slice("ns", "big", [(f"198.18.9.{i}", True, None) for i in range(1, 200)])],
    )
    s = ClusterDns(many, "127.0.0.1", port=0)
    s.start()
    try:
        q = dns.message.make_query("big.ns.svc.cluster.local", "A")
        udp = dns.query.udp(q, s.host, port=s.port, timeout=3, ignore_trailing=True)
        assert udp.flags & dns.flags.TC
        tcp = dns.query.tcp(q, s.host, port=s.port, timeout=3)
        assert len(_a(tcp)) == 199
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(b"\x12\x34" + bytes(10) + b"\xff\xff", (s.host, s.port))
            reply = sock.recv(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
    finally:
        s.stop()


def test_parse_upstreams() -> None:
    assert parse_upstreams("127.0.0.53, 127.0.0.1:5353") == [
        ("127.0.0.53", 53),
        ("127.0.0.1", 5353),
    ]
    assert parse_upstreams("") == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_the_c_resolver_follows_the_search_list_to_the_server(tmp_path: Path) -> None:
    """glibc's resolver, as any non-Python program in a pod uses it: resolv.conf names the
    server (port 53 of a claimed loopback address), ndots:5 and the pod's search list."""
    pool = IpPool()
    ip = pool.allocate()
    s = ClusterDns(_view(), ip, port=53)
    s.start()
    try:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(
            f"nameserver {ip}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5 timeout:2 attempts:1\n"
        )
        nsswitch = tmp_path / "nsswitch.conf"
        nsswitch.write_text("hosts: files dns\n")
        script = (
            'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf && '
            "for n in redis redis.shop redis.shop.svc.cluster.local redis.other db; do "
            'printf "%s " "$n"; getent ahostsv4 "$n" | cut -d" " -f1 | sort -u | tr "\\n" " "; '
            "echo; done; "
            "getent hosts nosuch.shop.svc.cluster.local || echo nosuch=$?; "
            "getent hosts nosuch || echo short=$?"
        )
        out = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
                str(resolv),
                str(nsswitch),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        assert lines["redis"].split() == ["127.0.9.2"]
        assert lines["redis.shop"].split() == ["127.0.9.2"]
        assert lines["redis.shop.svc.cluster.local"].split() == ["127.0.9.2"]
        assert lines["redis.other"].split() == ["127.0.9.3"]
        assert lines["db"].split() == ["127.0.9.4", "127.0.9.5"]
        assert "nosuch=2" in out and "short=2" in out  # getent: key not found
    finally:
        s.stop()
        pool.close()
