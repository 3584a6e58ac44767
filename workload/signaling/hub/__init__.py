"""The hub: the aiohttp side of a pod. All socket I/O of the workload happens here.

Decisions about frames are the protocol core's (``signaling.protocol``); what crosses
processes is the registry's (``signaling.registry``). One module per job, outermost
first (the order import-linter checks; the five in the middle know nothing of each
other):

- ``routes`` — HTTP routes (``/ws``, ``/healthz``, ``/readyz``, ``/metrics``, the demo
  page) and ``build_app``.
- ``pod`` — ``Hub``: the parts below assembled, started and stopped.
- ``websocket`` — one connection's read loop: frames through the protocol core, intents
  carried out.
- ``inbox`` — what other pods and the operator publish to this pod.
- ``join`` (join and resume, takeover), ``grace`` (detach, grace, leave), ``relay``
  (to a peer here or on another pod, room events), ``commands`` (operator commands and
  drain), ``heartbeat`` (heartbeat, sweep, dead pods).
- ``delivery`` — frames onto this pod's sockets: seq, bounds, frames kept, room notices.
- ``state`` — what every part shares: settings, registry, metrics, flags, tasks.
- ``sessions`` — the session index.
- ``attachment`` — one socket's outbound side; ``wsframes`` — the text frames it writes.
"""

from .pod import Hub
from .routes import build_app

__all__ = ["Hub", "build_app"]
