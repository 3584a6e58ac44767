"""The workload's Lua scripts, one ``.lua`` file each (see ``roomwire_contract.lua``)."""

from __future__ import annotations

from roomwire_contract.lua import load


def script(name: str) -> str:
    return load(__package__ or "signaling.lua", name)
