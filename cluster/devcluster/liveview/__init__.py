"""The live view: one page that shows a Roomwire namespace as it runs, updating every
second: the signaling pods with their connections over time, accepting flag, weight and
draining; the MeetingRooms on each pod; the moves in flight; the operator's recent
decisions (scale, rebalance, accepting, re-homing), inferred from what changed.

A small read-only component beside the cluster, not part of the operator: it reads what
a person or Prometheus reads (the Kubernetes API, each pod's ``/metrics``, the
operator's ``/metrics``, and the operator's moves in flight in Redis), so it needs no
write access, adds nothing to the operator's reconcile loop or its RBAC, and shows the
pods' own numbers. ``python -m devcluster.liveview --kubeconfig ... --namespace ...``;
``make demo`` starts it.

Layers: ``model`` is pure (metrics text in, snapshots and decisions out); ``collect``
does the reading (I/O); ``server`` serves the page and ``/api/state``.
"""
