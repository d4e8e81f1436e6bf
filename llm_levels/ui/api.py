"""Level 2, the Hosted API tab: the same conversation, sent with the official ``openai`` client.

Here the knobs show: endpoint, model, system prompt, temperature, top_p, max tokens, seed, stream
on/off. Beside the chat, "under the hood": the runnable Python for exactly the request just sent,
the raw request and response JSON, and a per-turn table of tokens, latency, speed and estimated cost.

Endpoints: the configured ones (``OPENAI_*``, ``HOSTED_ENDPOINTS``), OpenAI with a key typed for this
session (when nothing is configured), this app's own ``/v1`` endpoint (the local model, no key
needed), and a base URL the user types (when ``ALLOW_CUSTOM_BASE_URL``).

The key field stores a key only in the session's ``api_key`` ``gr.State`` (server-side, never sent to
the page); the field is emptied at once and the page only ever says whether a key is set.

Events (``api_name``): ``api_send``, ``api_retry``, ``api_undo``, ``api_clear``, ``api_set_key``,
``api_clear_key``, ``api_list_models``, ``api_pick_endpoint``. Stop cancels a running send/retry.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr
import pandas as pd

from .. import history as H
from .. import inspect as I
from ..core import PARAM_SPECS, BackendError, GenParams, Message, Usage
from ..metrics import measure
from ..pricing import PRICING_NOTE, format_cost
from ..runtime import APP_ENDPOINT, HOSTED_PREFIX, SESSION_HOSTED, AppRuntime
from ..server import LOCAL_MODEL_ID
from ..snippets import openai_snippet
from .shared import chat_panel, checked_slider, price_table

log = logging.getLogger(__name__)

CUSTOM = "custom"
#: Concurrent hosted sends (they wait on the network, not on this machine's CPU).
HOSTED_CONCURRENCY = 8
EXAMPLE_MESSAGE = "Say hello in five words."

ABOUT = """
**Level 2 — the API.** The same model you chat with, called from code: you choose the model and the
sampling settings, see the exact request and response, and can automate it (the Python beside the
chat runs as is). You pay per token and your text goes to the provider; in exchange you get big models
without owning hardware. "This app's local endpoint" is the same API shape served by the small local
model, so you can try all of this without a key.
"""

NO_KEY_HELP = """
**No API key is configured.** To use OpenAI, put `OPENAI_API_KEY=sk-...` in a `.env` file next to
`app.py` (or in the environment) and restart; on a Hugging Face Space, add it as a *secret* under
Settings → Variables and secrets. Or paste a key below: it is kept only for this browser session, on
the server, and never shown again. Meanwhile, **this app's local endpoint** works with no key.
"""

KEY_SET = "🔑 A key is set for this session."
KEY_UNSET = "No key set for this session."


@dataclass(frozen=True)
class Target:
    """Where a request goes: the picker id, the base URL (None = OpenAI), the key's variable for snippets."""

    option_id: str
    base_url: str | None
    key_env: str | None
    app_endpoint: bool = False


