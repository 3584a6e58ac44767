"""Fixtures for the chaos tests: the cluster fixtures of ``devcluster.pytest_plugin``
(registered by the root conftest), imported here only while they are not, as in
``tests/operator``, so that a session never starts two clusters."""

import sys

if "devcluster.pytest_plugin" not in sys.modules:
    from devcluster.pytest_plugin import (
        kube_cluster,
        kube_namespace,
        pytest_collection_modifyitems,
    )

    __all__ = ["kube_cluster", "kube_namespace", "pytest_collection_modifyitems"]
