"""A pod's status as the kubelet reports it, built from its containers: phase, conditions
(Ready = every container ready AND every readiness gate True), container statuses, and the
pod IP's API alias. Pure: no API calls; ``clock`` gives the transition timestamps."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from ..addresses import to_api
from ..kube import Obj
from .clock import now_iso
from .containers import Container

HOST_IP = "127.0.0.1"


def container_status(c: Container) -> Obj:
    state: Obj
    if c.running:
        state = {"running": {"startedAt": c.started_at}}
    elif c.terminated is not None and c.waiting is None:
        state = {"terminated": c.terminated}
    else:
        reason, message = c.waiting or ("ContainerCreating", "")
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    out: Obj = {
        "name": c.name,
        "image": c.spec.get("image", ""),
        "imageID": "",
        "ready": c.ready,
        "started": c.started,
        "restartCount": c.restart_count,
        "state": state,
        "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
    }
    if c.runtime == "podman":  # the id once podman reported it running
        out["imageID"] = c.image_id
        if c.container_id:
            out["containerID"] = f"podman://{c.container_id}"
    elif c.ref is not None:
        out["containerID"] = f"local://{c.ref.pid}"
        out["imageID"] = f"local://{c.spec.get('image', '')}"
    return out


def waiting_statuses(pod: Obj, reason: str, message: str) -> list[Obj]:
    """Container statuses of a pod whose containers are not created yet."""
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "lastState": {},
            "state": {"waiting": {"reason": reason, "message": message}},
        }
        for c in pod["spec"].get("containers") or []
    ]


def pod_conditions(
    pod: Obj,
    containers: Sequence[Container],
    has_ip: bool,
    clock: Callable[[], str] = now_iso,
) -> list[Obj]:
    """The kubelet's five conditions; a condition whose status is unchanged keeps its
    ``lastTransitionTime`` from ``pod``. Others' conditions (readiness gates) are not listed:
    the strategic-merge patch leaves them alone."""
    existing = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    containers_ready = bool(containers) and all(c.ready for c in containers)
    gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
    gates_ok = all(existing.get(g, {}).get("status") == "True" for g in gates)
    ready = containers_ready and gates_ok
    if not containers_ready:
        not_ready = [c.name for c in containers if not c.ready] or ["(pending)"]
        reason, msg = "ContainersNotReady", f"containers with unready status: {not_ready}"
    elif not gates_ok:
        missing = [g for g in gates if existing.get(g, {}).get("status") != "True"]
        reason, msg = (
            "ReadinessGatesNotReady",
            f"corresponding condition of pod readiness gate {missing} does not exist or is False",
        )
    else:
        reason, msg = "", ""
    want = [
        ("PodReadyToStartContainers", has_ip, "", ""),
        ("Initialized", True, "", ""),
        (
            "ContainersReady",
            containers_ready,
            reason if not containers_ready else "",
            msg if not containers_ready else "",
        ),
        ("Ready", ready, reason, msg),
        ("PodScheduled", True, "", ""),
    ]
    out = []
    for ctype, ok, why, text in want:
        status = "True" if ok else "False"
        old = existing.get(ctype)
        since = (
            old["lastTransitionTime"]
            if old and old.get("status") == status and old.get("lastTransitionTime")
            else clock()
        )
        cond: Obj = {
            "type": ctype,
            "status": status,
            "lastTransitionTime": since,
            "lastProbeTime": None,
        }
        if why:
            cond["reason"] = why
        if text:
            cond["message"] = text
        out.append(cond)
    return out


def pod_phase(pod: Obj, containers: Sequence[Container]) -> str:
    if not containers or any(c.ref is None for c in containers):
        return "Pending"
    if any(c.running for c in containers):
        return "Running"
    policy = pod["spec"].get("restartPolicy", "Always")
    codes = [(c.terminated or {}).get("exitCode", 0) for c in containers]
    if policy == "Always" or (policy == "OnFailure" and any(codes)):
        return "Running"
    return "Succeeded" if all(code == 0 for code in codes) else "Failed"


def pod_status(
    pod: Obj,
    containers: Sequence[Container],
    *,
    ip: str | None,
    start_time: str,
    pending: tuple[str, str],
    clock: Callable[[], str] = now_iso,
) -> Obj:
    """The ``status`` to patch: before the containers exist, each waits with ``pending``
    (reason, message); ``ip`` is the pod's loopback IP, written as its API alias."""
    if containers:
        statuses = [container_status(c) for c in containers]
    else:
        statuses = waiting_statuses(pod, *pending)
    status: Obj = {
        "phase": pod_phase(pod, containers),
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": start_time,
        "conditions": pod_conditions(pod, containers, ip is not None, clock),
        "containerStatuses": statuses,
    }
    if ip:
        status["podIP"] = to_api(ip)
        status["podIPs"] = [{"ip": to_api(ip)}]
    return status


def comparable(status: Obj) -> str:
    """``status`` as text without transition times: equal texts need no new patch."""
    return json.dumps(
        {
            **status,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in status["conditions"]
            ],
        },
        sort_keys=True,
    )
