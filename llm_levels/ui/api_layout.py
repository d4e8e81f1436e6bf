"""The Hosted API tab's layout and event wiring: its sections (request settings, session key, under
the hood) and the events with their API names (see :mod:`llm_levels.ui.api`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from ..core import PARAM_SPECS
from ..inspection import API_METRIC_COLUMNS
from ..pricing import PRICING_NOTE
from .api_panels import CUSTOM, Endpoints
from .shared import param_slider

if TYPE_CHECKING:
    from .api import ApiTab

#: Concurrent hosted sends (they wait on the network, not on this machine's CPU).
HOSTED_CONCURRENCY = 8

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


def settings_section(endpoints: Endpoints, cap: int) -> tuple[list[Any], gr.Button]:
    """The request settings, in their API order, and the Fetch-models button."""
    default = endpoints.default_option
    with gr.Accordion("Request settings", open=True):
        with gr.Row():
            endpoint = gr.Dropdown(
                choices=endpoints.choices(), value=default, label="Endpoint", scale=1, elem_id="api-endpoint"
            )
            with gr.Column(scale=1):
                model = gr.Dropdown(
                    choices=endpoints.models(default),
                    value=endpoints.default_model(default),
                    allow_custom_value=True,
                    label="Model",
                    info="Type any id, or fetch the server's list.",
                    elem_id="api-model",
                )
                fetch_btn = gr.Button("Fetch models", size="sm")
        base_url = gr.Textbox(
            label="Base URL",
            placeholder="https://api.example.com/v1",
            visible=default == CUSTOM,
            info="An OpenAI-compatible server (vLLM, Ollama, LM Studio…), ending in /v1. Enter lists its models.",
            elem_id="api-base-url",
        )
        system = gr.Textbox(
            label="System prompt",
            lines=2,
            max_lines=6,
            placeholder="e.g. You are a concise assistant. Answer in one paragraph.",
            info="Sent first, as a 'system' message, with every request.",
            elem_id="api-system",
        )
        with gr.Row():
            temperature = param_slider("temperature", elem_id="api-temperature")
            top_p = param_slider("top_p", elem_id="api-top-p")
        with gr.Row():
            max_tokens = param_slider(
                "max_new_tokens", label="max tokens", maximum=cap, value=min(256, cap), step=1, elem_id="api-max-tokens"
            )
            # A text box, not gr.Number: a number field cannot be left empty (= random) in the browser.
            seed = gr.Textbox(
                value="",
                label="seed",
                placeholder="empty = random",
                info=PARAM_SPECS["seed"].description,
                elem_id="api-seed",
            )
            stream = gr.Checkbox(
                value=True, label="stream", info="On: the answer arrives token by token. Off: all at once."
            )
    return [endpoint, base_url, model, system, temperature, top_p, max_tokens, seed, stream], fetch_btn


def key_section(settings: Any) -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Markdown]:
    """The session key field with its buttons and status line."""
    no_key = not settings.has_openai_key and not settings.openai_base_url
    with gr.Accordion("Your API key (this session only)", open=no_key):
        if no_key:
            gr.Markdown(NO_KEY_HELP)
        with gr.Row(equal_height=True):
            key_box = gr.Textbox(
                type="password",
                label="API key",
                placeholder="sk-…",
                scale=4,
                elem_id="api-key",
                info="Used instead of the configured key; forgotten when you close the page.",
            )
            save_btn = gr.Button("Use this key", scale=1, min_width=110, elem_id="api-key-save")
            forget_btn = gr.Button("Forget key", scale=1, min_width=110)
        status = gr.Markdown(KEY_UNSET, elem_id="api-key-status")
    return key_box, save_btn, forget_btn, status


def hood_section(first_snippet: str) -> dict[str, Any]:
    """The under-the-hood panels: Python, raw request, raw response, metrics."""
    gr.Markdown("### Under the hood")
    with gr.Tabs():
        with gr.Tab("Python"):
            snippet = gr.Code(
                first_snippet,
                language="python",
                label="This request in Python (runs as is)",
                max_lines=40,
                wrap_lines=True,
                buttons=["copy", "download"],
            )
        with gr.Tab("Request"):
            request_json = gr.JSON(None, label="Raw request body (JSON)", open=True)
        with gr.Tab("Response"):
            # Text, not gr.JSON: its viewer folds every level below the third, so a chunk's delta (the
            # streamed text) showed as "Object(4)". One chunk per line reads like the stream itself.
            response_json = gr.Code(
                "",
                language="json",
                label="Raw response (JSON; a stream shows one chunk per line, as they arrived)",
                max_lines=40,
                wrap_lines=True,
                buttons=["copy"],
                elem_id="api-response",
            )
        with gr.Tab("Metrics"):
            table = gr.Dataframe(
                pd.DataFrame(columns=API_METRIC_COLUMNS),
                headers=API_METRIC_COLUMNS,
                label="Per turn",
                interactive=False,
                wrap=True,
            )
            gr.Markdown(
                f"TTFT = time to first token. Tokens/s = decode speed after the first token. Cost: {PRICING_NOTE}",
                elem_classes="turn-metrics",
            )
    return {"snippet": snippet, "request_json": request_json, "response_json": response_json, "table": table}


def wire(
    tab: ApiTab, panel: Any, form: list[Any], fetch_btn: gr.Button, save_key_btn: gr.Button, forget_key_btn: gr.Button
) -> None:
    """The tab's events, with their API names and input/output order (clients rely on both)."""
    t = tab
    gen_inputs = [*form, t.state, t.api_key, t.rows, *(t.probs.inputs if t.probs else [])]  # token_panel.py's last
    lane = {"concurrency_id": "hosted-api", "concurrency_limit": HOSTED_CONCURRENCY}
    send_ev = gr.on(
        [t.textbox.submit, panel.send_btn.click],
        t.send,
        inputs=[t.textbox, *gen_inputs],
        outputs=t.outputs,
        api_name="api_send",
        show_progress="minimal",
        **lane,
    )
    retry_ev = gr.on(
        [panel.retry_btn.click, t.chatbot.retry],
        t.retry,
        inputs=gen_inputs,
        outputs=t.outputs,
        api_name="api_retry",
        show_progress="minimal",
        **lane,
    )
    running = [send_ev, retry_ev]
    # Stop asks the running turn to stop (it ends itself, tagging what was kept), rather than Gradio's
    # cancels=, which would end it before it could say so.
    panel.stop_btn.click(t.stop, None, None, api_visibility="private", queue=False, show_progress="hidden")
    gr.on(
        [panel.undo_btn.click, t.chatbot.undo],
        t.undo,
        inputs=[t.state],
        outputs=[t.chatbot, t.state, t.textbox],
        api_name="api_undo",
        cancels=running,
        concurrency_limit=None,
        show_progress="hidden",
    )
    gr.on(
        [panel.clear_btn.click, t.chatbot.clear],
        t.clear,
        inputs=None,
        outputs=[t.chatbot, t.state, t.textbox, t.metrics_md, t.request_json, t.response_json, t.table, t.rows],
        api_name="api_clear",
        cancels=running,
        concurrency_limit=None,
        show_progress="hidden",
    )
    _wire_settings(t, form, fetch_btn, save_key_btn, forget_key_btn, lane)


