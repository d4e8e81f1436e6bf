"""Finding talk files by name: the talks shipped with the app, and the operator's own (``TALKS_DIR``)."""

from __future__ import annotations

import re
from pathlib import Path

from .format import Talk, TalkError, parse_talk

#: The talks shipped with the app (``default.yaml`` is the one ``?talk=default`` opens).
SHIPPED_DIR = Path(__file__).parent / "library"

#: A talk's name: letters, digits, ``-`` and ``_`` (a name is never a path).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def talk_dirs(extra: Path | None = None) -> list[Path]:
    """Where talks are looked for, first match wins: the operator's folder, then the shipped ones."""
    return [d for d in (extra, SHIPPED_DIR) if d is not None]


def talk_names(extra: Path | None = None) -> list[str]:
    """Every talk's name, the shipped default first."""
    names: set[str] = set()
    for folder in talk_dirs(extra):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml") if NAME_RE.match(p.stem))
    return sorted(names, key=lambda n: (n != "default", n))


def load_talk(name: str, extra: Path | None = None) -> Talk:
    """The talk called ``name``; :class:`TalkError` when there is none or its file has a mistake."""
    name = name if isinstance(name, str) else ""
    if not NAME_RE.match(name):
        raise TalkError("talk", None, None, f"'{name[:40]}' is not a talk name (letters, digits, - and _)")
    for folder in talk_dirs(extra):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return parse_talk(path.read_text(encoding="utf-8"), source=f"{name}.yaml")
    known = ", ".join(talk_names(extra)) or "none"
    raise TalkError(f"{name}.yaml", None, None, f"no such talk (known: {known})")
