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

Events (``api_name``): ``local_send``, ``local_retry``, ``local_undo``, ``local_clear``,
``local_load_model``, ``local_render_prompt``. The engine is the last API parameter of send, retry,
render and load (``"llama.cpp"`` or ``"transformers"``; left out, the app's default ``LOCAL_ENGINE``), so
clients written before it existed keep working. Stop cancels a running send/retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from .. import history as H
from ..core import BackendError, GenParams, Message
from ..engine import ENGINES
from ..inspection import LOCAL_METRIC_COLUMNS, local_metrics_row, memory_snapshot, memory_text
from ..runtime import AppRuntime
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
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
from .local_panels import Hood, describe_loaded, keeps_polling, model_info, params_from, under_the_hood
from .shared import chat_panel, form_params, wait_text, wait_title

log = logging.getLogger(__name__)

__all__ = ["ABOUT", "ENGINE_INFO", "SAMPLING_INFO", "LocalTab", "build"]

Updates = dict[Any, Any]


@dataclass
class LocalTab:
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
        ]

    def engine_of(self, value: Any) -> str:
        """The engine an event asked for; left out (an API client from before the engine existed): the default."""
        engine = (value or "").strip() if isinstance(value, str) else ""
        if not engine:
            return self.runtime.settings.local_engine
        if engine not in ENGINES:
            raise gr.Error(f"Unknown engine {engine!r}: pick {' or '.join(ENGINES)}.")
        return engine

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
        try:  # checked once, before anything on screen changes: a bad request loses nothing
            events = run_turn(
                self.runtime,
                TurnRequest(
                    self.runtime.local_option(engine),
                    messages,
                    params,
                    session_id=request.session_hash if request else None,
                    spec=spec,
                    engine=engine,
                ),
            )
        except BackendError as e:
            raise gr.Error(str(e)) from e
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield {self.chatbot: hist + [wait], self.state: hist, self.textbox: "" if clear_input else gr.skip()}
        backend, hood, text = None, None, ""
        with closing(events), self.runtime.pacer.streaming() as pace:
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    yield {self.chatbot: hist + [H.note(wait_text(event), title=wait_title(event), pending=True)]}
                elif isinstance(event, Started):
                    backend = event.backend
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        turn = hist + [H.assistant(text)]
                        yield {self.chatbot: turn, self.state: turn}
                    if hood is None and text:
                        # Filled after the first token is on screen, so tokenizing and rendering never delay it
                        # (the model keeps decoding in its own thread meanwhile).
                        hood = self._hood(backend, messages, params)
                        yield {**self._panels(hood), self.model_info: describe_loaded(backend.loaded)}
                elif isinstance(event, Done):
                    yield self._finished(
                        hist, event, backend, hood or self._hood(backend, messages, params), table_rows
                    )
                elif isinstance(event, Failed):
                    failed = H.failure(hist, str(event.error), event.error.kind, event.partial)
                    yield {
                        self.chatbot: failed,
                        self.state: failed,
                        self.metrics_md: f"not answered ({event.error.kind})",
                    }

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
        finished = H.answered(hist, done.text)
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
    ) -> Iterator[Updates]:
        """Send a message to the local model on the chosen engine and stream the answer; fills prompt,
        tokens, code, metrics."""
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        engine = self.engine_of(engine)
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
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
    ) -> Iterator[Updates]:
        """Answer the last message again, on the engine chosen now (with sampling on, a new seed gives a new
        answer)."""
        engine = self.engine_of(engine)
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        yield from self.answer(base, spec, engine, system_prompt, params, table_rows, request, clear_input=False)

    def undo(self, hist: list) -> Updates:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        return {self.chatbot: rest, self.state: rest, self.textbox: text}

    def clear(self) -> Updates:
        """Start over: empty conversation, panels and metrics."""
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

    def load(self, spec_text: str, engine: Any, progress: gr.Progress = gr.Progress()) -> Updates:
        """Load a model (embedded, folder or Hub id) on the chosen engine for this session; shows progress
        while it loads."""
        spec_text = (spec_text or "").strip()
        if not spec_text:
            raise gr.Error("Type a model: 'embedded', a folder or a Hub id.")
        engine = self.engine_of(engine)
        progress(0.0, desc=f"Loading {spec_text} on {engine}")
        try:
            self.runtime.models.get(spec_text, progress=lambda f, msg: progress(f, desc=msg), engine=engine)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return {self.spec_state: spec_text, self.model_info: model_info(self.runtime, spec_text, engine)}

    def render(
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
        progress: gr.Progress = gr.Progress(),
    ) -> Updates:
        """The prompt the model would read for this conversation plus the text box (nothing is generated),
        on the chosen engine (loading the model there first if needed, with its progress)."""
        engine = self.engine_of(engine)
        base = H.without_pending(hist or [])
        if not H.is_blank(text):
            base = base + [H.user(text)]
        messages = H.to_messages(base, system=system_prompt)
        if not messages:
            raise gr.Error("Type a message first: the prompt is built from the conversation.")
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        try:
            self.runtime.models.get(spec, progress=lambda f, msg: progress(f, desc=msg), engine=engine)
            # Only renders: no place in the engine's line is taken (a backend takes one when it streams).
            backend = self.runtime.local_backend(spec, engine=engine)
            hood = under_the_hood(backend, messages, params, self.runtime.settings)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return {**self._panels(hood), self.model_info: describe_loaded(backend.loaded)}

    def refresh_info(self, spec: str, engine: Any) -> Updates:
        """The model line on the engine picked now (the timer keeps polling only while that can change)."""
        engine = engine if engine in ENGINES else self.runtime.settings.local_engine
        return {
            self.model_info: model_info(self.runtime, spec, engine),
            self.info_timer: gr.Timer(active=keeps_polling(self.runtime, spec, engine)),
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
            model = model_section(runtime)
            sampling = sampling_section(runtime.settings.max_new_tokens_cap)
        with gr.Column(scale=4):
            hood = hood_section()
    buttons = Buttons(
        panel.send_btn,
        panel.stop_btn,
        panel.retry_btn,
        panel.undo_btn,
        panel.clear_btn,
        panel.extra_buttons[0],
        model.pop("load_btn"),
    )
    tab = LocalTab(
        runtime, panel.chatbot, state, panel.textbox, panel.metrics_md, spec_state, rows=rows, **model, **hood
    )
    wire(tab, sampling, buttons)
    return tab
