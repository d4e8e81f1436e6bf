"""Level 2, the Hosted API tab: the same conversation, sent with the official ``openai`` client.

Here the knobs show: endpoint, model, system prompt, temperature, top_p, max tokens, seed, stream on/off. Beside
the chat, "under the hood": the runnable Python for exactly the request just sent, the raw request and response
JSON, and a per-turn table of tokens, latency, speed and estimated cost. Export / import: :mod:`.exports`; the
answer's token probabilities (asked for while "Show token probabilities" is ticked): :mod:`.token_panel`.

The tab has the runtime build the ``openai`` backend and runs the turn through the turn service (checked, streamed,
measured). Endpoints, the session key (server-side only) and what the model is sent: :mod:`.api_panels`.

Events (``api_name``): ``api_send``, ``api_retry``, ``api_undo``, ``api_clear``, ``api_set_key``, ``api_clear_key``,
``api_list_models``, ``api_pick_endpoint``, ``api_export``, ``api_import``, ``api_token_probabilities``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gradio as gr
import pandas as pd

from .. import history as H
from ..core import BackendError, GenParams
from ..inspection import API_METRIC_COLUMNS, api_metrics_row, request_view
from ..pricing import PriceTable
from ..runtime import AppRuntime
from ..text_clean import clean_text
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from . import token_panel as tp
from .api_layout import (
    ABOUT,
    HOSTED_CONCURRENCY,
    KEY_SET,
    KEY_UNSET,
    NO_KEY_HELP,
    hood_section,
    key_section,
    settings_section,
    wire,
)
from .api_panels import (
    CUSTOM,
    Endpoints,
    Form,
    SessionStops,
    Target,
    answer_messages,
    cost_label,
    panels,
    sent_messages,
    snippet_for,
)
from .exports import api_export
from .shared import chat_panel, price_table, remember_conversation, wait_text, wait_title

__all__ = ["ABOUT", "HOSTED_CONCURRENCY", "KEY_SET", "KEY_UNSET", "NO_KEY_HELP", "ApiTab", "Form", "build"]

Updates = dict[Any, Any]


@dataclass
class ApiTab:
    """The Hosted API tab's components and its event handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    endpoints: Endpoints
    prices: PriceTable
    chatbot: gr.Chatbot
    state: gr.State  # the exact conversation (history.py dicts)
    textbox: gr.Textbox
    metrics_md: gr.Markdown
    snippet: gr.Code
    request_json: gr.JSON
    response_json: gr.Code  # the raw response as text (see api_panels.response_text)
    table: gr.Dataframe
    rows: gr.State  # metric rows of this session's turns
    base_url: gr.Textbox
    model: gr.Dropdown
    key_box: gr.Textbox
    key_status: gr.Markdown
    api_key: gr.State  # the session's key (shared with Chat and Compare)
    stops: SessionStops = field(default_factory=SessionStops)
    probs: tp.TokenPanel | None = None  # the token-probabilities panel

    @property
    def outputs(self) -> list[Any]:
        """Send's and retry's outputs, in their API order."""
        return [
            self.chatbot,
            self.state,
            self.textbox,
            self.metrics_md,
            self.snippet,
            self.request_json,
            self.response_json,
            self.table,
            self.rows,
            *tp.outputs_of(self.probs),
        ]

    def target(self, option_id: str, url: str | None) -> Target:
        """Where the request goes; an unknown endpoint or a missing base URL is a gr.Error (nothing is lost)."""
        try:
            tgt = self.endpoints.target(option_id, url)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        if tgt.option_id == CUSTOM and not tgt.base_url:
            raise gr.Error("Type the server's base URL first (e.g. http://localhost:8000/v1).")
        return tgt

    # ------------------------------------------------------------------ a turn
    def answer(
        self,
        hist: list,
        form: Form,
        api_key: str | None,
        table_rows: list,
        request: gr.Request | None,
        *,
        clear_input: bool,
    ) -> Iterator[Updates]:
        """Stream the answer to ``hist`` (ending with the user's message) with the request settings ``form``. Stop
        sets the turn's cancel event: the backend stops, and the last update keeps what came, tagged "stopped"."""
        form = form.cleaned()
        tgt, params = self.target(form.option_id, form.url), form.params()
        if tgt.option_id == CUSTOM and not form.model_id:
            raise gr.Error("Type the model id, or press Fetch models to list the server's models.")
        # Built by the turn service after its checks (for the app's endpoint, once the local model is loaded);
        # a refused base URL is then a failed turn, shown in the chat.
        build = partial(self.endpoints.open, tgt, form.model_id, bool(form.stream), api_key)
        cancel = threading.Event()
        try:  # checked once, before anything on screen changes: a bad request loses nothing
            events = run_turn(
                self.runtime,
                TurnRequest(
                    tgt.option_id,
                    sent_messages(hist, form.system),
                    params,
                    session_id=request.session_hash if request else None,
                    api_key=api_key,
                    backend=build,
                ),
                cancel=cancel,
            )
        except BackendError as e:
            raise gr.Error(str(e)) from e
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield {
            self.chatbot: hist + [wait],
            self.state: hist,
            self.textbox: "" if clear_input else gr.skip(),
            self.metrics_md: "",
        }
        text, backend, ended = "", None, False
        session = request.session_hash if request else None
        with closing(events), self.runtime.pacer.streaming() as pace, self.stops.running(session, cancel):
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    yield {self.chatbot: hist + [H.note(wait_text(event), title=wait_title(event), pending=True)]}
                elif isinstance(event, Started):
                    backend = event.backend
                    yield self._preview(backend, tgt, hist, form.system, params)
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        turn = hist + [H.assistant(text)]
                        yield {self.chatbot: turn, self.state: turn}
                elif isinstance(event, Done):
                    ended = True
                    yield self._finished(hist, event, backend, tgt, table_rows, stopped=cancel.is_set())
                elif isinstance(event, Failed):
                    ended = True
                    yield self._failed(hist, event, backend, tgt, stopped=cancel.is_set())
        if not ended:  # stopped while it waited for the model: it never started
            shown = hist + answer_messages("", None, stopped=True)
            yield {self.chatbot: shown, self.state: shown, self.metrics_md: "stopped before the answer began"}

    def _preview(self, backend: Any, tgt: Target, hist: list, system: str, params: GenParams) -> Updates:
        """What is about to be sent, shown before the answer arrives."""
        preview = backend.build_request(sent_messages(hist, system), params)
        return {
            self.snippet: snippet_for(tgt, preview),
            self.request_json: request_view(preview, self.runtime.secrets.redact),
            self.response_json: "",
        }

    def _panels(self, backend: Any, tgt: Target) -> Updates:
        shown = panels(backend, tgt, self.runtime.secrets.redact)
        if shown.code is None:
            return {}
        return {self.snippet: shown.code, self.request_json: shown.request, self.response_json: shown.response}

    def _finished(
        self, hist: list, done: Done, backend: Any, tgt: Target, table_rows: list, *, stopped: bool
    ) -> Updates:
        """The last update of a turn: it repeats every panel, so an API client's final result holds all of them."""
        cost = cost_label(self.prices, backend, tgt, done.metrics)
        rows = list(table_rows or [])
        rows.append(api_metrics_row(len(rows) + 1, done.metrics, cost))
        stopped = stopped or done.finish_reason == "cancelled"
        finished = hist + answer_messages(done.text, done.finish_reason, stopped)
        return {
            self.chatbot: finished,
            self.state: finished,
            self.metrics_md: f"**{backend.name}** · {done.metrics.summary()} · cost {cost}",
            **self._panels(backend, tgt),
            self.table: pd.DataFrame(rows, columns=API_METRIC_COLUMNS),
            self.rows: rows,
            **tp.finished(self.probs, hist, (), done, model=backend.model),
        }

    def _failed(self, hist: list, failed: Failed, backend: Any, tgt: Target, *, stopped: bool) -> Updates:
        if stopped:  # an error on the way out of a stopped turn is not news: it was stopped
            shown = hist + answer_messages(failed.partial, None, stopped=True)
        else:
            shown = H.failure(hist, str(failed.error), failed.error.kind, failed.partial)
        name = backend.name if backend is not None else tgt.option_id
        return {
            self.chatbot: shown,
            self.state: shown,
            **self._panels(backend, tgt),
            self.metrics_md: f"**{name}** · " + ("stopped" if stopped else f"not answered ({failed.error.kind})"),
        }

    # ------------------------------------------------------------------ handlers
    def send(
        self,
        text: str,
        option_id: str,
        url: str,
        model_id: str,
        system_prompt: str,
        temp: float,
        topp: float,
        max_new: float,
        seed_value: Any,
        use_stream: bool,
        hist: list,
        api_key: str | None,
        table_rows: list,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Send a message through the API and stream the answer; fills the snippet, JSON and metrics."""
        text = clean_text(text or "")
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        form = Form(option_id, url, model_id, system_prompt, temp, topp, max_new, seed_value, use_stream)
        form = form._replace(top_logprobs=tp.top_logprobs(show_probs, top_logprobs))
        turn = H.without_pending(hist or []) + [H.user(text)]
        yield from self.answer(turn, form, api_key, table_rows, request, clear_input=True)

    def retry(
        self,
        option_id: str,
        url: str,
        model_id: str,
        system_prompt: str,
        temp: float,
        topp: float,
        max_new: float,
        seed_value: Any,
        use_stream: bool,
        hist: list,
        api_key: str | None,
        table_rows: list,
        request: gr.Request,
        show_probs: Any = False,
        top_logprobs: Any = None,
    ) -> Iterator[Updates]:
        """Send the last message again (its previous answer is removed)."""
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        form = Form(option_id, url, model_id, system_prompt, temp, topp, max_new, seed_value, use_stream)
        form = form._replace(top_logprobs=tp.top_logprobs(show_probs, top_logprobs))
        yield from self.answer(base, form, api_key, table_rows, request, clear_input=False)

    def stop(self, request: gr.Request) -> None:
        """Stop this session's running send or retry (see :meth:`answer`)."""
        self.stops.stop(request.session_hash if request else None)

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
            self.request_json: None,
            self.response_json: "",
            self.table: pd.DataFrame(columns=API_METRIC_COLUMNS),
            self.rows: [],
        }

    def set_key(self, key: str) -> Updates:
        """Keep the pasted key for this session only; the field is emptied and the key never shown."""
        key = (key or "").strip()
        if not key:
            raise gr.Error("Paste a key into the field first.")
        if any(c.isspace() for c in key) or len(key) > 512:
            raise gr.Error("That does not look like an API key (it has spaces or is very long).")
        self.runtime.remember_secret(key)  # scrubbed from every log line from now on
        return {self.key_box: "", self.api_key: key, self.key_status: KEY_SET}

    def clear_key(self) -> Updates:
        """Forget this session's key."""
        return {self.key_box: "", self.api_key: None, self.key_status: KEY_UNSET}

    def pick_endpoint(self, option_id: str) -> Updates:
        """Show the base-URL field for a custom server, and the endpoint's default model among the ones it
        is known to offer (the page has already put the default in the model box, see api_layout.py)."""
        return {
            self.base_url: gr.Textbox(visible=option_id == CUSTOM),
            self.model: gr.Dropdown(
                choices=self.endpoints.models(option_id),
                value=self.endpoints.default_model(option_id),
                allow_custom_value=True,
            ),
        }

    def fetch_for_url(self, option_id: str, url: str, model_id: str, api_key: str | None) -> Updates:
        """A base URL was typed: offer that server's models (a failure is a warning: the user may type the id)."""
        if option_id != CUSTOM or not (url or "").strip():
            return {self.model: gr.skip()}
        try:
            return self.list_models(option_id, url, model_id, api_key)
        except gr.Error as e:
            gr.Warning(f"Could not list the server's models: {e.message}")
            return {self.model: gr.skip()}

    def list_models(self, option_id: str, url: str, model_id: str, api_key: str | None) -> Updates:
        """Ask the server which models it offers (GET /models) and offer them in the model box."""
        tgt = self.target(option_id, clean_text(url or ""))
        try:
            backend = self.endpoints.open(tgt, clean_text(model_id or ""), True, api_key)
            ids = backend.list_models()  # type: ignore[attr-defined]
        except BackendError as e:
            raise gr.Error(str(e)) from e
        if not ids:
            raise gr.Error("The server listed no models: type the model id yourself.")
        current = (model_id or "").strip()
        gr.Info(f"{len(ids)} models offered by {getattr(backend, 'host', 'the server')}.")
        return {self.model: gr.Dropdown(choices=ids, value=current if current in ids else ids[0])}


