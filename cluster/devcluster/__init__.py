"""devcluster: a real Kubernetes control plane on one machine, with pods as local processes.

What is real: etcd, kube-apiserver and kube-controller-manager, built from the Go module
proxy at pinned versions (``cluster/build.sh``). What stands in for the rest:

- ``node_agent``: the kubelet's part, a package with one module per job (its docstring
  lists them). Binds pods to the one Node, runs each container as a local process
  (image -> command through ``cluster/images.yaml``), one loopback IP per pod, probes,
  status, restarts, graceful termination.
- ``service_proxy``: kube-proxy's part, in user space: one loopback port per Service port,
  each new TCP connection forwarded to a random ready endpoint from the EndpointSlices.

Layers: ``__main__``/``pytest_plugin`` > ``control_plane`` > ``node_agent``/``service_proxy``
> ``kube`` (all API traffic) / ``pki`` / ``procs`` / ``images``.
"""
