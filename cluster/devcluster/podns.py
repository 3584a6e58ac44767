"""A pod's own view of ``/etc``: the files the kubelet writes for a pod, and how its processes
get them without the host's files ever changing.

Per pod the node agent writes into the pod's state folder:

- ``resolv.conf`` from ``dnsPolicy`` and ``dnsConfig`` as the kubelet builds it
  (``ClusterFirst``: the cluster DNS server, ``search <ns>.svc.cluster.local svc.cluster.local
  cluster.local``, ``options ndots:5``);
- ``hosts``: localhost, the pod's hostname (with ``subdomain``) at its loopback IP, and
  ``hostAliases``;
- ``nsswitch.conf``: the host's, with ``hosts: files dns``, as in a Debian image, so that a
  host's ``mdns``/``resolve`` modules do not bypass the pod's files.

Each container starts in a mount and UTS namespace of its own (``unshare``), where those
files are bind-mounted over ``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/nsswitch.conf``
and the hostname is the pod's; ``exec`` probes enter the same namespaces (``nsenter``).
Needs root (CAP_SYS_ADMIN), as a kubelet does.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .kube import Obj

CLUSTER_DOMAIN = "cluster.local"
MAX_NAMESERVERS = 3  # glibc reads no more
MAX_SEARCH = 32  # the kubelet's limit

# sh -c: set the hostname, bind the pod's files over /etc, then become the container.
_ENTER = (
    "set -e; "
    'hostname "$1"; shift; '
    "for f in resolv.conf nsswitch.conf hosts; do "
    'if [ "$f" != nsswitch.conf ] || [ -e /etc/$f ]; then mount --bind "$1/$f" "/etc/$f"; fi; '
    "done; shift; "
    'exec "$@"'
)


def pod_hostname(pod: Obj) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def _parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            searches = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    return nameservers, searches, options


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def resolv_conf(pod: Obj, dns_ip: str, host_resolv: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's ``/etc/resolv.conf``, as the kubelet builds it from ``dnsPolicy`` and
    ``dnsConfig``. ``Default`` takes the host's (``host_resolv``), ``None`` only the config."""
    spec = pod.get("spec") or {}
    ns = str(pod["metadata"]["namespace"])
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    options: dict[str, str | None] = {}
    if policy == "Default":
        nameservers, searches, opts = _parse_resolv(host_resolv)
        for o in opts:
            k, _, v = o.partition(":")
            options[k] = v or None
    elif policy == "None":
        nameservers, searches = [], []
    else:  # ClusterFirst, ClusterFirstWithHostNet
        nameservers = [dns_ip]
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
        options["ndots"] = "5"
    cfg = spec.get("dnsConfig") or {}
    nameservers = _unique(nameservers + [str(x) for x in cfg.get("nameservers") or []])
    searches = _unique(searches + [str(x) for x in cfg.get("searches") or []])
    for o in cfg.get("options") or []:
        options[str(o["name"])] = None if o.get("value") is None else str(o["value"])
    lines = ["# Kubernetes-managed resolv.conf (devcluster node agent)"]
    lines += [f"nameserver {ip}" for ip in nameservers[:MAX_NAMESERVERS]]
    if searches:
        lines.append("search " + " ".join(searches[:MAX_SEARCH]))
    if options:
        lines.append(
            "options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items())
        )
    return "\n".join(lines) + "\n"


def hosts_file(pod: Obj, ip: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's ``/etc/hosts``: the kubelet's layout, with the pod's loopback IP."""
    spec = pod.get("spec") or {}
    ns = str(pod["metadata"]["namespace"])
    hostname = pod_hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file (devcluster node agent).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    subdomain = spec.get("subdomain")
    if subdomain:
        lines.append(f"{ip}\t{hostname}.{subdomain}.{ns}.svc.{domain}\t{hostname}")
    else:
        lines.append(f"{ip}\t{hostname}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for a in aliases:
            lines.append(f"{a['ip']}\t" + "\t".join(str(h) for h in a.get("hostnames") or []))
    return "\n".join(lines) + "\n"


def nsswitch_conf(host_text: str) -> str:
    """The host's ``nsswitch.conf`` with ``hosts: files dns``."""
    lines = [ln for ln in host_text.splitlines() if not re.match(r"\s*hosts\s*:", ln)]
    return "\n".join([*lines, "hosts:          files dns"]) + "\n"


@dataclass(frozen=True)
class PodNamespaces:
    """How containers are started in, and probes enter, a pod's own ``/etc`` view."""

    unshare: str
    nsenter: str
    sh: str

    @classmethod
    def find(cls) -> PodNamespaces:
        tools = {t: shutil.which(t) for t in ("unshare", "nsenter", "sh", "mount", "hostname")}
        missing = [t for t, p in tools.items() if p is None]
        if missing:
            raise RuntimeError(f"pods need {', '.join(missing)} (util-linux, hostname)")
        return cls(str(tools["unshare"]), str(tools["nsenter"]), str(tools["sh"]))

    def write(self, folder: Path, pod: Obj, ip: str, dns_ip: str) -> Path:
        """Write the pod's ``etc/`` files into ``folder``; returns that ``etc`` folder."""
        etc = folder / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        host = {}
        for name in ("resolv.conf", "nsswitch.conf"):
            try:
                host[name] = Path("/etc", name).read_text()
            except OSError:
                host[name] = ""
        (etc / "resolv.conf").write_text(resolv_conf(pod, dns_ip, host["resolv.conf"]))
        (etc / "hosts").write_text(hosts_file(pod, ip))
        (etc / "nsswitch.conf").write_text(nsswitch_conf(host["nsswitch.conf"]))
        return etc

    def start_argv(self, argv: list[str], etc: Path, hostname: str) -> list[str]:
        """``argv`` run in new mount and UTS namespaces with the pod's files and hostname.
        ``unshare`` and ``sh`` exec, so the container keeps the PID that was started."""
        return [
            self.unshare,
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--",
            self.sh,
            "-c",
            _ENTER,
            "devcluster-pod",
            hostname,
            str(etc),
            *argv,
        ]

    def exec_argv(self, pid: int, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespaces of the container process ``pid``."""
        return [self.nsenter, "--target", str(pid), "--mount", "--uts", "--", *argv]


def _mounts_at(mountinfo: str, point: str) -> int:
    return sum(1 for line in mountinfo.splitlines() if line.split(" ")[4:5] == [point])


def namespace_ready(pid: int) -> bool:
    """True once process ``pid`` has the pod's ``/etc/hosts`` bound (the last file bound,
    just before the container's program is exec'd): from then on ``nsenter`` sees the pod's
    files. Counted against our own mounts, in case the host's ``/etc/hosts`` is a mount too."""
    try:
        theirs = Path(f"/proc/{pid}/mountinfo").read_text()
        ours = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    return _mounts_at(theirs, "/etc/hosts") > _mounts_at(ours, "/etc/hosts")