def build(runtime: AppRuntime, session: Any) -> None:
    """Build the Hosted API tab inside the current ``gr.Tab``."""
    settings = runtime.settings
    cap = settings.max_new_tokens_cap
    prices = price_table(runtime)
    endpoints = {HOSTED_PREFIX + ep.name: ep for ep in runtime.hosted_endpoints()}

    # The runtime's labels say "Hosted API · ..." for pickers that mix levels; here every option is hosted.
    choices: list[tuple[str, str]] = [(o.label.removeprefix("Hosted API · "), o.id)
                                      for o in runtime.backend_options() if o.id in endpoints]
    if not endpoints:
        choices.append(("OpenAI · api.openai.com (with the key you paste below)", SESSION_HOSTED))
    choices.append(("This app's local endpoint (the local model, no key)", APP_ENDPOINT))
    if settings.allow_custom_base_url:
        choices.append(("Custom base URL (any OpenAI-compatible server)", CUSTOM))
    default_option = next(iter(endpoints), APP_ENDPOINT)

    def default_model(option_id: str) -> str:
        if option_id in endpoints:
            return endpoints[option_id].model
        if option_id == APP_ENDPOINT:
            return LOCAL_MODEL_ID
        return settings.openai_model

    def target(option_id: str, base_url: str | None) -> Target:
        if option_id in endpoints:
            ep = endpoints[option_id]
            return Target(option_id, ep.base_url, ep.key_env)
        if option_id == APP_ENDPOINT:
            return Target(option_id, runtime.app_endpoint_url, None, app_endpoint=True)
        if option_id == CUSTOM:
            return Target(option_id, (base_url or "").strip() or None, "OPENAI_API_KEY")
        if option_id == SESSION_HOSTED:
            return Target(option_id, None, "OPENAI_API_KEY")
        raise gr.Error(f"Unknown endpoint {option_id!r}: pick one from the list.")

    # ------------------------------------------------------------------ layout
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)
    state = gr.State([])       # the exact conversation (history.py dicts)
    rows = gr.State([])        # metric rows of this session's turns
    with gr.Row():
        with gr.Column(scale=5):
            chatbot, textbox, send_btn, stop_btn, retry_btn, undo_btn, clear_btn, metrics_md, _ = chat_panel(
                "api", label="Conversation (sent through the API)",
                placeholder="### Level 2: the API\nSame chat, but now you hold the knobs.")
            with gr.Accordion("Request settings", open=True):
                with gr.Row():
                    endpoint = gr.Dropdown(choices=choices, value=default_option, label="Endpoint", scale=1)
                    with gr.Column(scale=1):
                        model = gr.Dropdown(choices=[default_model(default_option)],
                                            value=default_model(default_option), allow_custom_value=True,
                                            label="Model", info="Type any id, or fetch the server's list.")
                        fetch_btn = gr.Button("Fetch models", size="sm")
                base_url = gr.Textbox(label="Base URL", placeholder="https://api.example.com/v1",
                                      visible=default_option == CUSTOM,
                                      info="An OpenAI-compatible server (vLLM, Ollama, LM Studio…), ending in /v1.")
                system = gr.Textbox(label="System prompt", lines=2, max_lines=6,
                                    placeholder="e.g. You are a concise assistant. Answer in one paragraph.",
                                    info="Sent first, as a 'system' message, with every request.")
                with gr.Row():
                    t = PARAM_SPECS["temperature"]
                    temperature = checked_slider(t.minimum, t.maximum, value=t.default, step=t.step,
                                            label="temperature", info=t.description)
                    p = PARAM_SPECS["top_p"]
                    top_p = checked_slider(p.minimum, p.maximum, value=p.default, step=p.step, label="top_p",
                                      info=p.description)
                with gr.Row():
                    m = PARAM_SPECS["max_new_tokens"]
                    max_tokens = checked_slider(m.minimum, cap, value=min(256, cap), step=1, label="max tokens",
                                           info=m.description)
                    # A text box, not gr.Number: a number field cannot be left empty (= random) in the browser.
                    seed = gr.Textbox(value="", label="seed", placeholder="empty = random",
                                      info=PARAM_SPECS["seed"].description)
                    stream = gr.Checkbox(value=True, label="stream",
                                         info="On: the answer arrives token by token. Off: all at once.")
            no_key = not settings.has_openai_key and not settings.openai_base_url
            with gr.Accordion("Your API key (this session only)", open=no_key):
                if no_key:
                    gr.Markdown(NO_KEY_HELP)
                with gr.Row(equal_height=True):
                    key_box = gr.Textbox(type="password", label="API key", placeholder="sk-…", scale=4,
                                         elem_id="api-key",
                                         info="Used instead of the configured key; forgotten when you close the page.")
                    save_key_btn = gr.Button("Use this key", scale=1, min_width=110, elem_id="api-key-save")
                    forget_key_btn = gr.Button("Forget key", scale=1, min_width=110)
                key_status = gr.Markdown(KEY_UNSET, elem_id="api-key-status")
        with gr.Column(scale=4):
            gr.Markdown("### Under the hood")
            with gr.Tabs():
                with gr.Tab("Python"):
                    snippet = gr.Code(
                        _first_snippet(runtime, target(default_option, None), default_model(default_option),
                                       GenParams(max_new_tokens=min(256, cap))),
                        language="python", label="This request in Python (runs as is)", max_lines=40,
                        wrap_lines=True,
                        buttons=["copy", "download"])
                with gr.Tab("Request"):
                    request_json = gr.JSON(None, label="Raw request body (JSON)", open=True)
                with gr.Tab("Response"):
                    response_json = gr.JSON(None, label="Raw response (JSON; a stream is a list of chunks)")
                with gr.Tab("Metrics"):
                    table = gr.Dataframe(pd.DataFrame(columns=I.API_METRIC_COLUMNS), headers=I.API_METRIC_COLUMNS,
                                         label="Per turn", interactive=False, wrap=True)
                    gr.Markdown("TTFT = time to first token. Tokens/s = decode speed after the first token. "
                                f"Cost: {PRICING_NOTE}", elem_classes="turn-metrics")

    # ------------------------------------------------------------------ helpers
    def open_backend(tgt: Target, model_id: str, use_stream: bool, api_key: str | None):
        """The backend for a request (no network yet, except resolving a typed base URL)."""
        model_id = (model_id or "").strip() or default_model(tgt.option_id)
        if tgt.option_id == CUSTOM:
            # The operator's own OPENAI_API_KEY must never go to a server a visitor typed.
            from ..backends.openai_api import PLACEHOLDER_KEY

            return runtime.hosted_backend(SESSION_HOSTED, api_key=api_key or PLACEHOLDER_KEY,
                                          base_url=tgt.base_url, model=model_id, stream=use_stream)
        if tgt.app_endpoint:
            return runtime.hosted_backend(APP_ENDPOINT, model=model_id, stream=use_stream)
        return runtime.hosted_backend(tgt.option_id, api_key=api_key, model=model_id, stream=use_stream)

    def cost_label(backend: Any, tgt: Target, usage: Usage | None) -> str:
        if tgt.app_endpoint:
            return format_cost(0.0, local=True)
        cost = prices.estimate(backend.model, usage)
        label = format_cost(cost)
        if cost is not None and not getattr(backend, "is_openai", True) and prices.is_list_price(backend.model):
            label += " (OpenAI's list price; this server may charge differently)"
        return label

    def panels(backend: Any, tgt: Target) -> tuple[str, Any, Any]:
        req = backend.last_request
        code = _snippet_for(tgt, req) if req else gr.skip()
        redact = runtime.secrets.redact
        return code, I.request_view(req, redact), I.response_view(backend.last_response, redact)

    # ------------------------------------------------------------------ handlers
    def answer(hist: list, option_id: str, url: str, model_id: str, system_prompt: str, temp: float,
               topp: float, max_new: float, seed_value: Any, use_stream: bool, api_key: str | None,
               table_rows: list, request: gr.Request | None, *, clear_input: bool,
               params: GenParams) -> Iterator[tuple]:
        skip = gr.skip()
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield hist + [wait], hist, ("" if clear_input else skip), "", skip, skip, skip, skip, skip
        backend = None
        tgt = None
        measured = None
        cancel = threading.Event()
        try:
            tgt = target(option_id, url)
            messages = H.to_messages(hist, system=system_prompt)
            backend = open_backend(tgt, model_id, bool(use_stream), api_key)
            # Show what is about to be sent before the answer arrives.
            preview = backend.build_request(messages, params)
            yield (skip, skip, skip, skip, _snippet_for(tgt, preview),
                   I.request_view(preview, runtime.secrets.redact), None, skip, skip)
            if tgt.app_endpoint and runtime.models.peek() is None:
                yield from _wait_for_local_model(runtime, hist)
            measured = measure(backend.stream(messages, params, cancel), backend=backend.name, model=backend.model)
            with runtime.pacer.streaming() as pace:
                for _ in measured:
                    if pace.due():
                        turn = hist + [H.assistant(measured.text)]
                        yield turn, turn, skip, skip, skip, skip, skip, skip, skip
            done = H.answered(hist, measured.text)
            mt = measured.metrics
            usage = measured.reply.usage
            cost = cost_label(backend, tgt, usage)
            new_rows = list(table_rows or []) + [I.api_metrics_row(len(table_rows or []) + 1, mt, cost)]
            code, req_view, resp_view = panels(backend, tgt)
            line = f"**{backend.name}** · {mt.summary()} · cost {cost}"
            yield (done, done, skip, line, code, req_view, resp_view,
                   pd.DataFrame(new_rows, columns=I.API_METRIC_COLUMNS), new_rows)
        except BackendError as e:
            partial = (measured.text if measured is not None else "") or e.partial_text
            failed = H.failure(hist, str(e), e.kind, partial)
            if backend is not None and tgt is not None and backend.last_request:
                code, req_view, resp_view = panels(backend, tgt)
            else:
                code, req_view, resp_view = skip, skip, skip
            name = backend.name if backend is not None else option_id
            yield failed, failed, skip, f"**{name}** · not answered ({e.kind})", code, req_view, resp_view, skip, skip
        except Exception as e:  # a bug, not a backend failure: keep the conversation on screen
            log.exception("api turn failed")
            failed = H.app_failure(hist, e, measured.text if measured is not None else "")
            yield failed, failed, skip, "", skip, skip, skip, skip, skip
        finally:
            cancel.set()  # Stop (Gradio closes this generator) lands here: the request is cut off
            if measured is not None:
                measured.close()

    def params_from(temp: float, topp: float, max_new: float, seed_value: Any) -> dict[str, Any]:
        # Raw values: GenParams.from_dict coerces and validates them (an empty seed means random).
        return {"temperature": temp, "top_p": topp, "max_new_tokens": max_new, "seed": seed_value}

    def checked(hist: list, system_prompt: str, p: dict[str, Any], request: gr.Request | None) -> GenParams:
        """The app's caps and rate limit, before anything changes on screen: a conversation over
        MAX_PROMPT_CHARS is refused (gr.Error) instead of being added and then failing on every later send."""
        try:
            return runtime.check_request(request.session_hash if request else None,
                                         H.to_messages(hist, system=system_prompt), p)
        except BackendError as e:
            raise gr.Error(str(e)) from e

    def validate(option_id: str, url: str, p: dict[str, Any] | None = None) -> None:
        """Input checks that raise gr.Error before anything changes on screen (nothing is lost)."""
        tgt = target(option_id, url)
        if tgt.option_id == CUSTOM and not tgt.base_url:
            raise gr.Error("Type the server's base URL first (e.g. http://localhost:8000/v1).")
        if p is not None:
            try:
                GenParams.from_dict(p)
            except BackendError as e:
                raise gr.Error(str(e)) from e

    def send(text: str, option_id: str, url: str, model_id: str, system_prompt: str, temp: float, topp: float,
             max_new: float, seed_value: Any, use_stream: bool, hist: list, api_key: str | None,
             table_rows: list, request: gr.Request) -> Iterator[tuple]:
        """Send a message through the API and stream the answer; fills the snippet, JSON and metrics."""
        if H.is_blank(text):
            raise gr.Error("Type a message first.")
        validate(option_id, url, params_from(temp, topp, max_new, seed_value))
        turn = H.without_pending(hist or []) + [H.user(text)]
        params = checked(turn, system_prompt, params_from(temp, topp, max_new, seed_value), request)
        yield from answer(turn, option_id, url, model_id, system_prompt, temp, topp, max_new,
                          seed_value, use_stream, api_key, table_rows, request, clear_input=True, params=params)

    def retry(option_id: str, url: str, model_id: str, system_prompt: str, temp: float, topp: float,
              max_new: float, seed_value: Any, use_stream: bool, hist: list, api_key: str | None,
              table_rows: list, request: gr.Request) -> Iterator[tuple]:
        """Send the last message again (its previous answer is removed)."""
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        validate(option_id, url, params_from(temp, topp, max_new, seed_value))
        params = checked(base, system_prompt, params_from(temp, topp, max_new, seed_value), request)
        yield from answer(base, option_id, url, model_id, system_prompt, temp, topp, max_new, seed_value,
                          use_stream, api_key, table_rows, request, clear_input=False, params=params)

    def undo(hist: list) -> tuple:
        """Remove the last message and its answer; the message goes back into the text box."""
        rest, text = H.undo(H.without_pending(hist or []))
        return rest, rest, text

    def clear() -> tuple:
        """Start over: empty conversation, panels and metrics."""
        return ([], [], "", "", None, None, pd.DataFrame(columns=I.API_METRIC_COLUMNS), [])

    def set_key(key: str) -> tuple[str, str | None, str]:
        """Keep the pasted key for this session only; the field is emptied and the key never shown."""
        key = (key or "").strip()
        if not key:
            raise gr.Error("Paste a key into the field first.")
        if any(c.isspace() for c in key) or len(key) > 512:
            raise gr.Error("That does not look like an API key (it has spaces or is very long).")
        runtime.remember_secret(key)  # scrubbed from every log line from now on
        return "", key, KEY_SET

    def clear_key() -> tuple[str, None, str]:
        """Forget this session's key."""
        return "", None, KEY_UNSET

    def pick_endpoint(option_id: str) -> tuple[Any, Any]:
        """Show the base-URL field for a custom server, and the endpoint's default model."""
        value = default_model(option_id)
        return gr.Textbox(visible=option_id == CUSTOM), gr.Dropdown(choices=[value], value=value)

    def list_models(option_id: str, url: str, model_id: str, api_key: str | None) -> Any:
        """Ask the server which models it offers (GET /models) and offer them in the model box."""
        validate(option_id, url)
        tgt = target(option_id, url)
        try:
            backend = open_backend(tgt, model_id, True, api_key)
            ids = backend.list_models()
        except BackendError as e:
            raise gr.Error(str(e)) from e
        if not ids:
            raise gr.Error("The server listed no models: type the model id yourself.")
        current = (model_id or "").strip()
        gr.Info(f"{len(ids)} models offered by {getattr(backend, 'host', 'the server')}.")
        return gr.Dropdown(choices=ids, value=current if current in ids else ids[0])

    # ------------------------------------------------------------------ wiring
    settings_inputs = [endpoint, base_url, model, system, temperature, top_p, max_tokens, seed, stream]
    gen_inputs = [*settings_inputs, state, session.api_key, rows]
    outputs = [chatbot, state, textbox, metrics_md, snippet, request_json, response_json, table, rows]
    lane = {"concurrency_id": "hosted-api", "concurrency_limit": HOSTED_CONCURRENCY}
    send_ev = gr.on([textbox.submit, send_btn.click], send, inputs=[textbox, *gen_inputs], outputs=outputs,
                    api_name="api_send", show_progress="minimal", **lane)
    retry_ev = gr.on([retry_btn.click, chatbot.retry], retry, inputs=gen_inputs, outputs=outputs,
                     api_name="api_retry", show_progress="minimal", **lane)
    running = [send_ev, retry_ev]
    stop_btn.click(None, None, None, cancels=running, api_visibility="private", queue=False)
    gr.on([undo_btn.click, chatbot.undo], undo, inputs=[state], outputs=[chatbot, state, textbox],
          api_name="api_undo", cancels=running, concurrency_limit=None, show_progress="hidden")
    gr.on([clear_btn.click, chatbot.clear], clear, inputs=None,
          outputs=[chatbot, state, textbox, metrics_md, request_json, response_json, table, rows],
          api_name="api_clear", cancels=running, concurrency_limit=None, show_progress="hidden")
    gr.on([save_key_btn.click, key_box.submit], set_key, inputs=[key_box],
          outputs=[key_box, session.api_key, key_status], api_name="api_set_key", concurrency_limit=None,
          show_progress="hidden")
    forget_key_btn.click(clear_key, None, [key_box, session.api_key, key_status], api_name="api_clear_key",
                         concurrency_limit=None, show_progress="hidden")
    endpoint.change(pick_endpoint, [endpoint], [base_url, model], api_name="api_pick_endpoint",
                    concurrency_limit=None, show_progress="hidden")
    fetch_btn.click(list_models, [endpoint, base_url, model, session.api_key], [model],
                    api_name="api_list_models", show_progress="minimal", **lane)


