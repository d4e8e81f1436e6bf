"""Conversion between a Gradio 6 Chatbot history and the model's input (``list[core.Message]``).

Every tab that shows a conversation goes through this module, so there is one answer to "what does
the model see?".

**The Gradio side.** A Chatbot value is a list of messages, each a dict ``{"role", "content",
"metadata"?, "options"?}`` (or a ``gr.ChatMessage`` / Gradio's pydantic ``Message``). ``content`` may be
a string, a single block, or a list of blocks: ``{"type": "text", "text": ...}``, a file
(``{"type": "file", "file": {...}}``, ``{"path": ...}``, ``{"file": {...}}``) or a component. What the
Chatbot hands back to an event (``preprocess``) is always the list-of-blocks form.

**Notes.** A message whose ``metadata`` has a ``title`` is shown by Gradio as a collapsible box, not as
a turn. This app uses such messages for things the *user* should see but the *model* must not: an
error ("⚠️ Not answered"), "⏳ the model is loading", "stopped". :func:`note` builds them,
:func:`is_note` recognises them, and :func:`to_messages` leaves them out. Because the marker is in
Gradio's own metadata schema it survives a round trip through the browser.

**What the model sees** (:func:`to_messages`): text only, in order; notes dropped; file and component
blocks dropped (every backend here is text-only); messages with no text left dropped; unknown roles
dropped. Text is passed on exactly as stored (no stripping). A partial answer that was cut by an
error or by Stop stays in the conversation: it is what the user saw.

**Why tabs also keep the history in ``gr.State``.** Gradio's Chatbot runs ``inspect.cleandoc`` on
string content when it displays it (leading indentation and blank edge lines change), so a history
read back from the Chatbot is not always what the model said. Tabs keep the exact history (plain
dicts with string content, built by :func:`user` / :func:`assistant` / :func:`note`) in a per-session
``gr.State`` and send it to the Chatbot for display.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import is_dataclass
from typing import Any

from .core import ROLES, Message

#: Titles of the notes this app adds to a chat (the model never sees them).
ERROR_TITLE = "⚠️ Not answered"
#: The note after a partial answer that a failure cut short (the partial text stays above it).
CUT_TITLE = "✂️ Answer cut off"
STOPPED_TITLE = "⏹️ Stopped"
#: The note after an answer for which the oldest turns were left out (the model's context was full).
TRUNCATED_TITLE = "ℹ️ Older messages left out"
WAIT_TITLE = "⏳ Please wait"

HistoryItem = Mapping[str, Any]


# ------------------------------------------------------------------------------------------ reading
def _as_mapping(item: Any) -> Mapping[str, Any] | None:
    """A message as a mapping, whatever Gradio (or a caller) handed us; None if it is not one."""
    if isinstance(item, Mapping):
        return item
    if hasattr(item, "model_dump"):  # Gradio's pydantic Message / TextMessage / FileMessage
        try:
            dumped = item.model_dump()
        except Exception:  # noqa: BLE001  # pragma: no cover - defensive: a foreign object with that method name
            return None
        return dumped if isinstance(dumped, Mapping) else None
    if is_dataclass(item) and not isinstance(item, type):  # gr.ChatMessage
        return {k: getattr(item, k) for k in ("role", "content", "metadata", "options") if hasattr(item, k)}
    return None


def content_text(content: Any) -> str:
    """The text of a message's content, whatever its shape (files and components contribute nothing).

    Strings come back unchanged; a list of blocks gives its text blocks joined by newlines.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [content_text(part) for part in content]
        return "\n".join(p for p in parts if p)
    block = _as_mapping(content)
    if block is not None:
        kind = block.get("type")
        if kind in (None, "text") and isinstance(block.get("text"), str):
            return block["text"]
        return ""  # a file ({"type": "file"}, {"path"}, {"file"}), a component, or anything else
    if isinstance(content, (int, float)) and not isinstance(content, bool):
        return str(content)
    return ""  # a Gradio component object, bytes, ...: nothing a text model can read


def role_of(item: Any) -> str | None:
    m = _as_mapping(item)
    role = m.get("role") if m is not None else None
    return role if isinstance(role, str) else None


def is_note(item: Any) -> bool:
    """True for a UI-only message (Gradio metadata with a title): shown to the user, never to the model."""
    m = _as_mapping(item)
    if m is None:
        return False
    meta = m.get("metadata")
    meta = _as_mapping(meta) if meta is not None else None
    return bool(meta and meta.get("title"))


def is_pending(item: Any) -> bool:
    """True for a note still marked as in progress (a spinner in the Chatbot)."""
    m = _as_mapping(item)
    meta = _as_mapping(m.get("metadata")) if m is not None and m.get("metadata") is not None else None
    return bool(meta and meta.get("title") and meta.get("status") == "pending")


def to_messages(history: Iterable[Any] | None, *, system: str | None = None) -> list[Message]:
    """The model's input for a Chatbot history: see the module docstring for the rules.

    ``system``, when it has text, becomes the first message (a system prompt set outside the chat).
    """
    out: list[Message] = []
    if system and system.strip():
        out.append(Message("system", system))
    for item in history or ():
        m = _as_mapping(item)
        if m is None or is_note(m):
            continue
        role = m.get("role")
        if role not in ROLES:
            continue
        text = content_text(m.get("content"))
        if not text.strip():
            continue
        out.append(Message(role, text))
    return out


# ------------------------------------------------------------------------------------------ writing
def user(text: str) -> dict[str, Any]:
    """A user turn for the Chatbot/State history."""
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    """An assistant turn for the Chatbot/State history."""
    return {"role": "assistant", "content": text}


