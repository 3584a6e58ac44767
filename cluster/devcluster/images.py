"""The image -> command mapping (``cluster/images.yaml``): which local process runs an image."""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "images.yaml"


@dataclass(frozen=True)
class ImageRule:
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]


def image_name(image: str) -> str:
    """``registry:5000/roomwire/signaling:v1@sha256:..`` -> ``roomwire/signaling``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rsplit(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        name = "/".join(parts[1:])
    return name


class ImageMap:
    """Rules loaded from a YAML file; reloaded when the file changes."""

    def __init__(self, path: Path = DEFAULT_FILE, python: str = sys.executable) -> None:
        self.path = path
        self.python = python
        self._mtime = -1.0
        self._rules: list[ImageRule] = []

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._rules = []
            return
        if mtime == self._mtime:
            return
        data = yaml.safe_load(self.path.read_text()) or {}
        rules = []
        for entry in data.get("images") or []:
            rules.append(
                ImageRule(
                    image=str(entry["image"]),
                    command=tuple(self._subst(str(a)) for a in entry.get("command") or []),
                    args=tuple(self._subst(str(a)) for a in entry.get("args") or []),
                )
            )
        self._rules = rules
        self._mtime = mtime

    def _subst(self, arg: str) -> str:
        return arg.replace("{python}", self.python)

    def lookup(self, image: str) -> ImageRule | None:
        self._load()
        name = image_name(image)
        for rule in self._rules:
            if (
                fnmatch.fnmatchcase(name, rule.image)
                or fnmatch.fnmatchcase(name, "*/" + rule.image)
                or fnmatch.fnmatchcase(image, rule.image)
            ):
                return rule
        return None

    def argv(
        self,
        image: str,
        command: list[str] | None,
        args: list[str] | None,
        expand: Callable[[str], str] = str,
    ) -> list[str]:
        """The process to run, with Kubernetes' command/args override rules.

        ``expand`` is applied to the mapping's own words (e.g. ``$(POD_IP)``).
        """
        rule = self.lookup(image)
        if rule is None:
            raise KeyError(image)
        if command:
            return [self._subst(c) for c in command] + [self._subst(a) for a in args or []]
        own = [expand(c) for c in rule.command]
        return own + (list(args) if args is not None else [expand(a) for a in rule.args])
