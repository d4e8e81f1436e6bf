"""A conversation as a file: export it as Markdown or JSON (settings, seed, model, usage, timings), import
the JSON back, and write the Python that replays it at the level it was held (see :mod:`.snippets`).

The JSON is the exchange format (``format: "llm-levels-transcript"``, ``version: 1``); Markdown is for
reading. An import is untrusted input: it is size-capped and checked, and a bad file raises one
:class:`BackendError` that says what is wrong. No API key is ever written (none is held here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .core import BackendError, GenParams, Message

FORMAT = "llm-levels-transcript"
VERSION = 1
#: The largest transcript file an import reads.
MAX_IMPORT_BYTES = 2_000_000
#: The levels a conversation can be held at (the tab it came from).
LEVELS = ("chat", "api", "local", "compare")


@dataclass(frozen=True)
class Transcript:
    """One conversation and how it was made: level, backend, model, settings, and each answer's numbers.

    ``turns`` holds one metrics dict per answer (``TurnMetrics.to_dict``), in order; ``base_url`` is the
    endpoint of a level-2 conversation (never a key).
    """

    level: str
    backend: str
    model: str
    messages: tuple[Message, ...]
    params: GenParams = field(default_factory=GenParams)
    system: str | None = None
    base_url: str | None = None
    engine: str | None = None
    turns: tuple[dict[str, Any], ...] = ()
    exported_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": self.exported_at or _now(),
            "level": self.level,
            "backend": self.backend,
            "model": self.model,
            "engine": self.engine,
            "base_url": self.base_url,
            "system": self.system,
            "settings": self.params.to_dict(),
            "messages": [m.to_dict() for m in self.messages],
            "turns": list(self.turns),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def to_markdown(self) -> str:
        """The conversation for reading: a header with the settings, then each message, answers with numbers."""
        p = self.params
        seed = "none (random)" if p.seed is None else str(p.seed)
        out = [
            f"# Conversation — {self.level} level",
            "",
            f"- Backend: {self.backend}" + (f" ({self.engine})" if self.engine else ""),
            f"- Model: {self.model}",
        ]
        if self.base_url:
            out.append(f"- Endpoint: {self.base_url}")
        out += [
            f"- Settings: temperature {p.temperature:g}, top_p {p.top_p:g}, top_k {p.top_k}, "
            f"max tokens {p.max_new_tokens}, seed {seed}",
            f"- Exported: {self.exported_at or _now()}",
            "",
        ]
        if self.system:
            out += ["**System:**", "", _quote(self.system), ""]
        answers = iter(self.turns)
        for m in self.messages:
            out += [f"**{m.role.capitalize()}:**", "", _quote(m.content), ""]
            if m.role == "assistant":
                numbers = next(answers, None)
                if numbers:
                    out += [f"<sub>{_numbers_line(numbers)}</sub>", ""]
        return "\n".join(out).rstrip() + "\n"

    def replay_messages(self) -> list[Message]:
        """What a replay sends: the system prompt and every message before the last answer."""
        msgs = list(self.messages)
        if msgs and msgs[-1].role == "assistant":
            msgs.pop()
        head = [Message("system", self.system)] if self.system else []
        return head + msgs

    @property
    def last_answer(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "assistant"), "")


def transcript_from_json(text: str | bytes) -> Transcript:
    """Read a transcript exported by this app; :class:`BackendError` says what is wrong with a bad file."""
    if len(text) > MAX_IMPORT_BYTES:
        raise _bad(f"the file is too large ({len(text):,} bytes; the limit is {MAX_IMPORT_BYTES:,})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad("it is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(f"it is not a transcript exported by llm-levels (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise _bad(f"version {data.get('version')!r} is not one this app reads ({VERSION})")
    level = data.get("level")
    if level not in LEVELS:
        raise _bad(f"level must be one of {', '.join(LEVELS)}")
    messages = _messages(data.get("messages"))
    settings = data.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise _bad("settings must be an object")
    try:
        params = GenParams.from_dict(settings)
    except BackendError as e:
        raise _bad(str(e)) from None
    turns = data.get("turns") or []
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise _bad("turns must be a list of objects")
    return Transcript(
        level=level,
        backend=_str(data, "backend"),
        model=_str(data, "model"),
        messages=tuple(messages),
        params=params,
        system=_str(data, "system") or None,
        base_url=_str(data, "base_url") or None,
        engine=_str(data, "engine") or None,
        turns=tuple(turns),
        exported_at=_str(data, "exported_at"),
    )


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list")
    out = []
    for i, m in enumerate(raw, 1):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("content"), str)
            or m.get("role") not in ("user", "assistant")
        ):
            raise _bad(f"message {i} must have a role (user or assistant) and text content")
        out.append(Message(m["role"], m["content"]))
    return out


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{key} must be text")
    return value


def _bad(why: str) -> BackendError:
    return BackendError(f"Could not import the conversation: {why}.", kind="bad_request", status=400)


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines() or [""])


def _numbers_line(m: Mapping[str, Any]) -> str:
    usage = m.get("usage") or {}
    parts = [f"{m.get('model') or ''}".strip()]
    if m.get("ttft_s") is not None:
        parts.append(f"{m['ttft_s']} s to first token")
    if m.get("tokens_per_s") is not None:
        parts.append(f"{m['tokens_per_s']} tokens/s")
    if usage.get("input_tokens") is not None:
        parts.append(f"{usage['input_tokens']} → {usage.get('output_tokens')} tokens")
    if m.get("total_s") is not None:
        parts.append(f"{m['total_s']} s")
    return " · ".join(p for p in parts if p)


def history_messages(history: Sequence[Mapping[str, Any]]) -> tuple[Message, ...]:
    """The user/assistant messages of a UI history (notes and pending rows left out), for a transcript."""
    from . import history as H

    return tuple(m for m in H.to_messages(history) if m.role in ("user", "assistant"))
