"""Settings declared once, read from the environment (and, for a command, from flags).

A settings class is a frozen dataclass whose fields are ``setting(...)``: the annotation
is the type (``str``, ``int``, ``float``, ``bool``, or one of them ``| None``), and the
call holds the default, the help text, the bounds and the choices. The environment
variable is ``PREFIX`` plus the field's name in capitals; the flag is the field's name
with dashes and without a trailing ``_s`` (``grace_s``: ``--grace``, ``GRACE_S``)::

    @settings_class
    class Settings:
        grace_s: float = setting(default=30.0, gt=0, help="seconds a session waits")

    add_flags(parser, Settings, prefix="SIGNALING_")
    s = load(Settings, os.environ, prefix="SIGNALING_", flags=parser.parse_args())

A flag wins over its variable, the variable over the default. An empty variable counts
as unset; an empty value of an optional (``| None``) setting is None. Every problem
(missing, unparsable, out of range) is collected and raised at once as ``SettingsError``.
Pure standard library: no I/O beyond reading the mapping handed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import operator
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, dataclass_transform, get_args, get_type_hints, overload

T = TypeVar("T")
S = TypeVar("S")

_KEY = "roomwire.setting"


class SettingsError(ValueError):
    """One or more settings are missing or bad; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """What a setting's field declares besides its type and default."""

    help: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    live: bool = False  # may change while running (``overlay``); else it needs a restart

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of bounds, or None."""
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            for bound, holds, sign in (
                (self.gt, operator.gt, ">"),
                (self.ge, operator.ge, ">="),
                (self.lt, operator.lt, "<"),
                (self.le, operator.le, "<="),
            ):
                if bound is not None and not holds(value, bound):
                    return f"must be {sign} {bound:g}"
        return None


@overload
def setting(
    *,
    default: T,
    help: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    live: bool = False,
) -> T: ...
@overload
def setting(
    *,
    default_factory: Callable[[], T],
    help: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    live: bool = False,
) -> T: ...
@overload
def setting(*, help: str, choices: tuple[str, ...] | None = None, live: bool = False) -> Any: ...
def setting(
    *,
    default: object = dataclasses.MISSING,
    default_factory: Callable[[], object] | None = None,
    help: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    live: bool = False,
) -> Any:
    """A field of a ``settings_class``; without a default the setting is required.
    ``live``: a running process may take a new value (``overlay``)."""
    metadata = {_KEY: Spec(help, gt, ge, lt, le, choices, live)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(setting,))
def settings_class(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen, keyword-only dataclass of ``setting`` fields."""
    return dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: type  # str, int, float or bool
    optional: bool
    spec: Spec
    default: object  # dataclasses.MISSING when required or computed by a factory
    required: bool

    def env(self, prefix: str) -> str:
        return prefix + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.removesuffix("_s").replace("_", "-")


def _fields(cls: type) -> list[_Field]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if not isinstance(spec, Spec):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        kinds = [k for k in get_args(hints[f.name]) if k is not types.NoneType]
        kind = kinds[0] if len(kinds) == 1 else hints[f.name]
        if kind not in _PARSERS:
            raise TypeError(f"{cls.__name__}.{f.name}: {kind} is not str, int, float or bool")
        required = f.default is f.default_factory is dataclasses.MISSING
        out.append(_Field(f.name, kind, bool(kinds), spec, f.default, required))
    return out


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS: dict[type, Callable[[str], object]] = {str: str, int: int, float: float, bool: _bool}


def add_flags(parser: argparse.ArgumentParser, cls: type, *, prefix: str) -> None:
    """One flag per setting of ``cls``, its help naming its variable and default."""
    for f in _fields(cls):
        shown = "" if f.default in (None, "", dataclasses.MISSING) else f"; default {f.default}"
        parser.add_argument(
            f.flag,
            dest=f.name,
            type=_PARSERS[f.kind],
            default=None,
            choices=f.spec.choices,
            metavar=f.flag[2:].replace("-", "_").upper(),
            help=f"{f.spec.help} [env {f.env(prefix)}{shown}{'; live' if f.spec.live else ''}]",
        )


def load(
    cls: type[S],
    env: Mapping[str, str],
    *,
    prefix: str,
    flags: argparse.Namespace | None = None,
) -> S:
    """An instance of ``cls`` from ``flags`` (those given), then ``env``, then defaults;
    ``SettingsError`` listing every problem."""
    problems: list[str] = []
    values: dict[str, object] = {}
    for f in _fields(cls):
        value = getattr(flags, f.name, None)
        where = f.flag
        if value is None:
            where, raw = f.env(prefix), env.get(f.env(prefix), "").strip()
            if raw == "":
                if f.required:
                    problems.append(f"{where} is required")
                continue
            try:
                value = _PARSERS[f.kind](raw)
            except ValueError:
                why = " (expected true or false)" if f.kind is bool else ""
                problems.append(f"{where}={raw!r} is not a valid {f.kind.__name__}{why}")
                continue
        if value == "" and f.optional:
            value = None
        bad = f.spec.problem(value)
        if bad is not None:
            problems.append(f"{where} {bad} (got {value!r})")
        values[f.name] = value
    if problems:
        raise SettingsError(problems)
    return cls(**values)


def live_names(cls: type) -> tuple[str, ...]:
    """The settings of ``cls`` a running process may change (declared ``live=True``)."""
    return tuple(f.name for f in _fields(cls) if f.spec.live)


def _typed(f: _Field, raw: object) -> object:
    """``raw`` (a value of a parsed document) as the setting's type; ValueError if it is
    not one. A string is parsed as the environment would be; a bool is never a number."""
    if raw is None and f.optional:
        return None
    if isinstance(raw, str):
        return _PARSERS[f.kind](raw.strip()) if f.kind is not str else raw
    if f.kind is bool and isinstance(raw, bool):
        return raw
    if f.kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if f.kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    raise ValueError(f"expected {f.kind.__name__}")


def overlay(base: S, values: Mapping[str, object]) -> S:
    """``base`` with ``values`` in place of its own: names with underscores or dashes
    (``max_peers``, ``max-peers``), values typed as a parsed document gives them. Only
    live settings may appear. ``SettingsError`` lists every unknown name, setting that
    needs a restart, mistyped or out-of-bounds value; ``base`` is never changed."""
    fields = {f.name: f for f in _fields(type(base))}
    problems: list[str] = []
    changes: dict[str, object] = {}
    for key, raw in values.items():
        name = str(key).replace("-", "_")
        f = fields.get(name)
        if f is None:
            problems.append(f"{key}: no such setting")
            continue
        if not f.spec.live:
            problems.append(f"{key}: needs a restart; it cannot change while running")
            continue
        try:
            value = _typed(f, raw)
        except ValueError:
            problems.append(f"{key}={raw!r} is not a valid {f.kind.__name__}")
            continue
        bad = f.spec.problem(value)
        if bad is not None:
            problems.append(f"{key} {bad} (got {value!r})")
            continue
        changes[name] = value
    if problems:
        raise SettingsError(problems)
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]
