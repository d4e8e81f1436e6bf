"""Level 1, the Chat tab: a ChatGPT-like conversation. The backend behind it is a setting, not the point.

The exact conversation lives in a per-session ``gr.State`` (plain dicts, see :mod:`llm_levels.history`)
and is sent to the Chatbot for display. Every turn gives the model the whole conversation (that is its
"memory"), minus UI notes. A failing turn keeps everything already on screen, keeps any partial answer,
and adds a note ("⚠️ Not answered", or "✂️ Answer cut off" under a partial answer); the next message
works as usual. When the local model had to leave the oldest turns out (its context window was full),
a "ℹ️ Older messages left out" note says so.

Events (``api_name``): ``chat_send``, ``chat_retry``, ``chat_undo``, ``chat_clear``, ``chat_example``.
Stop cancels a running send/retry (Gradio closes the generator; the backend then stops working).
They run in Chat's own Gradio lane whatever the backend, so a hanging hosted request never holds the
local model's turn; a local request waits in the app's line for the model and shows its place there
("⏳ Waiting for the local model — N ahead of you").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError
from ..runtime import AppRuntime
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from .chat_layout import ChatLayout, layout
from .shared import SessionState, lane, wait_text, wait_title

log = logging.getLogger(__name__)


Updates = dict[Any, Any]


@dataclass
class ChatTab:
    """The Chat tab's components and its event handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    chatbot: gr.Chatbot
    state: gr.State
    textbox: gr.Textbox
    metrics_md: gr.Markdown

    @property
    def outputs(self) -> list[Any]:
        return [self.chatbot, self.state, self.textbox, self.metrics_md]

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
    ) -> Iterator[Updates]:
        """Stream the answer to the conversation ``hist`` (ending with the user's message)."""
        try:  # checked once, before anything on screen changes: a bad request loses nothing
            events = run_turn(
                self.runtime,
                TurnRequest(
                    backend_id,
                    H.to_messages(hist),
                    {"max_new_tokens": int(max_new)},
                    session_id=request.session_hash if request else None,
                    api_key=api_key,
                ),
            )
        except BackendError as e:
            raise gr.Error(str(e)) from e
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield self._show(hist + [wait], hist, {self.textbox: "" if clear_input else gr.skip(), self.metrics_md: ""})
        name, text = backend_id, ""
        with self.runtime.pacer.streaming() as pace:
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    note = H.note(wait_text(event), title=wait_title(event), pending=True)
                    yield {self.chatbot: hist + [note]}
                elif isinstance(event, Started):
                    name = event.name
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        yield self._show(hist + [H.assistant(text)])
                elif isinstance(event, Done):
                    yield self._show(
                        self._finished(hist, event), None, {self.metrics_md: f"**{name}** · {event.metrics.summary()}"}
                    )
                elif isinstance(event, Failed):
                    failed = H.failure(hist, str(event.error), event.error.kind, event.partial)
                    yield self._show(failed, None, {self.metrics_md: f"**{name}** · not answered ({event.error.kind})"})

    @staticmethod
    def _finished(hist: list[dict[str, Any]], done: Done) -> list[dict[str, Any]]:
        out = H.answered(hist, done.text)
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
        self, text: str, backend_id: str, max_new: float, hist: list, api_key: str | None, request: gr.Request
    ) -> Iterator[Updates]:
        """Send a message and stream the answer. Returns (chat, textbox, metrics line)."""
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        turn = H.without_pending(hist or []) + [H.user(text)]
        yield from self.answer(turn, max_new, backend_id, api_key, request, clear_input=True)

    def retry(
        self, backend_id: str, max_new: float, hist: list, api_key: str | None, request: gr.Request
    ) -> Iterator[Updates]:
        """Answer the last message again (its previous answer and notes are removed)."""
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        yield from self.answer(base, max_new, backend_id, api_key, request, clear_input=False)

    def undo(self, hist: list) -> Updates:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        return self._show(rest, None, {self.textbox: text, self.metrics_md: ""})

    def clear(self) -> Updates:
        """Start a new conversation."""
        return self._show([], None, {self.textbox: "", self.metrics_md: ""})


def pick_example(evt: gr.SelectData) -> str:
    """The text of the example the user clicked."""
    value = evt.value if isinstance(evt.value, dict) else {}
    return str(value.get("text", "") or "")


def build(runtime: AppRuntime, session: SessionState) -> None:
    """Build the Chat tab inside the current ``gr.Tab``."""
    ui = layout(runtime)
    tab = ChatTab(runtime, ui.chatbot, ui.state, ui.textbox, ui.metrics_md)
    wire(tab, ui, session)


def wire(tab: ChatTab, ui: ChatLayout, session: SessionState) -> None:
    """Connect the Chat tab's events (send, retry, example, stop, undo, clear) to ``tab``'s handlers."""
    state, chatbot, textbox = ui.state, ui.chatbot, ui.textbox
    send_btn, stop_btn, retry_btn, undo_btn, clear_btn = (
        ui.send_btn,
        ui.stop_btn,
        ui.retry_btn,
        ui.undo_btn,
        ui.clear_btn,
    )
    gen_inputs = [ui.backend, ui.max_tokens, state, session.api_key]
    outputs = tab.outputs
    # Chat's own lane: a hosted chat never holds the local model's turn; local requests wait for the
    # model in its engine's line and see their place in the chat.
    chat_lane = lane("chat")
    send_ev = gr.on(
        [textbox.submit, send_btn.click],
        tab.send,
        inputs=[textbox, *gen_inputs],
        outputs=outputs,
        api_name="chat_send",
        show_progress="minimal",
        **chat_lane,
    )
    retry_ev = gr.on(
        [retry_btn.click, chatbot.retry],
        tab.retry,
        inputs=gen_inputs,
        outputs=outputs,
        api_name="chat_retry",
        show_progress="minimal",
        **chat_lane,
    )
    example_ev = chatbot.example_select(
        pick_example, None, textbox, api_name="chat_example", queue=False, show_progress="hidden"
    )
    example_send = example_ev.then(
        tab.send,
        inputs=[textbox, *gen_inputs],
        outputs=outputs,
        api_visibility="private",
        show_progress="minimal",
        **chat_lane,
    )
    running = [send_ev, retry_ev, example_send]
    stop_btn.click(None, None, None, cancels=running, api_visibility="private", queue=False)
    gr.on(
        [undo_btn.click, chatbot.undo],
        tab.undo,
        inputs=[state],
        outputs=outputs,
        api_name="chat_undo",
        cancels=running,
        concurrency_limit=None,
        show_progress="hidden",
    )
    gr.on(
        [clear_btn.click, chatbot.clear],
        tab.clear,
        inputs=None,
        outputs=outputs,
        api_name="chat_clear",
        cancels=running,
        concurrency_limit=None,
        show_progress="hidden",
    )
