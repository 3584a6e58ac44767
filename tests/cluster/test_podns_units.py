"""A pod's ``/etc`` view without a cluster: the files the kubelet would write, and (as root)
a real process started in its own mount and UTS namespaces and entered by ``nsenter``.

Real: ``unshare``, ``mount``, ``nsenter``, ``hostname`` and the C library's ``getent``.
Faked: the pod object. The host's own ``/etc`` files are checked to stay as they were.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devcluster.kube import Obj
from devcluster.podns import (
    PodNamespaces,
    hosts_file,
    namespace_ready,
    nsswitch_conf,
    resolv_conf,
)


def _pod(**spec: object) -> Obj:
    return {"metadata": {"name": "web-0", "namespace": "shop"}, "spec": {"containers": [], **spec}}


def test_cluster_first_resolv_conf() -> None:
    text = resolv_conf(_pod(), "127.0.9.1", "nameserver 10.0.0.2\n")
    assert text.splitlines()[1:] == [
        "nameserver 127.0.9.1",
        "search shop.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]


def test_dns_config_and_other_policies() -> None:
    cfg = {
        "nameservers": ["127.0.0.53"],
        "searches": ["corp.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    text = resolv_conf(_pod(dnsConfig=cfg), "127.0.9.1", "")
    assert "nameserver 127.0.9.1\nnameserver 127.0.0.53\n" in text
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example" in text
    assert "options ndots:2 edns0" in text
    host = "nameserver 10.0.0.2\nsearch lan\noptions timeout:1\n"
    default = resolv_conf(_pod(dnsPolicy="Default"), "127.0.9.1", host)
    assert default.splitlines()[1:] == ["nameserver 10.0.0.2", "search lan", "options timeout:1"]
    none = resolv_conf(_pod(dnsPolicy="None", dnsConfig=cfg), "127.0.9.1", host)
    assert "127.0.9.1" not in none and "nameserver 127.0.0.53" in none


def test_hosts_file() -> None:
    text = hosts_file(_pod(), "127.0.9.7")
    assert "127.0.0.1\tlocalhost" in text and text.endswith("127.0.9.7\tweb-0\n")
    sts = hosts_file(
        _pod(
            hostname="db-0",
            subdomain="db",
            hostAliases=[{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]}],
        ),
        "127.0.9.7",
    )
    assert "127.0.9.7\tdb-0.db.shop.svc.cluster.local\tdb-0\n" in sts
    assert sts.endswith("127.0.0.1\tfoo.local\tbar.local\n")


def test_nsswitch_keeps_all_but_the_hosts_line() -> None:
    host = "passwd: files systemd\nhosts:   files mdns4_minimal [NOTFOUND=return] dns\n"
    out = nsswitch_conf(host)
    assert "passwd: files systemd" in out and "mdns" not in out
    assert out.rstrip().endswith("hosts:          files dns")


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_container_sees_the_pod_files_and_probes_enter_them(tmp_path: Path) -> None:
    before = {f: _digest(f) for f in ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")}
    host_name = os.uname().nodename
    tools = PodNamespaces.find()
    pod = _pod()
    etc = tools.write(tmp_path, pod, "127.0.9.7", "127.0.9.1")
    # the "container": tells what it sees, then waits for its stdin to close
    script = "cat /etc/resolv.conf; hostname; getent hosts web-0; echo ready; exec cat"
    argv = tools.start_argv(["sh", "-c", script], etc, "web-0")
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # bounded: the script prints a few lines, then "ready"
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert "nameserver 127.0.9.1" in lines
        assert "web-0" in lines
        assert any(line.split() == ["127.0.9.7", "web-0"] for line in lines)
        assert namespace_ready(proc.pid)
        probe = subprocess.run(
            tools.exec_argv(proc.pid, ["sh", "-c", "hostname; getent hosts web-0"]),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert probe.stdout.split() == ["web-0", "127.0.9.7", "web-0"]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)
    assert not namespace_ready(os.getpid())
    assert {f: _digest(f) for f in before} == before
    assert os.uname().nodename == host_name
