"""Pod addresses: the loopback IP a pod's processes use, and the alias the API shows.

Every pod listens on its own loopback IP, ``127.0.X.Y``. The API server refuses loopback
addresses in EndpointSlices ("may not be in the loopback range"), so the EndpointSlice
controller could never publish such a pod. The node agent therefore reports
``198.18.X.Y`` in ``status.podIP(s)`` (198.18.0.0/15 is reserved for network benchmarks
and is never routed on the Internet) and the same ``X.Y`` is the pod's loopback address:
a one-to-one alias, like a NAT. Containers see their loopback IP (``POD_IP``, fieldRefs
to ``status.podIP``); the service proxy and the tests map API addresses back with
``to_local``. Nothing ever sends a packet to a ``198.18`` address.
"""

from __future__ import annotations

LOCAL_PREFIX = "127.0."
API_PREFIX = "198.18."
LOCAL_IP_ANNOTATION = "devcluster.roomwire.io/local-ip"


def to_api(local_ip: str) -> str:
    """``127.0.X.Y`` -> ``198.18.X.Y``."""
    if not local_ip.startswith(LOCAL_PREFIX):
        raise ValueError(f"not a pod loopback address: {local_ip}")
    return API_PREFIX + local_ip[len(LOCAL_PREFIX) :]


def to_local(ip: str) -> str:
    """``198.18.X.Y`` -> ``127.0.X.Y``; any other address is returned as it is."""
    if ip.startswith(API_PREFIX):
        return LOCAL_PREFIX + ip[len(API_PREFIX) :]
    return ip
