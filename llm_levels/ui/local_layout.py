"""The Local model tab's layout and event wiring: its sections (model, sampling, under the hood) and
the events with their API names (see :mod:`llm_levels.ui.local`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import gradio as gr
import pandas as pd

from ..core import PARAM_SPECS
from ..engine import ENGINES
from ..inspection import LOCAL_METRIC_COLUMNS
from ..runtime import AppRuntime
from .local_panels import model_info
from .running import for_page, refusals_as_toasts
from .shared import lane, local_queue, param_slider

if TYPE_CHECKING:
    from .local import LocalTab

ABOUT = """
**Level 3 — the model on your own machine.** The weights are downloaded once and run here: nothing
leaves this computer, nothing is billed, and every step is open — the chat template that turns messages
into one prompt, the tokens the model reads, each sampling knob. Two engines run the same model:
**llama.cpp** reads the quantized GGUF file as is and is fast on a CPU; Hugging Face **transformers**
is the Python most tutorials use (here it turns the GGUF into float32 weights the first time, which
takes a while). The *Python* panel shows the code for the engine that answered. The price is effort
and hardware: small models that fit a laptop are slower and much less capable than the hosted ones.
"""

ENGINE_INFO = "llama.cpp: fast on a CPU. transformers: the tutorials' Python (loads on first use)."

SAMPLING_INFO = "Off: greedy decoding (always the most likely token; temperature, top-k and top-p are ignored)."


def model_section(runtime: AppRuntime) -> dict[str, Any]:
    """The engine picker, the model box with Load, and the model line."""
    settings = runtime.settings
    with gr.Accordion("Model", open=True):
        with gr.Row(equal_height=True):
            engine = gr.Radio(
                list(ENGINES),
                value=settings.local_engine,
                label="Engine",
                scale=3,
                info=ENGINE_INFO,
                elem_id="local-engine",
            )
            model_box = gr.Textbox(
                value=settings.local_model,
                label="Model",
                scale=4,
                info="'embedded' (SmolLM2-135M-Instruct, offline), a local folder or a Hub id"
                + ("" if settings.allow_model_downloads else " already on this machine (downloads are off)")
                + ".",
            )
            load_btn = gr.Button("Load", scale=1, min_width=90)
        info = gr.Markdown(model_info(runtime, settings.local_model, settings.local_engine), elem_id="local-model-info")
        # Keeps the line above current while the model loads at start-up (then stops polling).
        timer = gr.Timer(1.0)
    return {"engine": engine, "model_box": model_box, "model_info": info, "info_timer": timer, "load_btn": load_btn}


def sampling_section(cap: int) -> list[Any]:
    """The system prompt and sampling knobs, in their API order."""
    with gr.Accordion("Sampling", open=True):
        system = gr.Textbox(
            label="System prompt",
            lines=2,
            max_lines=6,
            placeholder="e.g. You are a helpful assistant.",
            info="Becomes the first message; the chat template decides how the model sees it.",
            elem_id="local-system",
        )
        with gr.Row():
            do_sample = gr.Checkbox(value=False, label="do_sample", info=SAMPLING_INFO, elem_id="local-do-sample")
            max_new = param_slider(
                "max_new_tokens", maximum=cap, value=min(128, cap), step=1, elem_id="local-max-new-tokens"
            )
        with gr.Row():
            temperature = param_slider("temperature", minimum=0.05)
            top_k = param_slider("top_k", maximum=200)
        with gr.Row():
            top_p = param_slider("top_p")
            rep = param_slider("repetition_penalty")
        # A text box, not gr.Number: a number field cannot be left empty (= random) in the browser.
        seed = gr.Textbox(
            value="",
            label="seed",
            placeholder="empty = random",
            info=PARAM_SPECS["seed"].description + " Used only with do_sample.",
            elem_id="local-seed",
        )
    return [system, do_sample, temperature, top_k, top_p, rep, max_new, seed]


def hood_section() -> dict[str, Any]:
    """The under-the-hood panels: prompt, tokens, Python, metrics."""
    gr.Markdown("### Under the hood")
    with gr.Tabs():
        with gr.Tab("Prompt"):
            prompt_code = gr.Code(
                "",
                language=None,
                label="What the model reads (chat template applied)",
                max_lines=30,
                wrap_lines=True,
                buttons=["copy"],
            )
        with gr.Tab("Tokens"):
            tokens_md = gr.Markdown("Send a message (or press *Show the prompt*) to see its tokens.")
            tokens_view = gr.HighlightedText(
                value=[],
                label="Prompt tokens (piece · id)",
                show_legend=False,
                show_inline_category=True,
                combine_adjacent=False,
            )
        with gr.Tab("Python"):
            snippet = gr.Code(
                "",
                language="python",
                label="The same call in plain Python, on the engine that answered",
                max_lines=40,
                wrap_lines=True,
                buttons=["copy", "download"],
                elem_id="local-snippet",
            )
        with gr.Tab("Metrics"):
            table = gr.Dataframe(
                pd.DataFrame(columns=LOCAL_METRIC_COLUMNS),
                headers=LOCAL_METRIC_COLUMNS,
                label="Per turn",
                interactive=False,
                wrap=True,
            )
            gr.Markdown(
                "TTFT = time to first token (reading the prompt). Tokens/s = decode speed after "
                "the first token. RSS = memory of the whole app process; CUDA = GPU memory held "
                "by torch. Cost: free (your hardware).",
                elem_classes="turn-metrics",
            )
    return {
        "prompt_code": prompt_code,
        "tokens_md": tokens_md,
        "tokens_view": tokens_view,
        "snippet": snippet,
        "table": table,
    }


class Buttons(NamedTuple):
    """The tab's buttons, wired by :func:`wire`."""

    send: gr.Button
    stop: gr.Button
    retry: gr.Button
    undo: gr.Button
    clear: gr.Button
    render: gr.Button
    load: gr.Button


