"""The node agent: the kubelet's part (and the scheduler's binding), for pods that run as
local processes.

- Registers one Node and keeps its Ready condition.
- Binds every unscheduled pod (default scheduler) to that Node.
- For each pod bound here, a pod worker: gives the pod its own loopback IP (127.0.x.y),
  starts each container as a local process (``images.yaml`` maps image -> command), passes
  the container's env (downward-API fieldRefs, ConfigMap/Secret refs, a service-account
  kubeconfig in ``KUBECONFIG``), runs startup/readiness/liveness probes (httpGet, tcpSocket,
  exec), computes Ready from container readiness AND every readiness gate, patches the pod
  status, restarts containers per ``restartPolicy``, and on deletion sends SIGTERM, waits
  the grace period, then SIGKILL, and removes the pod.
- An image it does not know: a Warning event, and the pod stays Pending.

Each container runs in a mount and UTS namespace of its own with the pod's
``/etc/resolv.conf`` (the cluster DNS server), ``/etc/hosts`` and hostname, as a kubelet's
pods do (``devcluster.podns``); ``exec`` probes run inside those namespaces.

What it does not do: volumes, init containers, resource limits, image pulls, preStop hooks
other than ``sleep``.

Modules, each importing only those below it (an import-linter layers contract):

- ``agent``: the assembly: the pod watch, one worker per pod, PID records, shutdown;
- ``binding`` / ``node`` / ``worker`` (independent of each other): binding unscheduled
  pods; the Node and its heartbeat; one pod's life and its status patches;
- ``status``: the pod's status built from its containers (pure);
- ``containers``: one container's state, command, environment, ServiceAccount kubeconfig;
- ``probes`` / ``events`` / ``ippool``: probe state and runs; Events about pods; the
  block of loopback pod IPs;
- ``clock``: the API's timestamp format.

Only ``agent``, ``binding``, ``node``, ``events`` and ``worker`` talk to the API.
"""

from .agent import NodeAgent
from .clock import now_iso
from .containers import field_ref
from .ippool import IpPool

__all__ = ["IpPool", "NodeAgent", "field_ref", "now_iso"]
