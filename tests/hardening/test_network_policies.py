"""What the NetworkPolicies of ``manifests/`` let through, flow by flow.

The local cluster validates NetworkPolicies but does not enforce them (no network
plugin: ``test_pod_security.py`` has the API server's validation). Here the shipped
policies are evaluated, as the NetworkPolicy specification defines them, against a table
of flows between the shipped pods (their labels and named ports from the manifests) and
what surrounds them: a client on the internet, Prometheus in another namespace, the
cluster's DNS, the API server, another pod of the namespace. Every flow Roomwire needs
must pass; every other one in the table must not.

A flow passes when the source's egress allows it (or no policy of type Egress selects
the source) and the destination's ingress allows it (or no policy of type Ingress
selects it); a rule's peers match by pod and namespace selectors (none: anything), its
ports by number or by the destination pod's named port. The node (the kubelet's probes)
is always let through by the specification and is not in the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.support import ROOT

NS = "roomwire"
Obj = dict[str, Any]


@dataclass(frozen=True)
class End:
    """A pod (labels, namespace, named ports) or an address outside the pod network."""

    name: str
    labels: dict[str, str] | None = None  # None: not a pod
    namespace: str = NS
    ports: dict[str, int] = field(default_factory=dict)


def _docs(*paths: str) -> list[Obj]:
    return [d for p in paths for d in yaml.safe_load_all((ROOT / p).read_text()) if d]


def _pod_of(deployment: Obj) -> End:
    spec = deployment["spec"]["template"]
    ports = {
        str(p["name"]): int(p["containerPort"])
        for c in spec["spec"]["containers"]
        for p in c.get("ports") or []
        if "name" in p
    }
    return End(deployment["metadata"]["name"], dict(spec["metadata"]["labels"]), NS, ports)


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        ok = {
            "In": value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peers: list[Obj] | None, end: End) -> bool:
    if not peers:
        return True
    if end.labels is None:  # an address outside the pod network: only ipBlock (unused)
        return False
    for peer in peers:
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        ns_ok = (
            _selects(ns_sel, {"kubernetes.io/metadata.name": end.namespace})
            if ns_sel is not None
            else end.namespace == NS
        )
        pod_ok = _selects(pod_sel, end.labels) if pod_sel is not None else True
        if ns_ok and pod_ok:
            return True
    return False


def _port_matches(ports: list[Obj] | None, dst: End, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None or want == port or (isinstance(want, str) and dst.ports.get(want) == port):
            return True
    return False


def allowed(policies: list[Obj], src: End, dst: End, port: int, protocol: str = "TCP") -> bool:
    def side(kind: str, subject: End, peer: End) -> bool:
        if subject.labels is None or subject.namespace != NS:
            return True  # not ours: no policy of these selects it
        mine = [
            p
            for p in policies
            if kind in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], subject.labels)
        ]
        if not mine:
            return True
        key, peers = ("egress", "to") if kind == "Egress" else ("ingress", "from")
        return any(
            _peer_matches(rule.get(peers), peer)
            and _port_matches(rule.get("ports"), dst, port, protocol)
            for p in mine
            for rule in p["spec"].get(key) or []
        )

    return side("Egress", src, dst) and side("Ingress", dst, src)


WORKLOAD = [
    "manifests/workload/signaling.yaml",
    "manifests/workload/redis.yaml",
    "manifests/operator/deployment.yaml",
    "manifests/nacos/rnacos.yaml",
]
POLICIES = ["manifests/workload/networkpolicies.yaml", "manifests/operator/networkpolicy.yaml"]
NACOS_POLICIES = ["manifests/nacos/networkpolicies.yaml"]

ENDS: dict[str, End] = {
    **{
        {"meetingroom-operator": "operator"}.get(d["metadata"]["name"], d["metadata"]["name"]): (
            _pod_of(d)
        )
        for d in _docs(*WORKLOAD)
        if d["kind"] == "Deployment"
    },
    "internet": End("a client on the internet"),
    "apiserver": End("the API server (outside the pod network)"),
    "dns": End("cluster DNS", {"k8s-app": "kube-dns"}, "kube-system", {"dns": 53}),
    "prometheus": End("Prometheus", {"app": "prometheus"}, "monitoring", {"web": 9090}),
    "debug": End("another pod of the namespace", {"app": "debug"}),
}

# (source, destination, port, protocol, passes with manifests/, with manifests/nacos);
# None: no such pod in that set (rnacos runs only with manifests/nacos).
FLOWS: list[tuple[str, str, int, str, bool | None, bool]] = [
    # what flows
    ("internet", "signaling", 8080, "TCP", True, True),
    ("prometheus", "signaling", 8080, "TCP", True, True),
    ("prometheus", "operator", 9090, "TCP", True, True),
    ("signaling", "redis", 6379, "TCP", True, True),
    ("operator", "redis", 6379, "TCP", True, True),
    ("operator", "apiserver", 443, "TCP", True, True),
    ("operator", "apiserver", 6443, "TCP", True, True),
    ("signaling", "dns", 53, "UDP", True, True),
    ("signaling", "dns", 53, "TCP", True, True),
    ("operator", "dns", 53, "UDP", True, True),
    ("signaling", "nacos", 8848, "TCP", False, True),
    ("signaling", "nacos", 9848, "TCP", False, True),
    ("operator", "nacos", 9848, "TCP", False, True),
    # what does not
    ("internet", "redis", 6379, "TCP", False, False),
    ("internet", "operator", 9090, "TCP", False, False),
    ("internet", "nacos", 8848, "TCP", None, False),
    ("debug", "redis", 6379, "TCP", False, False),
    ("debug", "nacos", 9848, "TCP", None, False),
    ("prometheus", "redis", 6379, "TCP", False, False),
    ("signaling", "signaling", 8080, "TCP", False, False),
    ("signaling", "apiserver", 443, "TCP", False, False),
    ("signaling", "internet", 443, "TCP", False, False),
    ("signaling", "redis", 6380, "TCP", False, False),
    ("signaling", "nacos", 10848, "TCP", False, False),
    ("operator", "signaling", 8080, "TCP", False, False),
    ("operator", "internet", 80, "TCP", False, False),
    ("redis", "internet", 443, "TCP", False, False),
    ("redis", "dns", 53, "UDP", False, False),
    ("redis", "signaling", 8080, "TCP", False, False),
    ("nacos", "internet", 443, "TCP", None, False),
    # the API server has no address the manifests can name: its port to any address
    ("operator", "internet", 443, "TCP", True, True),
]


@pytest.mark.parametrize("overlay", ["manifests", "manifests/nacos"])
def test_only_what_flows_passes(overlay: str) -> None:
    policies = [
        d
        for d in _docs(*POLICIES, *(NACOS_POLICIES if overlay.endswith("nacos") else []))
        if d["kind"] == "NetworkPolicy"
    ]
    wrong = []
    for src, dst, port, protocol, plain, nacos in FLOWS:
        expected = nacos if overlay.endswith("nacos") else plain
        if expected is None:
            continue
        got = allowed(policies, ENDS[src], ENDS[dst], port, protocol)
        print(f"{'pass' if got else 'drop'}  {src} -> {dst}:{port}/{protocol}")
        if got != expected:
            wrong.append((src, dst, port, protocol, got))
    assert wrong == []


def test_the_evaluator_isolates_only_selected_pods() -> None:
    """Controls of the evaluator: with no policy everything passes; a policy for Redis
    alone leaves the other pods open."""
    assert allowed([], ENDS["internet"], ENDS["redis"], 6379)
    redis_only = [d for d in _docs(*POLICIES) if d["metadata"]["name"] == "redis"]
    assert allowed(redis_only, ENDS["signaling"], ENDS["internet"], 443)
    assert not allowed(redis_only, ENDS["internet"], ENDS["redis"], 6379)
