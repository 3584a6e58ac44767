"""Manifests the cluster tests create: typed builders, no I/O."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

SIGNALING_PORT = 8080


def signaling_deployment(
    namespace: str,
    name: str = "signaling",
    replicas: int = 3,
    redis_url: str | None = None,
    readiness_gate: str | None = None,
    drain_seconds: float = 3,
) -> Obj:
    """The workload as a Deployment: ``roomwire/signaling``, pod IP from the downward API."""
    env: list[Obj] = [
        {"name": "SIGNALING_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SIGNALING_PORT", "value": str(SIGNALING_PORT)},
        {"name": "SIGNALING_POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SIGNALING_DRAIN_S", "value": str(drain_seconds)},
    ]
    if redis_url:
        env.append({"name": "SIGNALING_REDIS_URL", "value": redis_url})
    pod_spec: Obj = {
        "terminationGracePeriodSeconds": int(drain_seconds) + 10,
        "containers": [
            {
                "name": "signaling",
                "image": "roomwire/signaling:dev",
                "env": env,
                "ports": [{"name": "http", "containerPort": SIGNALING_PORT}],
                "readinessProbe": {
                    "httpGet": {"path": "/readyz", "port": "http"},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 5,
                },
            }
        ],
    }
    if readiness_gate:
        pod_spec["readinessGates"] = [{"conditionType": readiness_gate}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "serving": "yes"}},
                "spec": pod_spec,
            },
        },
    }


def service(namespace: str, name: str, selector: dict[str, str], port: int, target: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": target}],
        },
    }


def small_server_pod(namespace: str, name: str, **extra: Any) -> Obj:
    container: Obj = {
        "name": "app",
        "image": "roomwire/devcluster-testserver:latest",
        "env": [
            {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "GREETING", "value": "hello $(MY_NS)"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
    }
    container.update(extra.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [container], **extra},
    }


def deployment_available(d: Obj, settled: bool = False) -> bool:
    """A Deployment as ``kubectl wait --for=condition=Available`` sees it, its current
    generation observed and every replica updated and available; with ``settled``, no
    pod of an older template left either."""
    st = d.get("status") or {}
    want = int(d["spec"].get("replicas", 1))
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    return (
        conds.get("Available") == "True"
        and st.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and st.get("availableReplicas", 0) >= want
        and st.get("updatedReplicas", 0) >= want
        and (not settled or st.get("replicas", 0) == want)
    )