def _snippet_for(tgt: Target, request: dict[str, Any]) -> str:
    return openai_snippet(request, base_url=tgt.base_url, key_env=tgt.key_env, app_endpoint=tgt.app_endpoint)


def _first_snippet(runtime: AppRuntime, tgt: Target, model_id: str, params: GenParams) -> str:
    """The snippet shown before anything was sent: an example message with the default settings."""
    try:
        backend = runtime.hosted_backend(tgt.option_id, model=model_id, stream=True)  # no network here
        request = backend.build_request([Message("user", EXAMPLE_MESSAGE)], params)
    except BackendError as e:  # a misconfigured endpoint: the tab still opens, the send explains
        log.warning("no example snippet for %s: %s", tgt.option_id, e)
        return ""
    return _snippet_for(tgt, request)


def _wait_for_local_model(runtime: AppRuntime, hist: list) -> Iterator[tuple]:
    """While the local model loads (the app's endpoint needs it), show its progress in the chat."""
    from .shared import model_loading_text

    skip = gr.skip()
    done = threading.Event()
    error: list[BaseException] = []

    def load() -> None:
        try:
            runtime.models.get()
        except BaseException as e:  # reported by the request itself below
            error.append(e)
        finally:
            done.set()

    threading.Thread(target=load, name="api-wait-model", daemon=True).start()
    while not done.wait(0.4):
        text = model_loading_text(runtime) or "Getting the local model ready…"
        yield hist + [H.note(text, title=H.WAIT_TITLE, pending=True)], skip, skip, skip, skip, skip, skip, skip, skip
    if error and isinstance(error[0], BackendError):
        raise error[0]
