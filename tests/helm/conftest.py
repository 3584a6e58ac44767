"""Fixtures for the Helm chart's tests: the pinned ``helm`` (built before any test runs,
outside every test's timeout) and, from ``devcluster.pytest_plugin``, the local cluster.

Every test here is marked ``cluster``: they need the pinned kubectl (its kustomize
renders manifests/ for comparison) and helm, and some the control plane.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chart import Helm, HelmError, build

if "devcluster.pytest_plugin" not in sys.modules:
    from devcluster.pytest_plugin import kube_cluster, kube_namespace

    __all__ = ["kube_cluster", "kube_namespace"]

_built: list[Path] = []


@pytest.hookimpl(trylast=True)  # after `-m` deselection
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Build helm once, before the tests, when any of this folder's tests will run."""
    here = Path(__file__).parent
    if any(Path(str(item.path)).is_relative_to(here) for item in items):
        try:
            _built.append(build())
        except HelmError as e:
            print(f"[helm] {e}")


@pytest.fixture(scope="session")
def helm_exe() -> Path:
    if not _built:
        try:
            _built.append(build())
        except HelmError as e:
            pytest.fail(str(e))
    return _built[0] / "helm"


@pytest.fixture()
def helm(helm_exe: Path, tmp_path: Path) -> Iterator[Helm]:
    """helm with its own (empty) configuration and cache, no cluster."""
    yield Helm(helm_exe, tmp_path / "helm-home")