def _wire_settings(
    t: ApiTab, form: list[Any], fetch_btn: gr.Button, save_key_btn: gr.Button, forget_key_btn: gr.Button, lane: dict
) -> None:
    """The key buttons, the endpoint picker and Fetch models."""
    key_outputs = [t.key_box, t.api_key, t.key_status]
    gr.on(
        [save_key_btn.click, t.key_box.submit],
        t.set_key,
        inputs=[t.key_box],
        outputs=key_outputs,
        api_name="api_set_key",
        concurrency_limit=None,
        show_progress="hidden",
    )
    forget_key_btn.click(
        t.clear_key, None, key_outputs, api_name="api_clear_key", concurrency_limit=None, show_progress="hidden"
    )
    endpoint = form[0]
    # The model box follows the endpoint at once, in the page: a message sent right after a switch must not
    # go out with the previous endpoint's model (a 404 on this app's own endpoint). The server's update
    # below then offers that endpoint's known models.
    endpoint.change(
        None,
        [endpoint],
        [t.model],
        js=f"(option) => {{ const d = {json.dumps(t.endpoints.defaults())}; return option in d ? d[option] : ''; }}",
        api_visibility="private",
        queue=False,
    )
    endpoint.change(
        t.pick_endpoint,
        [endpoint],
        [t.base_url, t.model],
        api_name="api_pick_endpoint",
        concurrency_limit=None,
        show_progress="hidden",
    )
    gr.on(
        [t.base_url.submit, t.base_url.blur],
        t.fetch_for_url,
        [endpoint, t.base_url, t.model, t.api_key],
        [t.model],
        api_visibility="private",
        show_progress="hidden",
        **lane,
    )
    fetch_btn.click(
        t.list_models,
        [endpoint, t.base_url, t.model, t.api_key],
        [t.model],
        api_name="api_list_models",
        show_progress="minimal",
        **lane,
    )
