"""The room edge (the seed's local-ws): a small signaling server beside a meeting room's
big screen. Devices of the room connect to it over the LAN with the ordinary wire
protocol; it relays between them itself, and carries all of them over ONE upstream
WebSocket to the room's home pod, where each device is a session of the room.

- ``framing`` — the edge link's messages (attach, device frames both ways, progress,
  batches): pure, shared with the hub, which speaks the cloud side of it.
- ``settings`` — ``signaling edge``'s settings (``SIGNALING_EDGE_*``).
- ``room`` — the room as the edge holds it: devices, their seq, the local fast path,
  what goes up.
- ``upstream`` — the one connection to the cloud: backoff, resume, the bounded queue.
- ``server`` — the aiohttp adapter: devices' sockets, health, metrics, the demo page.

This package imports nothing of ``signaling.hub`` or ``signaling.registry`` (checked by
import-linter); the package itself imports nothing, so the hub may use ``framing``.
See ``docs/edge.md``.
"""
