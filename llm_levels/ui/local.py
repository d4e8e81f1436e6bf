"""Level 3, the Local model tab: a model running inside this app on the engine the user picks, with every knob.

Two engines (:mod:`llm_levels.engine`): llama.cpp (the default, ``xllamacpp`` on the GGUF file as is)
and ``transformers`` (the code this level teaches; loaded on first use, never at start). The model (the
embedded default, a GGUF or model folder, or a Hub id) is loaded here, on this machine; the tab shows
which engine runs it and how (llama.cpp: weight type, threads, slots, context per request;
transformers: device, dtype, parameters), the sampling settings (do_sample, temperature, top_k, top_p,
repetition penalty, max new tokens, seed), and, beside the chat, what the model really reads: the prompt
rendered by the chat template, its tokens with their ids, the Python for the engine that answered
(``xllamacpp`` or plain ``transformers``), and per turn TTFT, decode speed and memory.

A turn goes through the turn service (:func:`llm_levels.turns.run_turn`) like every tab's: it loads the
model on the chosen engine if needed (its progress shows in the chat), waits in that engine's line
(``runtime.line(engine)``, shared with Chat, Compare, the Lab and ``/v1``: "N ahead of you"), streams and
measures; the tab shows the events, and fills its panels from the backend the ``Started`` event carries.
Until the first word a note says what is happening (preparing, loading, the place in line, reading a long
message). Stop ends the answer with its partial text and a "⏹️ Stopped" tag; an answer cut by
max_new_tokens gets a "✂️ Cut off" tag; Clear and Undo drop a running answer; a second message meanwhile
is refused with a toast (see :mod:`llm_levels.ui.running`). The conversation is kept in the browser too.

Events (``api_name``): ``local_send``, ``local_retry``, ``local_stop``, ``local_undo``, ``local_clear``,
``local_load_model``, ``local_render_prompt``. The engine is the last API parameter of send, retry,
render and load (``"llama.cpp"`` or ``"transformers"``; left out, the app's default ``LOCAL_ENGINE``), so
clients written before it existed keep working. ``local_send`` and ``local_retry`` are the API's (a
refusal is a ``gr.Error``); the page's Send and Retry run the same handlers with refusals as toasts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import pandas as pd

from .. import history as H
from ..core import BackendError, GenParams, Message
from ..inspection import LOCAL_METRIC_COLUMNS, local_metrics_row, memory_snapshot, memory_text
from ..runtime import AppRuntime
from ..text_clean import clean_text
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from . import next_token_panel
from .exports import local_export
from .local_layout import (
    ABOUT,
    ENGINE_INFO,
    SAMPLING_INFO,
    Buttons,
    hood_section,
    model_section,
    sampling_section,
    wire,
)
from .local_model import ModelHandlers
from .local_panels import Hood, describe_loaded, params_from, under_the_hood
from .running import BUSY, Turn, Turns, preparing_note, reading_note
from .shared import chat_panel, form_params, remember_conversation, wait_text, wait_title
from .token_branch import attach_local
from .token_panel import TokenPanel, build_panel, finished, outputs_of, with_top_logprobs

log = logging.getLogger(__name__)

__all__ = ["ABOUT", "ENGINE_INFO", "SAMPLING_INFO", "LocalTab", "build"]

Updates = dict[Any, Any]


@dataclass
class LocalTab(ModelHandlers):
    """The Local tab's components and its event handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    chatbot: gr.Chatbot
    state: gr.State  # the exact conversation (history.py dicts)
    textbox: gr.Textbox
    metrics_md: gr.Markdown
    spec_state: gr.State  # the model this session talks to
    engine: gr.Radio  # the session's engine: a value of this page (and the last API parameter)
    model_box: gr.Textbox
    model_info: gr.Markdown
    info_timer: gr.Timer  # keeps the model line current while the model loads at start-up
    prompt_code: gr.Code
    tokens_md: gr.Markdown
    tokens_view: gr.HighlightedText
    snippet: gr.Code
    table: gr.Dataframe
    rows: gr.State  # metric rows of this session's turns
    turns: Turns = field(default_factory=Turns)  # each session's running turn (Stop, Clear, Undo reach it)
    probs: TokenPanel | None = None  # the token-probabilities panel (token_panel.py)

    @property
    def outputs(self) -> list[Any]:
        """Send's and retry's outputs, in their API order."""
        return [
            self.chatbot,
            self.state,
            self.textbox,
            self.metrics_md,
            self.prompt_code,
            self.tokens_md,
            self.tokens_view,
            self.snippet,
            self.table,
            self.rows,
            self.model_info,
            *outputs_of(self.probs),
        ]

    # ------------------------------------------------------------------ a turn
    def answer(
        self,
        hist: list,
        spec: str,
        engine: str,
        system_prompt: str,
        params: GenParams,
        table_rows: list,
        request: gr.Request | None,
        *,
        clear_input: bool,
    ) -> Iterator[Updates]:
        """Stream the answer to ``hist`` (ending with the user's message) from ``spec`` on ``engine``."""
        messages = H.to_messages(hist, system=system_prompt)
        session = request.session_hash if request else None
        turn = self.turns.begin(session)
        if turn is None:
            raise gr.Error(BUSY)
        try:  # checked once, before anything on screen changes: a bad request loses nothing
            option = self.runtime.local_option(engine)
            events = run_turn(
                self.runtime,
                TurnRequest(option, messages, params, session_id=session, spec=spec, engine=engine),
                cancel=turn.cancel,
            )
        except BaseException as e:
            self.turns.end(session, turn)
            if isinstance(e, BackendError):
                raise gr.Error(str(e)) from e
            raise
        updates = self._stream(hist, messages, events, params, table_rows, turn, clear_input)
        yield from self.turns.guarded(session, turn, updates, self.chatbot, self.state)

    def _stream(
        self,
        hist: list,
        messages: list[Message],
        events: Iterator[Any],
        params: GenParams,
        table_rows: list,
        turn: Turn,
        clear_input: bool,
    ) -> Iterator[Updates]:
        """The updates of a turn's events, from the first "please wait" note to the tagged answer and panels."""
        message_chars = len(messages[-1].content) if messages else 0
        first = preparing_note(message_chars)
        yield {self.chatbot: hist + [first], self.state: hist, self.textbox: "" if clear_input else gr.skip()}
        backend, hood, text, ended = None, None, "", False
        with closing(events), self.runtime.pacer.streaming() as pace:
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    yield {self.chatbot: hist + [H.note(wait_text(event), title=wait_title(event), pending=True)]}
                elif isinstance(event, Started):
                    backend = event.backend
                    total = sum(len(m.content) for m in messages)
                    yield {self.chatbot: hist + [reading_note(backend.name, message_chars, total, local=True)]}
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        shown = hist + [H.assistant(text)]
                        yield {self.chatbot: shown, self.state: shown}
                    if hood is None and text:
                        # Filled after the first token is on screen, so tokenizing and rendering never delay it
                        # (the model keeps decoding in its own thread meanwhile).
                        hood = self._hood(backend, messages, params)
                        yield {**self._panels(hood), self.model_info: describe_loaded(backend.loaded)}
                elif isinstance(event, Done):
                    ended = True
                    yield {
                        **self._finished(
                            hist, event, backend, hood or self._hood(backend, messages, params), table_rows
                        ),
                        **finished(
                            self.probs, hist, messages, event, params, engine=backend.engine, model=backend.model
                        ),
                    }
                elif isinstance(event, Failed):
                    ended = True
                    failed = H.failure(hist, str(event.error), event.error.kind, event.partial)
                    yield {
                        self.chatbot: failed,
                        self.state: failed,
                        self.metrics_md: f"not answered ({event.error.kind})",
                    }
        if not ended and turn.stopped:  # stopped before the model started: nothing was answered
            stopped = H.ended(hist, text, "cancelled")
            yield {self.chatbot: stopped, self.state: stopped, self.metrics_md: "stopped before it answered"}

    def _hood(self, backend: Any, messages: list[Message], params: GenParams) -> Hood | None:
        """The panels for this turn; None (the panels stay as they are) when they cannot be built."""
        try:
            return under_the_hood(backend, messages, params, self.runtime.settings)
        except Exception:
            log.exception("the Local tab's panels could not be built")
            return None

    def _panels(self, hood: Hood | None) -> Updates:
        if hood is None:
            return {}
        return {
            self.prompt_code: hood.prompt,
            self.tokens_md: hood.summary,
            self.tokens_view: hood.tokens,
            self.snippet: hood.code,
        }

    def _finished(self, hist: list, done: Done, backend: Any, hood: Hood | None, table_rows: list) -> Updates:
        """The last update of a turn: it repeats every panel, so an API client's final result holds all of them."""
        mem = memory_snapshot(backend.loaded.device)
        rows = list(table_rows or [])
        rows.append(
            local_metrics_row(len(rows) + 1, done.metrics, mem, model=f"{done.metrics.model} · {backend.engine}")
        )
        line = (
            f"**{backend.name}** on **{backend.loaded.label}** · {done.metrics.summary()} · "
            f"{memory_text(mem)} · free (your hardware)"
        )
        finished = H.ended(hist, done.text, done.finish_reason)
        return {
            self.chatbot: finished,
            self.state: finished,
            self.metrics_md: line,
            **self._panels(hood),
            self.table: pd.DataFrame(rows, columns=LOCAL_METRIC_COLUMNS),
            self.rows: rows,
            self.model_info: describe_loaded(backend.loaded),
        }

    # ------------------------------------------------------------------ handlers
    def send(
        self,
        text: str,
        spec: str,
        system_prompt: str,
        sample: bool,
        temp: float,
        topk: float,
        topp: float,
        repp: float,
        max_tokens: float,
        seed_value: Any,
        engine: Any,
        hist: list,
        table_rows: list,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Send a message to the local model on the chosen engine and stream the answer; fills prompt,
        tokens, code, metrics."""
        text = clean_text(text or "")
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        engine = self.engine_of(engine)
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        params = with_top_logprobs(params, show_probs, top_logprobs)
        turn = H.without_pending(hist or []) + [H.user(text)]
        yield from self.answer(turn, spec, engine, system_prompt, params, table_rows, request, clear_input=True)

    def retry(
        self,
        spec: str,
        system_prompt: str,
        sample: bool,
        temp: float,
        topk: float,
        topp: float,
        repp: float,
        max_tokens: float,
        seed_value: Any,
        engine: Any,
        hist: list,
        table_rows: list,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Answer the last message again, on the engine chosen now (with sampling on, a new seed gives a new
        answer)."""
        engine = self.engine_of(engine)
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        params = with_top_logprobs(params, show_probs, top_logprobs)
        yield from self.answer(base, spec, engine, system_prompt, params, table_rows, request, clear_input=False)

    def stop(self, request: gr.Request | None = None) -> None:
        """Stop this session's running answer: it ends with the text so far and a "⏹️ Stopped" tag."""
        self.turns.stop(request.session_hash if request else None)

    def undo(self, hist: list, request: gr.Request | None = None) -> Updates:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        self.turns.drop(request.session_hash if request else None, rest)
        return {self.chatbot: rest, self.state: rest, self.textbox: text}

    def clear(self, request: gr.Request | None = None) -> Updates:
        """Start over: empty conversation, panels and metrics (a running answer is dropped)."""
        self.turns.drop(request.session_hash if request else None, [])
        return {
            self.chatbot: [],
            self.state: [],
            self.textbox: "",
            self.metrics_md: "",
            self.prompt_code: "",
            self.tokens_md: "",
            self.tokens_view: [],
            self.table: pd.DataFrame(columns=LOCAL_METRIC_COLUMNS),
            self.rows: [],
        }


def build(runtime: AppRuntime, session: Any) -> LocalTab:
    """Build the Local model tab inside the current ``gr.Tab``."""
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)
    state, rows, spec_state = gr.State([]), gr.State([]), gr.State(runtime.settings.local_model)
    with gr.Row():
        with gr.Column(scale=5):
            panel = chat_panel(
                "local",
                label="Conversation (the model runs in this app)",
                placeholder="### Level 3: your own model\nEverything runs here, in the open.",
                extra_buttons=["Show the prompt"],
            )
            probs = build_panel("local", local=True)
            model = model_section(runtime)
            sampling = sampling_section(runtime.settings.max_new_tokens_cap)
        with gr.Column(scale=4):
            hood = hood_section()
            explorer = next_token_panel.build(runtime)
    buttons = Buttons(
        panel.send_btn,
        panel.stop_btn,
        panel.retry_btn,
        panel.undo_btn,
        panel.clear_btn,
        panel.extra_buttons[0],
        model.pop("load_btn"),
    )
    model_engine = model["engine"]
    tab = LocalTab(
        runtime, panel.chatbot, state, panel.textbox, panel.metrics_md, spec_state, rows=rows, **model, **hood
    )
    tab.probs = probs
    wire(tab, sampling, buttons)
    attach_local(tab, probs, explorer, sampling, buttons)
    remember_conversation(session, "local", panel.chatbot, state)
    local_export(runtime, state, panel.chatbot, model_engine, spec_state, sampling)
    return tab
