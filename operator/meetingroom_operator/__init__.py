"""The MeetingRoom operator (kopf): places rooms on signaling pods, scales the
Deployment, publishes endpoint weights, rebalances live connections and cleans up
after pods that died.

Layers, top to bottom (checked by import-linter):

- ``main``: kopf-decorated handlers only, each handing off in one line.
- ``handlers``: orchestrate one event: observe (through the I/O modules), decide
  (through ``planning``), act (through the I/O modules).
- ``planning``: pure functions of observed state; no I/O, no kopf, kubernetes or redis.
- ``kube`` (all Kubernetes API traffic besides kopf's own) and ``store`` (all Redis
  traffic): I/O only, no decisions.
- ``config``, ``constants``, ``errors``, ``metrics``: leaves every layer may use.

Run it with ``kopf run -m meetingroom_operator.main``.
"""
