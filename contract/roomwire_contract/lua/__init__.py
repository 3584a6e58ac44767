"""Lua scripts, one ``.lua`` file each; the ones here are shared by pods and operator.

Each file opens with a header that documents its ``KEYS``, ``ARGV`` and return value;
every key a script touches arrives in ``KEYS[]`` (built by ``roomwire_contract.keys``).
A line ``-- include: <name>`` pulls in the helper functions of ``<name>.lua`` from the
same package. Pure data: reading a script is the only thing this package does.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_INCLUDE = re.compile(r"^-- include: (\w+)$", re.M)


@cache
def load(package: str, name: str) -> str:
    """The source of ``<name>.lua`` in ``package``, its includes spliced in (read once)."""
    text = resources.files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: load(package, m.group(1)), text)


def script(name: str) -> str:
    """A script shared by the pods and the operator."""
    return load(__package__ or "roomwire_contract.lua", name)
