"""Cluster tests: fixtures from ``devcluster.pytest_plugin``.

pytest only accepts ``pytest_plugins`` in the root conftest; until the root registers
``devcluster.pytest_plugin``, its fixtures are imported here (and only then, so that a
session never starts two clusters).
"""

import sys

if "devcluster.pytest_plugin" not in sys.modules:
    from devcluster.pytest_plugin import (
        kube_cluster,
        kube_namespace,
        pytest_collection_modifyitems,
    )

    __all__ = ["kube_cluster", "kube_namespace", "pytest_collection_modifyitems"]
