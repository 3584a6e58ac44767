"""No Redis key name is written anywhere but the contract (``roomwire_contract.keys``).

Scans every shipped and test-support source, Python and Lua, for a string literal that
starts like one of the project's keys (``rw:``): Python string tokens (f-strings too)
and Lua quoted strings. Comments and docstrings that mention a key are fine; code that
spells one is not. The contract's own scripts take every key in ``KEYS[]``, so no Lua
file may hold a key literal either.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from tests.support import ROOT

CONTRACT_KEYS = ROOT / "contract" / "roomwire_contract" / "keys.py"
SCANNED = ["contract", "workload", "operator", "cluster", "bench", "tests"]
THIS_FILE = Path(__file__).resolve()

# a literal that begins a key: 'rw:...' or "rw:..." (after an f/r/b prefix in Python)
PY_KEY = re.compile(r"""^[rRbBfF]{0,2}(['"]{1,3})rw:""")
LUA_KEY = re.compile(r"""(['"])rw:[^'"]*\1""")


def _python_literals(path: Path) -> list[tuple[int, str]]:
    out = []
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for tok in tokens:
        kind = tok.type
        if kind == tokenize.STRING and PY_KEY.match(tok.string):
            out.append((tok.start[0], tok.string))
        elif kind == getattr(tokenize, "FSTRING_START", -1) and PY_KEY.match(tok.string + "rw:"):
            out.append((tok.start[0], tok.string))
    return out


def _lua_literals(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.split("--", 1)[0]  # a comment may name the keys it documents
        out += [(n, m.group(0)) for m in LUA_KEY.finditer(code)]
    return out


def _sources(suffix: str) -> list[Path]:
    found: list[Path] = []
    for top in SCANNED:
        found += [
            p
            for p in (ROOT / top).rglob(f"*{suffix}")
            if "node_modules" not in p.parts and ".out" not in p.parts
        ]
    return found


def test_no_key_literal_outside_the_contract() -> None:
    offenders = []
    for path in _sources(".py"):
        if path.resolve() in (CONTRACT_KEYS.resolve(), THIS_FILE):
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}: {s}" for n, s in _python_literals(path)]
    for path in _sources(".lua"):
        offenders += [f"{path.relative_to(ROOT)}:{n}: {s}" for n, s in _lua_literals(path)]
    assert offenders == [], "Redis key names outside roomwire_contract.keys:\n" + "\n".join(
        offenders
    )


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The detector itself: a key literal in Python and in Lua code is caught, a key
    named in a comment or docstring is not."""
    py = tmp_path / "m.py"
    py.write_text('"""Reads ``rw:pods``."""\nK = "rw:pods"\nF = f"rw:pod:{1}"\n# rw:x\n')
    assert [n for n, _ in _python_literals(py)] == [2, 3]
    lua = tmp_path / "s.lua"
    lua.write_text(
        "-- KEYS[1] rw:pods\nlocal k = 'rw:session:' .. sid\nredis.call('GET', KEYS[1])\n"
    )
    assert [n for n, _ in _lua_literals(lua)] == [2]
