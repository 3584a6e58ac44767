"""Roomwire signaling workload: plain-WebSocket rooms for WebRTC signaling.

Layers, outermost first (checked by import-linter):

- ``__main__`` — the ``signaling serve`` command: settings, signals, process lifecycle.
- ``hub`` — the aiohttp adapter, one module per job (its docstring has the map):
  sockets, bounded outbound queues, local delivery, join and resume, grace, relay, the
  inbox handler, operator commands and drain, HTTP routes. All socket I/O happens here.
- ``registry`` — where sessions and rooms are registered, in three roles (sessions,
  routing, pod presence): in memory (the embedded default) or in Redis (many pods),
  with the scripts in ``lua``. All Redis I/O happens there, on ``resp`` connections.
- ``protocol``, ``tokens``, ``metrics`` — pure: no I/O. The protocol core turns frames
  into intents and never raises for bad input. Key names, the inbox codec and operator
  commands are the contract shared with the operator (``roomwire_contract``).

``client`` is a small asyncio client of the wire protocol, used by tests, benchmarks
and the edge.
"""

__version__ = "0.1.0"
