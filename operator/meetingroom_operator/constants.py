"""Names shared by every layer: API group, labels, annotations, handler ids. No logic."""

from __future__ import annotations

from typing import Final

GROUP: Final = "rtc.roomwire.io"
VERSION: Final = "v1alpha1"
KIND: Final = "MeetingRoom"
PLURAL: Final = "meetingrooms"
SHORT_NAME: Final = "mr"

# Labels and annotations on signaling pods.
APP_LABEL: Final = "app.kubernetes.io/name"
APP_NAME: Final = "signaling"
ACCEPTING_LABEL: Final = f"{GROUP}/accepting"
WEIGHT_ANNOTATION: Final = f"{GROUP}/weight"
DRAINING_ANNOTATION: Final = f"{GROUP}/draining"
DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"

# Room phases (status.phase).
PHASE_PENDING: Final = "Pending"
PHASE_READY: Final = "Ready"
PHASE_IDLE: Final = "Idle"

# Condition types.
COND_READY: Final = "Ready"
COND_PLACED: Final = "Placed"
COND_EDGE: Final = "EdgeConnected"  # rooms with an edge: its upstream is linked

# kopf handler ids (they name the progress fields kopf keeps in annotations).
HANDLER_ROOM_RECONCILE: Final = "room-reconcile"
HANDLER_ROOM_DELETE: Final = "room-delete"

# Every Redis key, the operator's own included, is named in ``roomwire_contract.keys``.
