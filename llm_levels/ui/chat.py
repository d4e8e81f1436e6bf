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
import threading
from typing import Any, Iterator

import gradio as gr

from .. import history as H
from ..core import BackendError, GenParams
from ..metrics import measure
from ..runtime import AppRuntime
from .shared import WAIT_POLL_S, BackendOpener, SessionState, backend_choices, checked_slider, lane

log = logging.getLogger(__name__)


EXAMPLES: list[dict[str, str]] = [
    {"text": "Explain what a large language model is in two sentences, for someone who has never used one."},
    {"text": "Write a Python function that checks whether a word is a palindrome, with one example."},
    {"text": "Give me three tips for a good presentation, as a short bulleted list."},
    {"text": "用一句话解释什么是大语言模型。", "display_text": "用一句话解释什么是大语言模型。(Chinese)"},
    {"text": "Translate 'Good morning, how are you?' into French and Spanish."},
]

ABOUT = """
**Level 1 — a chat window.** You type, the model answers, and the app keeps the conversation so the
model "remembers" earlier turns (it is sent the whole conversation every time). This is the least
effort and the least control: no settings to tune, no automation, and you see only the answer, not
the request. With a hosted backend your text goes to whoever runs the model and may cost money; with
the local model it stays on this machine but the answers are slower and simpler.
"""

Outputs = tuple[Any, Any, Any, Any]  # chatbot, state, textbox, metrics line


