"""Lua scripts shared by the pods and the operator, one ``.lua`` file each.

Each file opens with a header that documents its ``KEYS``, ``ARGV`` and return value.
Pure data: reading a script is the only thing this package does.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def script(name: str) -> str:
    """The source of ``<name>.lua`` (read once)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
