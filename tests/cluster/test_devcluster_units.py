"""devcluster's pure parts, no cluster: image mapping, env expansion, downward API, pod IPs."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.images import ImageMap, image_name
from devcluster.kube import load_kubeconfig
from devcluster.node_agent.containers import expand as _expand
from devcluster.node_agent.containers import field_ref
from devcluster.node_agent.ippool import IpPool


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("roomwire/signaling:dev", "roomwire/signaling"),
        ("roomwire/signaling", "roomwire/signaling"),
        ("localhost:5000/roomwire/operator:v1@sha256:ab", "roomwire/operator"),
        ("registry.example:443/roomwire/signaling:1", "roomwire/signaling"),
    ],
)
def test_image_name(image: str, name: str) -> None:
    assert image_name(image) == name


def test_image_map_commands_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "images.yaml"
    f.write_text(
        "images:\n"
        "  - image: roomwire/sig*\n"
        "    command: ['{python}', '-m', 'signaling']\n"
        "    args: [serve]\n"
    )
    m = ImageMap(f, python="py")
    assert m.argv("roomwire/signaling:x", None, None) == ["py", "-m", "signaling", "serve"]
    assert m.argv("org/roomwire/signaling:x", None, ["serve", "--port", "1"])[-1] == "1"
    assert m.argv("roomwire/signaling", ["{python}", "-c"], ["pass"]) == ["py", "-c", "pass"]
    assert m.lookup("nginx:1") is None
    with pytest.raises(KeyError):
        m.argv("nginx:1", None, None)


def test_env_expansion() -> None:
    env = {"A": "1"}
    assert _expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_field_refs() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "x"}},
        "spec": {"nodeName": "devcluster", "serviceAccountName": "sa"},
    }
    ip = "127.0.1.7"
    assert field_ref(pod, "metadata.name", ip, "node") == "p"
    assert field_ref(pod, "metadata.namespace", ip, "node") == "n"
    assert field_ref(pod, "status.podIP", ip, "node") == ip
    assert field_ref(pod, "spec.nodeName", ip, "node") == "devcluster"
    assert field_ref(pod, "metadata.labels['app']", ip, "node") == "x"
    with pytest.raises(ValueError):
        field_ref(pod, "spec.bogus", ip, "node")


def test_ip_pool_hands_out_distinct_loopback_ips() -> None:
    pool = IpPool()
    ips = [pool.allocate() for _ in range(300)]
    assert len(set(ips)) == 300
    assert all(ip.startswith("127.0.") and not ip.endswith((".0", ".255")) for ip in ips)
    pool.release(ips[0])
    assert ips[0] not in [pool.allocate() for _ in range(10)]  # round-robin, not reused at once
    other = IpPool()  # another node agent on the same machine: a block of its own
    assert not {other.allocate() for _ in range(300)} & set(ips)
    pool.close()
    other.close()


def test_kubeconfig_with_token(tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443/', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    creds = load_kubeconfig(cfg)
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.token == "abc" and creds.insecure and creds.context == "c"
