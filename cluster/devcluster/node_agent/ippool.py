"""The node's pod IPs: a block of loopback addresses ``127.0.X.Y`` claimed with an ``flock``.

The API never sees these addresses: the pod worker writes their ``198.18.X.Y`` alias
(``devcluster.addresses.to_api``) into the pod's status and annotates the pod with the local
one. The service proxy and the cluster DNS server take their addresses from the same block.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from pathlib import Path


def listening_ips() -> set[str]:
    """IPv4 addresses with a listening TCP socket on this machine (from /proc/net/tcp)."""
    out: set[str] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # LISTEN
            hexip = fields[1].split(":")[0]
            out.add(".".join(str(b) for b in reversed(bytes.fromhex(hexip))))
    return out


class IpPool:
    """Pod IPs ``127.0.X.Y``, handed out round-robin, never two at once.

    Several clusters may run on one machine (``make cluster-up`` and test sessions), so
    each node agent first claims a block of eight ``X`` values (2,032 addresses) for its
    lifetime with an ``flock`` on a file in the temporary folder; the kernel drops the
    claim when the process ends, however it ends.
    """

    BLOCK = 8

    def __init__(self) -> None:
        self._next = 0
        self._used: set[int] = set()
        self._reserved: set[int] = set()  # held for pods coming back (see reserve)
        self._lock = threading.Lock()
        self._claim: int | None = None
        self.first = 1
        folder = Path(tempfile.gettempdir()) / "devcluster-ip-blocks"
        folder.mkdir(exist_ok=True)
        for k in range(255 // self.BLOCK):
            fd = os.open(folder / f"{k}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._claim = fd
            self.first = 1 + k * self.BLOCK
            return
        raise RuntimeError("every block of pod IPs is claimed by another node agent")

    @property
    def size(self) -> int:
        return self.BLOCK * 254

    def close(self) -> None:
        """Give the block back (also happens when the process ends)."""
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None

    def _ip(self, i: int) -> str:
        return f"127.0.{self.first + i // 254}.{1 + i % 254}"

    def allocate(self) -> str:
        busy = listening_ips()  # also skip addresses that something else already serves on
        with self._lock:
            for _ in range(self.size):
                i = self._next
                self._next = (self._next + 1) % self.size
                if i not in self._used and self._ip(i) not in busy:
                    self._used.add(i)
                    return self._ip(i)
        raise RuntimeError("no pod IP left")

    def release(self, ip: str) -> None:
        parts = ip.split(".")
        with self._lock:
            i = (int(parts[2]) - self.first) * 254 + int(parts[3]) - 1
            self._used.discard(i)
            self._reserved.discard(i)

    def _index(self, ip: str) -> int | None:
        parts = ip.split(".")
        if len(parts) != 4 or parts[:2] != ["127", "0"] or not all(p.isdigit() for p in parts):
            return None
        i = (int(parts[2]) - self.first) * 254 + int(parts[3]) - 1
        return i if 0 <= i < self.size and 1 <= int(parts[3]) <= 254 else None

    def reserve(self, ip: str) -> None:
        """Hold ``ip`` for the pod that had it under an earlier node agent of this node
        (the API keeps a pod's IP for the pod's life): addresses handed out meanwhile,
        the Services' first, skip it, and ``claim`` gives it back to that pod."""
        i = self._index(ip)
        if i is not None:
            with self._lock:
                self._used.add(i)
                self._reserved.add(i)

    def claim(self, ip: str) -> bool:
        """Take ``ip`` if it is held for a pod coming back, or free."""
        i = self._index(ip)
        if i is None:
            return False
        busy = listening_ips()
        with self._lock:
            if i in self._reserved:
                self._reserved.discard(i)
                return True
            if i not in self._used and ip not in busy:
                self._used.add(i)
                return True
        return False
