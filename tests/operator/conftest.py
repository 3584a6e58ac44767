"""Fixtures for the operator tests.

The cluster fixtures come from ``devcluster.pytest_plugin`` (a real kube-apiserver,
etcd, controller manager, node agent and service proxy), registered by the root
conftest. As in ``tests/cluster``, they are imported here only while it is not, so that
a session never starts two clusters once it is.
"""

import sys

if "devcluster.pytest_plugin" not in sys.modules:
    from devcluster.pytest_plugin import (
        kube_cluster,
        kube_namespace,
        pytest_collection_modifyitems,
    )

    __all__ = ["kube_cluster", "kube_namespace", "pytest_collection_modifyitems"]
