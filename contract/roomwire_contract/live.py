"""Live settings from a configuration document in the config center (docs/nacos.md,
"Config center"): what a running pod or operator does with each version of its
document. Pure: the adapter fetches the text and hands it in with a YAML parser.

A document is a YAML mapping of setting names to values, applied on top of the
settings the process started with (defaults, environment, flags): a name removed from
the document goes back to its start-up value, an empty or deleted document means the
start-up settings. Only settings declared ``live`` may appear. A document with any
problem is refused whole and the settings in force stay as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from .settings import SettingsError, overlay

S = TypeVar("S")


@dataclasses.dataclass(frozen=True, slots=True)
class Applied(Generic[S]):
    """The document is in force: ``settings`` now, ``changed`` the names that moved."""

    settings: S
    changed: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """The document was refused for ``problems``; the settings in force stay."""

    problems: tuple[str, ...]


def _no_check(_: object) -> list[str]:
    return []


class LiveSettings(Generic[S]):
    """The settings in force, moved by each document offered."""

    def __init__(self, base: S, check: Callable[[S], list[str]] = _no_check) -> None:
        self.base = base
        self.current = base
        self.check = check  # checks across settings (one setting's bounds are declared)

    def offer(self, text: str | None, parse: Callable[[str], object]) -> Applied[S] | Refused:
        """Take document ``text`` (None: deleted) if it is valid as a whole."""
        values: Mapping[str, object] = {}
        if text is not None and text.strip():
            try:
                doc = parse(text)
            except Exception as e:  # the parser's own errors, whatever they are
                return Refused((f"not valid YAML: {str(e).splitlines()[0] if str(e) else e!r}",))
            if isinstance(doc, Mapping):
                values = doc
            elif doc is not None:
                return Refused(("the document must be a mapping of setting names to values",))
        try:
            new = overlay(self.base, values)
        except SettingsError as e:
            return Refused(tuple(e.problems))
        problems = self.check(new)
        if problems:
            return Refused(tuple(problems))
        changed = tuple(
            f.name
            for f in dataclasses.fields(new)  # type: ignore[arg-type]
            if getattr(new, f.name) != getattr(self.current, f.name)
        )
        self.current = new
        return Applied(new, changed)
