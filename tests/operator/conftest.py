"""Fixtures for the operator tests.

The cluster fixtures come from ``devcluster.pytest_plugin`` (a real kube-apiserver,
etcd, controller manager, node agent and service proxy). As in ``tests/cluster``, they
are imported here only while the root conftest does not register the plugin.
"""

import sys

if "devcluster.pytest_plugin" not in sys.modules:
    from devcluster.pytest_plugin import (
        kube_cluster,
        kube_namespace,
        pytest_collection_modifyitems,
    )

    __all__ = ["kube_cluster", "kube_namespace", "pytest_collection_modifyitems"]
else:  # tests/cluster imported them first: share its fixtures' definitions
    from tests.cluster.conftest import kube_cluster, kube_namespace

    __all__ = ["kube_cluster", "kube_namespace"]