def wire(tab: LocalTab, sampling: list[Any], buttons: Buttons) -> None:
    """The tab's events, with their API names and input/output order (clients rely on both)."""
    t = tab
    gen_lane = lane("local-tab")  # the tab's own lane; the local model's limit is the engine's line
    # The engine comes after the API parameters that existed before it: a client that leaves it out gets
    # the default engine (gradio_client fills in a parameter's default).
    # Last: the token-probabilities box and slider (token_panel.py), after what clients already send.
    send_inputs = [t.textbox, t.spec_state, *sampling, t.engine, t.state, t.rows, *(t.probs.inputs if t.probs else [])]
    retry_inputs = send_inputs[1:]
    # The API's endpoints (no trigger on the page: a refusal is a gr.Error for an API client) ...
    gr.on([], t.send, inputs=send_inputs, outputs=t.outputs, api_name="local_send", **gen_lane)
    gr.on([], t.retry, inputs=retry_inputs, outputs=t.outputs, api_name="local_retry", **gen_lane)
    # ... and the page's: a refusal is a toast; "multiple", so a message sent while an answer is coming
    # reaches the handler, which refuses it visibly instead of the page dropping it.
    page = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "multiple", **gen_lane}
    send_page, retry_page = for_page(t.send, t.chatbot, t.state), for_page(t.retry, t.chatbot, t.state)
    gr.on([t.textbox.submit, buttons.send.click], send_page, inputs=send_inputs, outputs=t.outputs, **page)
    gr.on([buttons.retry.click, t.chatbot.retry], retry_page, inputs=retry_inputs, outputs=t.outputs, **page)
    buttons.stop.click(t.stop, None, None, api_name="local_stop", queue=False, show_progress="hidden")
    # Queued (never waiting: no limit), so their result reaches the page after what a running turn had sent.
    quick = {"concurrency_limit": None, "show_progress": "hidden"}
    gr.on(
        [buttons.undo.click, t.chatbot.undo],
        t.undo,
        inputs=[t.state],
        outputs=[t.chatbot, t.state, t.textbox],
        api_name="local_undo",
        **quick,
    )
    gr.on(
        [buttons.clear.click, t.chatbot.clear],
        t.clear,
        inputs=None,
        outputs=[
            t.chatbot,
            t.state,
            t.textbox,
            t.metrics_md,
            t.prompt_code,
            t.tokens_md,
            t.tokens_view,
            t.table,
            t.rows,
        ],
        api_name="local_clear",
        **quick,
    )
    _wire_model(t, sampling, buttons)


def _wire_model(t: LocalTab, sampling: list[Any], buttons: Buttons) -> None:
    """Load, the model line's refresh and Show the prompt (each refusal is a toast on the page, a
    ``gr.Error`` for an API client)."""
    load = {"inputs": [t.model_box, t.engine], "outputs": [t.spec_state, t.model_info], **local_queue(t.runtime)}
    gr.on([], t.load, api_name="local_load_model", **load)
    gr.on([buttons.load.click, t.model_box.submit], refusals_as_toasts(t.load), api_visibility="private", **load)
    info = dict(
        inputs=[t.spec_state, t.engine],
        outputs=[t.model_info, t.info_timer],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    t.info_timer.tick(t.refresh_info, **info)
    # Picking an engine loads nothing: the line says whether the model is ready there or loads on first use.
    t.engine.change(t.refresh_info, **info)
    render = {
        "inputs": [t.textbox, t.spec_state, *sampling, t.engine, t.state],
        "outputs": [t.prompt_code, t.tokens_view, t.tokens_md, t.snippet, t.model_info],
        "concurrency_limit": None,
    }
    gr.on([], t.render, api_name="local_render_prompt", **render)
    buttons.render.click(refusals_as_toasts(t.render), api_visibility="private", **render)
