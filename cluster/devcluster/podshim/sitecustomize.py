"""Cluster DNS for Python pods run by the devcluster node agent (loaded via PYTHONPATH).

There is no cluster DNS server: this hook makes ``socket.getaddrinfo`` (and
``gethostbyname``) resolve Service names (``svc``, ``svc.ns``, ``svc.ns.svc``,
``svc.ns.svc.cluster.local``) to the loopback address where the service proxy serves that
Service, read from ``$DEVCLUSTER_SERVICES`` (the proxy's table). Other names resolve as
usual.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

_TABLE = os.environ.get("DEVCLUSTER_SERVICES", "")
_NAMESPACE = os.environ.get("POD_NAMESPACE", "default")
_cache: dict[str, Any] = {"mtime": -1.0, "names": {}}
_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname


def _names() -> dict[str, str]:
    try:
        mtime = os.stat(_TABLE).st_mtime
    except OSError:
        return {}
    if mtime != _cache["mtime"]:
        names: dict[str, str] = {}
        try:
            with open(_TABLE) as f:
                table = json.load(f)
        except (OSError, ValueError):
            return dict(_cache["names"])
        for key, entry in table.items():
            ns, name = key.split("/", 1)
            ip = entry.get("ip")
            if not ip:
                continue
            for alias in (f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                names[alias] = ip
            if ns == _NAMESPACE:
                names[name] = ip
        _cache["names"] = names
        _cache["mtime"] = mtime
    return dict(_cache["names"])


def _resolve(host: Any) -> Any:
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str):
        return _names().get(host.rstrip(".").lower(), host)
    return host


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    return _getaddrinfo(_resolve(host), *args, **kwargs)


def gethostbyname(host: str) -> str:
    return _gethostbyname(_resolve(host))


if _TABLE:
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
