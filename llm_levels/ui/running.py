"""The turn each page session of a tab is running, so that Stop, Clear and a second message can reach it.

Gradio's own ``cancels=`` is not used for Stop and Clear: it closes the handler's generator from outside,
and when that raced with the end of the stream the page covered the conversation with "Error" badges;
it also waits for the generator's current step, which can be a long prompt being read. Here Stop sets the
turn's cancel event (the one :func:`~llm_levels.turns.run_turn` watches): the backend stops at its next
look, and the handler itself ends the turn on screen with the partial answer and a "⏹️ Stopped" tag.
Clear and Undo *drop* the turn: it is cancelled and shows nothing of its own any more, whatever it was
doing; its last update repeats what Clear or Undo left, so a piece still on its way cannot bring it back.
(A Stop pressed while the page's event still waits in Gradio's own queue, before the handler runs, finds
no turn: the lanes are wide enough that this does not happen in practice.)

- :class:`Turns`: one per tab; ``begin`` (None while the session's previous turn still runs), ``stop``,
  ``drop``, ``end``, and ``guarded`` (a turn's updates until it is dropped).
- :func:`for_page` / :func:`on_page`: a handler's updates for the page: a refusal becomes a warning toast
  (nothing on screen changes), a bug becomes a note in the chat. API clients call the plain handler and
  get the ``gr.Error``. :func:`refusals_as_toasts` does the same for a handler that is not a generator.
- :func:`reading_note`: what a turn shows between its start and its first word (a long prompt is read first).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import history as H

log = logging.getLogger(__name__)

Updates = dict[Any, Any]

#: What a second message is told while the session's previous answer is still coming.
BUSY = "Still answering your previous message: wait for it, or press Stop, then send again (your text is kept)."


@dataclass
class Turn:
    """One running turn: ``cancel`` is handed to ``run_turn``; once ``dropped`` (Clear, Undo) it shows nothing
    of its own any more, only ``replacement``, the conversation that Clear or Undo left."""

    cancel: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False
    replacement: list[Any] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """Whether Stop (or Clear/Undo) was pressed for this turn."""
        return self.cancel.is_set()


class Turns:
    """The running turn of each session of one tab (a session is Gradio's ``session_hash``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Turn] = {}

    def begin(self, session: str | None) -> Turn | None:
        """A new turn for ``session``; None while its previous turn is still running and not stopped.

        A turn with no session (a direct call) is never refused and never reachable by Stop."""
        turn = Turn()
        if not session:
            return turn
        with self._lock:
            old = self._running.get(session)
            if old is not None and not old.stopped:
                return None
            self._running[session] = turn
        return turn

    def end(self, session: str | None, turn: Turn) -> None:
        """Forget ``turn`` (it finished, failed or was closed); a newer turn of the session stays."""
        with self._lock:
            if session and self._running.get(session) is turn:
                del self._running[session]

    def stop(self, session: str | None) -> bool:
        """Stop the session's running turn; False when none runs."""
        with self._lock:
            turn = self._running.get(session or "")
        if turn is None or turn.stopped:
            return False
        turn.cancel.set()
        return True

    def drop(self, session: str | None, replacement: list[Any]) -> None:
        """Stop the session's running turn and show nothing more of it (Clear, Undo): its last update shows
        ``replacement``, so a piece of its answer still on its way to the page cannot bring it back."""
        with self._lock:
            turn = self._running.pop(session or "", None)
        if turn is not None:
            turn.replacement = replacement
            turn.dropped = True
            turn.cancel.set()

    def newer(self, session: str | None, turn: Turn) -> bool:
        """Whether another turn of ``session`` started after ``turn`` was dropped."""
        with self._lock:
            current = self._running.get(session or "")
        return current is not None and current is not turn

    def guarded(
        self, session: str | None, turn: Turn, updates: Iterator[Updates], chatbot: Any, state: Any
    ) -> Iterator[Updates]:
        """``updates`` until ``turn`` is dropped; then, unless a newer turn runs, one last update showing the
        conversation Clear or Undo left (it arrives after anything the turn had already sent)."""
        try:
            for update in updates:
                if turn.dropped:
                    break
                yield update
            if turn.dropped and not self.newer(session, turn):
                yield {chatbot: turn.replacement, state: turn.replacement}
        finally:
            close = getattr(updates, "close", None)
            if callable(close):
                close()  # the turn's own generator: its backend stops
            self.end(session, turn)


def on_page(updates: Iterator[Updates], chatbot: Any, state: Any) -> Iterator[Updates]:
    """A handler's ``updates`` for the page (never an error status on the components, which hides the
    conversation): a refusal (``gr.Error``) becomes a warning toast and changes nothing (the typed text stays
    in its box); any other exception is logged and ends the turn with a note in the chat (the conversation
    as last shown, without its "please wait" note)."""
    kept = None
    try:
        for update in updates:
            if isinstance(update, dict) and state in update:
                kept = update[state]
            yield update
    except gr.Error as e:
        gr.Warning(str(e.message))
        yield gr.skip()
    except Exception as e:
        log.exception("a page event failed")
        if kept is None:
            gr.Warning(H.app_failure([], e)[-1]["content"])
            yield gr.skip()
        else:
            failed = H.app_failure(H.without_pending(kept), e)
            yield {chatbot: failed, state: failed}


def for_page(handler: Callable[..., Iterator[Updates]], chatbot: Any, state: Any) -> Callable[..., Iterator[Updates]]:
    """``handler`` (a generator of updates that outputs ``chatbot`` and ``state``) run through :func:`on_page`;
    same signature, so Gradio passes it the same inputs and the ``gr.Request``."""

    @functools.wraps(handler)
    def page_handler(*args: Any, **kwargs: Any) -> Iterator[Updates]:
        yield from on_page(handler(*args, **kwargs), chatbot, state)

    return page_handler


def refusals_as_toasts(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` (a plain function) for the page: a refusal (``gr.Error``) becomes a warning toast and
    changes nothing, instead of "Error" badges over the event's outputs. Same signature as ``handler``."""

    @functools.wraps(handler)
    def page_handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error as e:
            gr.Warning(str(e.message))
            return gr.skip()

    return page_handler


def reading_note(backend_name: str, message_chars: int, total_chars: int, *, local: bool) -> dict[str, Any]:
    """The "please wait" note between a turn's start and its first word: what the model is doing then."""
    if local:
        text = (
            f"{backend_name} reads the whole conversation ({total_chars:,} characters) before it writes its first "
            "word; on this machine a long message takes a while. Stop cancels; Clear starts over."
        )
        return H.note(text, title=f"⏳ Reading your {message_chars:,}-character message", pending=True)
    text = f"Sent to {backend_name}; waiting for its first word. Stop cancels; Clear starts over."
    return H.note(text, title="⏳ Waiting for the answer", pending=True)


def preparing_note(message_chars: int) -> dict[str, Any]:
    """The first "please wait" note of a turn, before the backend is ready."""
    return H.note(
        f"Preparing the prompt with your {message_chars:,}-character message and getting the model ready…",
        title="⏳ Preparing your message",
        pending=True,
    )
