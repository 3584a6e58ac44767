"""``bench/RESULTS.md``: each benchmark owns one ``## `` section and rewrites only that."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, section: str, before: str | None = None) -> Path:
    """Replace the section headed ``title`` with ``section`` (which starts with that
    heading); a new one goes before the section headed ``before`` if there is one, else
    at the end."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if title in text:
        head, _, rest = text.partition(title)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + section + ("\n" + tail if tail else "")
    elif before is not None and before in text:
        head, _, rest = text.partition(before)
        text = head + section + "\n" + before + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    return RESULTS