def build(runtime: AppRuntime, session: Any) -> ApiTab:
    """Build the Hosted API tab inside the current ``gr.Tab``."""
    endpoints = Endpoints(runtime)
    cap = runtime.settings.max_new_tokens_cap
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)
    state, rows = gr.State([]), gr.State([])
    with gr.Row():
        with gr.Column(scale=5):
            panel = chat_panel(
                "api",
                label="Conversation (sent through the API)",
                placeholder="### Level 2: the API\nSame chat, but now you hold the knobs.",
            )
            probs = tp.build_panel("api", open=False)
            form, fetch_btn = settings_section(endpoints, cap)
            key_box, save_key_btn, forget_key_btn, key_status = key_section(runtime.settings)
        with gr.Column(scale=4):
            hood = hood_section(endpoints.first_snippet(GenParams(max_new_tokens=min(256, cap))))
    tab = ApiTab(
        runtime,
        endpoints,
        price_table(runtime),
        panel.chatbot,
        state,
        panel.textbox,
        panel.metrics_md,
        rows=rows,
        base_url=form[1],
        model=form[2],
        key_box=key_box,
        key_status=key_status,
        api_key=session.api_key,
        probs=probs,
        **hood,
    )
    wire(tab, panel, form, fetch_btn, save_key_btn, forget_key_btn)
    tp.wire_chat_panel(probs, panel, "api_token_probabilities")
    # The conversation survives a page reload (kept in this browser); the key never leaves the server.
    remember_conversation(session, "api", panel.chatbot, state)
    api_export(runtime, state, panel.chatbot, form)
    return tab