def note(text: str, *, title: str = ERROR_TITLE, pending: bool = False, log: str | None = None) -> dict[str, Any]:
    """A UI-only note (never sent to the model), shown as an open box titled ``title``.

    ``pending`` shows a spinner (for "the model is loading"); ``log`` is a subdued detail beside the title.
    """
    meta: dict[str, Any] = {"title": title}
    if pending:
        meta["status"] = "pending"
    if log:
        meta["log"] = log
    return {"role": "assistant", "content": text, "metadata": meta}


#: The tag under an answer that the length limit cut off (the model had more to say).
LENGTH_TITLE = "✂️ Cut off at the length limit"

_ENDINGS = {
    "stopped": (STOPPED_TITLE, "You pressed Stop: the answer above is unfinished."),
    "length": (
        LENGTH_TITLE,
        "The answer reached the most tokens it was allowed (the max-tokens setting) and was cut off here. "
        "Allow more tokens for a longer answer.",
    ),
}


def ending_note(reason: str) -> dict[str, Any]:
    """The tag shown under an answer that did not end by itself: ``reason`` is ``"stopped"`` (the user
    pressed Stop) or ``"length"`` (the answer hit the max-new-tokens limit). A note: never sent to the model.

    Raises ``ValueError`` for any other reason, so a typo cannot silently show no tag.
    """
    if reason not in _ENDINGS:
        raise ValueError(f"unknown ending {reason!r}: expected one of {sorted(_ENDINGS)}")
    title, text = _ENDINGS[reason]
    return note(text, title=title)


def is_blank(text: Any) -> bool:
    """True when ``text`` shows nothing: empty, whitespace, or only invisible format characters
    (zero-width spaces, direction marks, BOM), which would send the model an "empty" message."""
    if not isinstance(text, str):
        return not text
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)


def failure(hist: list[dict[str, Any]], message: str, kind: str, partial: str = "") -> list[dict[str, Any]]:
    """``hist`` after a failed turn: the partial answer (if any text came) kept, then a note that says
    what happened: "✂️ Answer cut off" under a partial answer, "⚠️ Not answered" when nothing came."""
    if partial.strip():
        return hist + [assistant(partial), note(message, title=CUT_TITLE, log=kind)]
    return hist + [note(message, title=ERROR_TITLE, log=kind)]


def with_partial(hist: list[dict[str, Any]], partial: str) -> list[dict[str, Any]]:
    """``hist`` plus the partial answer of a turn that failed, when any text came."""
    return hist + ([assistant(partial)] if partial.strip() else [])


def app_failure(hist: list[dict[str, Any]], error: BaseException, partial: str = "") -> list[dict[str, Any]]:
    """``hist`` after a bug inside the app (not a backend failure): the partial answer kept, then a
    "⚠️ Not answered" note that names the error's type (the details are in the server log)."""
    return with_partial(hist, partial) + [
        note(
            f"Something went wrong inside the app ({type(error).__name__}). Try again; if it keeps happening, "
            "check the server log.",
            title=ERROR_TITLE,
            log="internal",
        )
    ]


def answered(hist: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """``hist`` after a turn that ended normally: the answer, or a note when the model returned no text."""
    if text:
        return hist + [assistant(text)]
    return hist + [note("The model returned an empty answer. Try again, or rephrase.", title="ℹ️ Empty answer")]


def ended(hist: list[dict[str, Any]], text: str, finish_reason: str | None) -> list[dict[str, Any]]:
    """``hist`` after a turn that ended with ``finish_reason``: the answer, tagged by :func:`ending_note` when
    Stop cut it (``"cancelled"``: the partial text, if any, then "⏹️ Stopped") or the length limit did
    (``"length"``); otherwise as :func:`answered`."""
    if finish_reason == "cancelled":
        return with_partial(hist, text) + [ending_note("stopped")]
    if finish_reason == "length":
        return answered(hist, text) + [ending_note("length")]
    return answered(hist, text)


def from_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """A Chatbot history showing ``messages`` (system messages included, as Gradio can show them)."""
    return [{"role": m.role, "content": m.content} for m in messages]


def plain(history: Iterable[Any] | None) -> list[dict[str, Any]]:
    """A copy of a history as plain dicts (role, text content, metadata when it is a note).

    Used to store a history read from the Chatbot (blocks, pydantic objects) in a ``gr.State``.
    """
    out: list[dict[str, Any]] = []
    for item in history or ():
        m = _as_mapping(item)
        if m is None or m.get("role") not in ROLES:
            continue
        entry: dict[str, Any] = {"role": m["role"], "content": content_text(m.get("content"))}
        if is_note(m):
            entry["metadata"] = dict(_as_mapping(m["metadata"]) or {})
        out.append(entry)
    return out


# -------------------------------------------------------------------------------------- turn edits
def last_user_index(history: Sequence[Any]) -> int | None:
    """Index of the last user message that is a real turn (not a note), or None."""
    for i in range(len(history) - 1, -1, -1):
        if role_of(history[i]) == "user" and not is_note(history[i]):
            return i
    return None


def for_retry(history: Sequence[Any]) -> list[Any]:
    """The history up to and including the last user message: its answer and notes removed.

    Empty when there is no user message to answer again.
    """
    i = last_user_index(history)
    return [] if i is None else list(history[: i + 1])


def undo(history: Sequence[Any]) -> tuple[list[Any], str]:
    """Remove the last user message and everything after it; returns the rest and that message's text."""
    i = last_user_index(history)
    if i is None:
        return [], ""
    return list(history[:i]), content_text(_as_mapping(history[i]).get("content"))  # type: ignore[union-attr]


def without_pending(history: Sequence[Any]) -> list[Any]:
    """The history without in-progress notes (left behind when a turn was stopped while waiting)."""
    return [h for h in history if not is_pending(h)]
