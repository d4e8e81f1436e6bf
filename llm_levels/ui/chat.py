"""Level 1, the Chat tab: a ChatGPT-like conversation. The backend behind it is a setting, not the point.

The exact conversation lives in a per-session ``gr.State`` (plain dicts, see :mod:`llm_levels.history`),
is sent to the Chatbot for display, and is kept in the browser (``gr.BrowserState``), so a page reload
shows it again. Every turn gives the model the whole conversation (that is its "memory"), minus UI
notes. Answers are greedy (temperature 0), so an example asked twice gets the same answer. A failing turn
keeps everything already on screen, keeps any partial answer, and adds a note ("⚠️ Not answered", or
"✂️ Answer cut off" under a partial answer); the next message works as usual. An answer cut by Stop or by
the length limit carries a tag under it; when the local model had to leave the oldest turns out (its
context window was full), a "ℹ️ Older messages left out" note says so.

Until the first word, a note says what is happening: preparing the prompt, the model loading, the place
in the local model's line, the model reading a long message. Stop, Clear and Undo reach the running turn
through :class:`~llm_levels.ui.running.Turns` (Stop ends it with its partial answer and a tag; Clear and
Undo drop it); a second message while an answer is coming is refused with a toast, its text kept. In the
page, a refused input is a toast and nothing on screen changes.

Events (``api_name``): ``chat_send``, ``chat_retry``, ``chat_undo``, ``chat_clear``, ``chat_stop``,
``chat_example``. ``chat_send`` and ``chat_retry`` are the API's: a refusal is a ``gr.Error`` there; the
page's Send and Retry run the same handlers through :func:`~llm_levels.ui.running.for_page`. They run in
Chat's own Gradio lane whatever the backend, so a hanging hosted request never holds the local model's
turn; a local request waits in the app's line for the model ("⏳ Waiting for the local model — N ahead of you").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError
from ..runtime import AppRuntime
from ..text_clean import clean_text
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from . import token_panel as tp
from .chat_layout import ChatLayout, layout
from .exports import chat_export
from .running import BUSY, Turn, Turns, for_page, preparing_note, reading_note
from .shared import SessionState, lane, remember_conversation, uses_local_model, wait_text, wait_title

log = logging.getLogger(__name__)


Updates = dict[Any, Any]

#: Chat's sampling: greedy (temperature 0), so the same question always gets the same answer, with the
#: model's own default system prompt (none is sent). A sampled answer from a 135 M-parameter model is
#: often wrong; greedy decoding is its best guess.
CHAT_TEMPERATURE = 0.0


def chat_params(max_new: float, top_logprobs: int | None = None) -> dict[str, Any]:
    """The generation settings of a Chat turn (``top_logprobs``: the token probabilities, when asked for)."""
    probs = {"top_logprobs": top_logprobs} if top_logprobs is not None else {}
    return {"temperature": CHAT_TEMPERATURE, "max_new_tokens": int(max_new), **probs}


def sizes(hist: list[dict[str, Any]]) -> tuple[int, int]:
    """(characters of the last message, characters of the whole conversation the model reads)."""
    messages = H.to_messages(hist)
    return (len(messages[-1].content) if messages else 0), sum(len(m.content) for m in messages)


@dataclass
class ChatTab:
    """The Chat tab's components and its event handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    chatbot: gr.Chatbot
    state: gr.State
    textbox: gr.Textbox
    metrics_md: gr.Markdown
    turns: Turns = field(default_factory=Turns)
    probs: tp.TokenPanel | None = None  # the token-probabilities panel (an option, token_panel.py)

    @property
    def outputs(self) -> list[Any]:
        return [self.chatbot, self.state, self.textbox, self.metrics_md, *tp.outputs_of(self.probs)]

    def _show(self, shown: list, kept: list | None = None, more: Updates | None = None) -> Updates:
        """The chat showing ``shown``, the session's exact history ``kept`` (default: the same), and ``more``."""
        return {self.chatbot: shown, self.state: shown if kept is None else kept, **(more or {})}

    def answer(
        self,
        hist: list[dict[str, Any]],
        max_new: float,
        backend_id: str,
        api_key: str | None,
        request: gr.Request | None,
        *,
        clear_input: bool,
        top_logprobs: int | None = None,
    ) -> Iterator[Updates]:
        """Stream the answer to the conversation ``hist`` (ending with the user's message)."""
        session = request.session_hash if request else None
        turn = self.turns.begin(session)
        if turn is None:
            raise gr.Error(BUSY)
        try:  # checked once, before anything on screen changes: a bad request loses nothing
            events = run_turn(
                self.runtime,
                TurnRequest(
                    backend_id,
                    H.to_messages(hist),
                    chat_params(max_new, top_logprobs),
                    session_id=session,
                    api_key=api_key,
                ),
                cancel=turn.cancel,
            )
        except BaseException as e:
            self.turns.end(session, turn)
            if isinstance(e, BackendError):
                raise gr.Error(str(e)) from e
            raise
        updates = self._stream(hist, events, backend_id, turn, clear_input)
        yield from self.turns.guarded(session, turn, updates, self.chatbot, self.state)

    def _stream(
        self, hist: list[dict[str, Any]], events: Iterator[Any], backend_id: str, turn: Turn, clear_input: bool
    ) -> Iterator[Updates]:
        """The updates of a turn's events, from the first "please wait" note to the tagged answer."""
        message_chars, total_chars = sizes(hist)
        first = {self.textbox: "" if clear_input else gr.skip(), self.metrics_md: ""}
        yield self._show(hist + [preparing_note(message_chars)], hist, first)
        name, text, ended = backend_id, "", False
        with closing(events), self.runtime.pacer.streaming() as pace:
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    yield {self.chatbot: hist + [H.note(wait_text(event), title=wait_title(event), pending=True)]}
                elif isinstance(event, Started):
                    name = event.name
                    reading = reading_note(name, message_chars, total_chars, local=uses_local_model(backend_id))
                    yield {self.chatbot: hist + [reading]}
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        yield self._show(hist + [H.assistant(text)])
                elif isinstance(event, Done):
                    ended = True
                    summary = f"**{name}** · {event.metrics.summary()}"
                    more = {self.metrics_md: summary, **tp.finished(self.probs, hist, (), event)}
                    yield self._show(self._finished(hist, event), None, more)
                elif isinstance(event, Failed):
                    ended = True
                    failed = H.failure(hist, str(event.error), event.error.kind, event.partial)
                    yield self._show(failed, None, {self.metrics_md: f"**{name}** · not answered ({event.error.kind})"})
        if not ended and turn.stopped:  # stopped before the backend started: nothing was answered
            stopped = H.ended(hist, text, "cancelled")
            yield self._show(stopped, None, {self.metrics_md: f"**{name}** · stopped before it answered"})

    @staticmethod
    def _finished(hist: list[dict[str, Any]], done: Done) -> list[dict[str, Any]]:
        out = H.ended(hist, done.text, done.finish_reason)
        if done.truncated_turns:  # never cut silently: say that the model did not see the whole conversation
            out = out + [
                H.note(
                    f"The {done.truncated_turns} oldest message(s) did not fit in the model's context window and were "
                    "left out of this answer. Clear the chat to start fresh.",
                    title=H.TRUNCATED_TITLE,
                )
            ]
        return out

    def send(
        self,
        text: str,
        backend_id: str,
        max_new: float,
        hist: list,
        api_key: str | None,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Send a message and stream the answer. Returns (chat, textbox, metrics line)."""
        text = clean_text(text or "")
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        turn = H.without_pending(hist or []) + [H.user(text)]
        k = tp.top_logprobs(show_probs, top_logprobs)
        yield from self.answer(turn, max_new, backend_id, api_key, request, clear_input=True, top_logprobs=k)

    def retry(
        self,
        backend_id: str,
        max_new: float,
        hist: list,
        api_key: str | None,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Answer the last message again (its previous answer and notes are removed)."""
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        k = tp.top_logprobs(show_probs, top_logprobs)
        yield from self.answer(base, max_new, backend_id, api_key, request, clear_input=False, top_logprobs=k)

    def stop(self, request: gr.Request | None = None) -> None:
        """Stop this session's running answer: it ends with the text so far and a "⏹️ Stopped" tag."""
        self.turns.stop(request.session_hash if request else None)

    def undo(self, hist: list, request: gr.Request | None = None) -> Updates:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        self.turns.drop(request.session_hash if request else None, rest)
        return self._show(rest, None, {self.textbox: text, self.metrics_md: ""})

    def clear(self, request: gr.Request | None = None) -> Updates:
        """Start a new conversation (a running answer is dropped)."""
        self.turns.drop(request.session_hash if request else None, [])
        return self._show([], None, {self.textbox: "", self.metrics_md: ""})


def pick_example(evt: gr.SelectData) -> str:
    """The text of the example the user clicked."""
    value = evt.value if isinstance(evt.value, dict) else {}
    return str(value.get("text", "") or "")


def build(runtime: AppRuntime, session: SessionState) -> None:
    """Build the Chat tab inside the current ``gr.Tab``."""
    ui = layout(runtime)
    tab = ChatTab(runtime, ui.chatbot, ui.state, ui.textbox, ui.metrics_md)
    tab.probs = tp.build_panel("chat", open=False, via_state=True)  # chat_send's results stay (chat, textbox, metrics)
    wire(tab, ui, session)
    tp.wire_chat_panel(tab.probs, ui, "chat_token_probabilities")
    remember_conversation(session, "chat", ui.chatbot, ui.state)
    chat_export(runtime, ui.state, ui.chatbot, ui.backend, ui.max_tokens)


def wire(tab: ChatTab, ui: ChatLayout, session: SessionState) -> None:
    """Connect the Chat tab's events (send, retry, example, stop, undo, clear) to ``tab``'s handlers."""
    state, chatbot, textbox = ui.state, ui.chatbot, ui.textbox
    gen_inputs = [ui.backend, ui.max_tokens, state, session.api_key, *tp.inputs_of(tab.probs)]
    outputs = tab.outputs
    # Chat's own lane: a hosted chat never holds the local model's turn; local requests wait for the
    # model in its engine's line and see their place in the chat.
    chat_lane = lane("chat")
    send_inputs = [textbox, *gen_inputs]
    # The API's endpoints (no trigger on the page: a refusal is a gr.Error for an API client).
    gr.on([], tab.send, inputs=send_inputs, outputs=outputs, api_name="chat_send", **chat_lane)
    gr.on([], tab.retry, inputs=gen_inputs, outputs=outputs, api_name="chat_retry", **chat_lane)
    # The page's: "multiple", so a message sent while an answer is coming reaches the handler, which
    # refuses it with a toast instead of the page dropping it silently.
    page = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "multiple", **chat_lane}
    send_page, retry_page = for_page(tab.send, chatbot, state), for_page(tab.retry, chatbot, state)
    gr.on([textbox.submit, ui.send_btn.click], send_page, inputs=send_inputs, outputs=outputs, **page)
    gr.on([ui.retry_btn.click, chatbot.retry], retry_page, inputs=gen_inputs, outputs=outputs, **page)
    example_ev = chatbot.example_select(
        pick_example, None, textbox, api_name="chat_example", queue=False, show_progress="hidden"
    )
    example_ev.then(send_page, inputs=send_inputs, outputs=outputs, **page)
    ui.stop_btn.click(tab.stop, None, None, api_name="chat_stop", queue=False, show_progress="hidden")
    # Queued (never waiting: no limit), so their result reaches the page after what a running turn had sent.
    quick = {"concurrency_limit": None, "show_progress": "hidden"}
    gr.on([ui.undo_btn.click, chatbot.undo], tab.undo, inputs=[state], outputs=outputs, api_name="chat_undo", **quick)
    gr.on([ui.clear_btn.click, chatbot.clear], tab.clear, inputs=None, outputs=outputs, api_name="chat_clear", **quick)
