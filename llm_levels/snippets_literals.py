"""Python literals for snippets: every user value written with :func:`repr`, and the request fields never written.

Split out of :mod:`llm_levels.snippets`, which still exports every public name here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .core import Message

#: Request fields that must never appear in a snippet (defence in depth: requests carry no key).
_SECRET_FIELDS = frozenset({"api_key", "authorization", "headers", "extra_headers"})


def lit(value: Any) -> str:
    """A Python literal for ``value``: :func:`repr`, with double quotes for strings where that is just as safe."""
    if isinstance(value, str):
        r = repr(value)
        # repr() picks single quotes unless the text holds a ' and no "; with no " in the text the
        # body needs no change to sit between double quotes.
        if r.startswith("'") and '"' not in value:
            return '"' + r[1:-1] + '"'
        return r
    if isinstance(value, dict):
        return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(lit(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def _messages_literal(messages: Sequence[Message | Mapping[str, Any]], indent: str = "") -> str:
    """``messages = [...]`` with one dict per line, every string written with repr()."""
    lines = [f"{indent}messages = ["]
    for m in messages:
        role, content = (m.role, m.content) if isinstance(m, Message) else (m.get("role"), m.get("content"))
        lines.append(f"{indent}    {{\"role\": {lit(role)}, \"content\": {lit(content)}}},")
    lines.append(f"{indent}]")
    return "\n".join(lines)
