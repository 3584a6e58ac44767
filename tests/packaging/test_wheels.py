"""What each image installs: the wheels of its own distributions and nothing else.

Builds the workload set (roomwire-contract, roomwire-signaling) and the operator set
(roomwire-contract, roomwire-operator) for real with ``pip wheel --no-deps`` (hatchling
from the development install, no build isolation: no network), the way both Dockerfiles
do, and reads the wheels: which packages and files they hold, what they require, which
version they carry. Nothing is installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Never a requirement of a shipped distribution (the brief of issue 9, item 5), beside
# whatever the root project's `dev` extra and its own requirements name.
DEV_ONLY = {"pytest", "mypy", "ruff", "hypothesis", "import-linter"}
SHIPPED = {"roomwire-contract", "roomwire-signaling", "roomwire-operator"}
# Needed at run time too, though the test cluster uses them as well: PyYAML parses the
# config center's documents in the pods and the operator (docs/nacos.md, "Config
# center"); it was dev-only when issue 9 was written.
RUNTIME_TOO = {"pyyaml"}


def _name(requirement: str) -> str:
    """The normalized project name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _root_project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _dev_only() -> set[str]:
    """The brief's list, the root's `dev` extra and the root's own requirements (those
    of devcluster), less the three distributions that ship."""
    project = _root_project()
    requirements = [*project["optional-dependencies"]["dev"], *project["dependencies"]]
    return (DEV_ONLY | {_name(r) for r in requirements}) - SHIPPED - RUNTIME_TOO


class Wheel:
    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as z:
            self.files = z.namelist()
            meta_name = next(f for f in self.files if f.endswith(".dist-info/METADATA"))
            self.metadata = Parser().parsestr(z.read(meta_name).decode())

    @property
    def name(self) -> str:
        return _name(self.metadata["Name"])

    @property
    def requires(self) -> set[str]:
        return {_name(r) for r in self.metadata.get_all("Requires-Dist") or []}

    @property
    def top_level(self) -> set[str]:
        return {f.split("/")[0] for f in self.files if ".dist-info/" not in f}


def _build(tmp: Path, *projects: str) -> dict[str, Wheel]:
    out = tmp / "-".join(projects)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), *(str(ROOT / p) for p in projects)],
        check=True, timeout=300,
    )  # fmt: skip
    wheels = [Wheel(p) for p in sorted(out.glob("*.whl"))]
    return {w.name: w for w in wheels}


@pytest.fixture(scope="module")
def workload_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    return _build(tmp_path_factory.mktemp("wheels"), "contract", "workload")


@pytest.fixture(scope="module")
def operator_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    return _build(tmp_path_factory.mktemp("wheels"), "contract", "operator")


def _source_files(package_dir: Path, pattern: str) -> set[str]:
    base = package_dir.parent
    return {p.relative_to(base).as_posix() for p in package_dir.glob(pattern) if p.is_file()}


def test_the_workload_image_gets_signaling_and_the_contract(
    workload_set: dict[str, Wheel],
) -> None:
    assert set(workload_set) == {"roomwire-contract", "roomwire-signaling"}
    contract, signaling = workload_set["roomwire-contract"], workload_set["roomwire-signaling"]
    assert contract.top_level == {"roomwire_contract"}
    assert signaling.top_level == {"signaling"}
    lua = _source_files(ROOT / "contract" / "roomwire_contract", "lua/*.lua")
    static = _source_files(ROOT / "workload" / "signaling", "static/*")
    assert lua and lua <= set(contract.files), lua - set(contract.files)
    assert static and static <= set(signaling.files), static - set(signaling.files)
    assert {"roomwire_contract/py.typed", "signaling/py.typed"} <= set(
        contract.files + signaling.files
    )
    assert "roomwire-contract" in signaling.requires
    entry_points = zipfile.ZipFile(signaling.path).read(
        next(f for f in signaling.files if f.endswith(".dist-info/entry_points.txt"))
    )
    assert b"signaling = signaling.__main__:main" in entry_points


def test_the_operator_image_gets_the_operator_and_the_contract(
    operator_set: dict[str, Wheel],
) -> None:
    assert set(operator_set) == {"roomwire-contract", "roomwire-operator"}
    operator = operator_set["roomwire-operator"]
    assert operator.top_level == {"meetingroom_operator"}
    assert "meetingroom_operator/py.typed" in operator.files
    assert "roomwire-contract" in operator.requires
    assert not operator.requires & {"roomwire-signaling", "orjson", "pyjwt", "uvloop"}


@pytest.mark.parametrize("image", ["workload_set", "operator_set"])
def test_no_image_gets_the_test_cluster_or_a_dev_only_package(
    image: str, request: pytest.FixtureRequest
) -> None:
    wheels: dict[str, Wheel] = request.getfixturevalue(image)
    dev_only = _dev_only()
    for wheel in wheels.values():
        assert "devcluster" not in wheel.top_level, wheel.path.name
        assert not any(f.startswith(("tests/", "bench/", "cluster/")) for f in wheel.files)
        assert not wheel.requires & dev_only, (wheel.path.name, wheel.requires & dev_only)
        for f in wheel.files:
            if f.endswith(".py"):
                text = zipfile.ZipFile(wheel.path).read(f).decode()
                assert not re.search(r"^\s*(import|from) devcluster\b", text, re.M), f
                if re.search(r"^\s*(import|from) yaml\b", text, re.M):
                    # YAML only where the config center's documents are read.
                    assert f.endswith("/config_center.py"), f


def test_every_distribution_has_the_root_version(
    workload_set: dict[str, Wheel], operator_set: dict[str, Wheel]
) -> None:
    version = _root_project()["version"]
    for wheel in [*workload_set.values(), *operator_set.values()]:
        assert wheel.metadata["Version"] == version, wheel.path.name