def build(runtime: AppRuntime, session: SessionState) -> None:
    """Build the Chat tab inside the current ``gr.Tab``."""
    settings = runtime.settings
    cap = settings.max_new_tokens_cap

    state = gr.State([])  # the exact conversation of this session (history.py dicts)
    chatbot = gr.Chatbot(
        label="Chat",
        elem_id="chat-window",
        height=520,
        buttons=["copy", "copy_all"],
        placeholder="### Ask anything\nThe model answers here. Pick an example or type below.",
        examples=EXAMPLES,
        feedback_options=None,
        autoscroll=True,
    )
    with gr.Row(equal_height=True):
        textbox = gr.Textbox(
            show_label=False, placeholder="Message the model… (Enter sends, Shift+Enter for a new line)",
            lines=1, max_lines=8, scale=8, autofocus=True, elem_id="chat-input",
        )
        send_btn = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="chat-send")
        stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=90, elem_id="chat-stop")
    with gr.Row():
        retry_btn = gr.Button("↻ Retry", size="sm", scale=0, min_width=110)
        undo_btn = gr.Button("↶ Undo", size="sm", scale=0, min_width=110)
        clear_btn = gr.Button("🗑 Clear", size="sm", scale=0, min_width=110)
    metrics_md = gr.Markdown("", elem_classes="turn-metrics", elem_id="chat-metrics")

    with gr.Accordion("Settings", open=False):
        backend = gr.Dropdown(
            choices=backend_choices(runtime), value=runtime.default_chat_backend(), label="Backend",
            elem_id="chat-backend",
            info="Who answers. The hosted ones use the key from the environment or the one you typed "
                 "in the Hosted API tab.",
        )
        max_tokens = checked_slider(1, cap, value=min(512, cap), step=1, label="Longest answer (tokens)",
                               info="About three quarters of a word per token.")
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)

    # ------------------------------------------------------------------ handlers
    def checked(hist: list[dict[str, Any]], max_new: float, request: gr.Request | None) -> GenParams:
        """The request's settings, after the app's caps and rate limit (gr.Error before anything changes)."""
        try:
            return runtime.check_request(request.session_hash if request else None, H.to_messages(hist),
                                         {"max_new_tokens": int(max_new)})
        except BackendError as e:
            raise gr.Error(str(e)) from e

    def answer(hist: list[dict[str, Any]], params: GenParams, backend_id: str, api_key: str | None,
               *, clear_input: bool) -> Iterator[Outputs]:
        """Stream the answer to the conversation ``hist`` (ending with the user's message)."""
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield hist + [wait], hist, ("" if clear_input else gr.skip()), ""
        backend_label = backend_id
        stream = None
        opener = None
        cancel = threading.Event()
        try:
            messages = H.to_messages(hist)
            # Loads the model if needed, then (local model) waits for its turn in the model's line.
            opener = BackendOpener(runtime, backend_id, api_key)
            while not opener.wait(WAIT_POLL_S):  # each yield is also a point where Stop can end this
                shown = hist + [H.note(opener.progress_text(), title=opener.progress_title(), pending=True)]
                yield shown, hist, gr.skip(), gr.skip()
            backend = opener.result()
            backend_label = backend.name
            stream = measure(backend.stream(messages, params, cancel), backend=backend.name, model=backend.model)
            dropped = 0  # turns the local model left out to fit its context window (its last chunk says)
            with runtime.pacer.streaming() as pace:
                for chunk in stream:
                    if isinstance(chunk.raw, dict) and chunk.raw.get("truncated_turns"):
                        dropped = int(chunk.raw["truncated_turns"])
                    if pace.due():
                        turn = hist + [H.assistant(stream.text)]
                        yield turn, turn, gr.skip(), gr.skip()
            done = H.answered(hist, stream.text)
            if dropped:  # never cut silently: say that the model did not see the whole conversation
                done = done + [H.note(
                    f"The {dropped} oldest message(s) did not fit in the model's context window and were left "
                    "out of this answer. Clear the chat to start fresh.", title=H.TRUNCATED_TITLE)]
            yield done, done, gr.skip(), f"**{backend.name}** · {stream.metrics.summary()}"
        except BackendError as e:
            partial = (stream.text if stream is not None else "") or e.partial_text
            failed = H.failure(hist, str(e), e.kind, partial)
            yield failed, failed, gr.skip(), f"**{backend_label}** · not answered ({e.kind})"
        except Exception as e:  # a bug, not a backend failure: still keep the conversation on screen
            log.exception("chat turn failed")
            failed = H.app_failure(hist, e, stream.text if stream is not None else "")
            yield failed, failed, gr.skip(), ""
        finally:
            # Stop (Gradio closes this generator) lands here too: the backend stops working.
            cancel.set()
            if stream is not None:
                stream.close()
            if opener is not None:
                opener.close()  # out of the line if it was still waiting (a stopped request never starts)

    def send(text: str, backend_id: str, max_new: float, hist: list, api_key: str | None,
             request: gr.Request) -> Iterator[Outputs]:
        """Send a message and stream the answer. Returns (chat, textbox, metrics line)."""
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        turn = H.without_pending(hist or []) + [H.user(text)]
        params = checked(turn, max_new, request)
        yield from answer(turn, params, backend_id, api_key, clear_input=True)

    def retry(backend_id: str, max_new: float, hist: list, api_key: str | None,
              request: gr.Request) -> Iterator[Outputs]:
        """Answer the last message again (its previous answer and notes are removed)."""
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        params = checked(base, max_new, request)
        yield from answer(base, params, backend_id, api_key, clear_input=False)

    def undo(hist: list) -> tuple[Any, Any, Any, Any]:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        return rest, rest, text, ""

    def clear() -> tuple[Any, Any, Any, Any]:
        """Start a new conversation."""
        return [], [], "", ""

    def pick_example(evt: gr.SelectData) -> str:
        value = evt.value if isinstance(evt.value, dict) else {}
        return str(value.get("text", "") or "")

    # ------------------------------------------------------------------ wiring
    gen_inputs = [backend, max_tokens, state, session.api_key]
    outputs = [chatbot, state, textbox, metrics_md]
    # Chat's own lane: a hosted chat never holds the local model's turn; local requests wait for the
    # model in the app's line (runtime.local_slots) and see their place in the chat.
    chat_lane = lane("chat")
    send_ev = gr.on([textbox.submit, send_btn.click], send, inputs=[textbox, *gen_inputs], outputs=outputs,
                    api_name="chat_send", show_progress="minimal", **chat_lane)
    retry_ev = gr.on([retry_btn.click, chatbot.retry], retry, inputs=gen_inputs, outputs=outputs,
                     api_name="chat_retry", show_progress="minimal", **chat_lane)
    example_ev = chatbot.example_select(pick_example, None, textbox, api_name="chat_example",
                                        queue=False, show_progress="hidden")
    example_send = example_ev.then(send, inputs=[textbox, *gen_inputs], outputs=outputs,
                                   api_visibility="private", show_progress="minimal", **chat_lane)
    running = [send_ev, retry_ev, example_send]
    stop_btn.click(None, None, None, cancels=running, api_visibility="private", queue=False)
    gr.on([undo_btn.click, chatbot.undo], undo, inputs=[state], outputs=outputs, api_name="chat_undo",
          cancels=running, concurrency_limit=None, show_progress="hidden")
    gr.on([clear_btn.click, chatbot.clear], clear, inputs=None, outputs=outputs, api_name="chat_clear",
          cancels=running, concurrency_limit=None, show_progress="hidden")
