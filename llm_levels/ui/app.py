"""Assemble the Blocks: a model-status bar on top, then one tab per level, Compare and Lab.

The status bar polls ``runtime.models.status()`` with a ``gr.Timer`` while the local model loads
(a progress bar and what is happening), then stops polling and shrinks to one line saying which model
is loaded, or why it failed. The app serves every tab meanwhile: the hosted API works at once, and a
local request waits for the model with a visible "loading (NN%)" note.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from ..engine import TRANSFORMERS
from ..runtime import AppRuntime
from . import talk_view, token_view
from .shared import create_session_state, model_status_fields

THEME = gr.themes.Soft(text_size="lg")
# Presenter-friendly: larger base font, roomy chat, quiet secondary text, no footer clutter.
CSS = (
    """
.gradio-container { max-width: 1400px !important; font-size: 17px; }
.gradio-container .prose { font-size: 1.05rem; }
#chat-window .message { font-size: 1.08rem; line-height: 1.55; }
.turn-metrics, .turn-metrics p { color: var(--body-text-color-subdued); font-size: 0.9rem !important; }
#model-status .status-bar { padding: 10px 14px; border-radius: 10px; border: 1px solid var(--border-color-primary);
  background: var(--block-background-fill); }
#model-status .status-text { font-size: 1rem; }
#model-status .status-track { height: 10px; border-radius: 5px; background: var(--neutral-200);
  overflow: hidden; margin-top: 8px; }
#model-status .status-fill { height: 100%; background: var(--color-accent); transition: width 0.4s ease; }
#model-status .status-ready { color: var(--body-text-color-subdued); font-size: 0.95rem; padding: 2px 4px; }
#model-status .status-error { color: var(--error-text-color, #b91c1c); }
.compare-answer { min-height: 180px; }
footer { opacity: 0.6; }
"""
    + talk_view.CSS
    + token_view.CSS
)

#: Seconds between two polls of the model status while it loads.
POLL_EVERY_S = 0.75
#: ... and once it is ready (another engine may be loaded on first use later).
POLL_READY_S = 10.0


def _planned_name(runtime: AppRuntime) -> str:
    """The default local model's display name before it is loaded (no network, no loading)."""
    return runtime.planned_model_name()


def status_view(runtime: AppRuntime, planned: str = "") -> tuple[str, dict[str, Any], bool]:
    """The status bar's HTML, the status as JSON for API clients, and whether to keep polling.

    ``planned`` is the name shown while nothing is loaded yet (see :func:`_planned_name`).
    """
    f = model_status_fields(runtime.models.status())
    state = f["state"]
    display = f["display"] or planned or runtime.settings.local_model
    if state == "ready":
        loaded = runtime.models.peek()
        if loaded is not None:  # e.g. "SmolLM2-135M-Instruct (embedded GGUF)"
            display = loaded.display_name
        f["display"] = display
    name = html.escape(display)
    engines = engines_text(runtime)
    f["engines"] = engines
    if state == "ready":
        body = f'<div class="status-ready">✅ Local model ready: <b>{name}</b> · {html.escape(engines)}</div>'
        keep = False
    elif state == "error":
        err = html.escape(f["error"] or f["message"] or "unknown error")
        body = (
            f'<div class="status-bar status-error">❌ The local model could not be loaded: {err}<br>'
            "The hosted backends still work; pick one in a tab's settings.</div>"
        )
        keep = False
    elif state == "loading":
        pct = f["fraction"] * 100 if f["fraction"] is not None else 0.0
        msg = html.escape(f["message"] or "starting")
        body = (
            f'<div class="status-bar"><div class="status-text">⏳ Loading the local model <b>{name}</b> '
            f"— {pct:.0f}% · {msg}</div>"
            f'<div class="status-track"><div class="status-fill" style="width:{pct:.1f}%"></div></div></div>'
        )
        keep = True
    else:  # idle: not loaded yet and not loading (PRELOAD_MODEL=false)
        body = (
            f'<div class="status-ready">Local model <b>{name}</b> loads on first use '
            "(a chat with the local backend starts it).</div>"
        )
        keep = True
    data = {
        "state": state,
        "fraction": f["fraction"],
        "message": f["message"],
        "error": f["error"],
        "model": display,
        "engines": engines,
    }
    return body, data, keep


def engines_text(runtime: AppRuntime) -> str:
    """The engines loaded now, each with how it runs: ``engines loaded: llama.cpp · Q4_1 · 2 threads``."""
    default = runtime.settings.local_engine
    loaded = sorted(runtime.models.loaded(), key=lambda m: m.engine != default)  # the default engine first
    if not loaded:
        return "no engine loaded yet"
    return "engines loaded: " + "; ".join(engine_label(m) for m in loaded)


def engine_label(model: Any) -> str:
    """One loaded engine, as it runs: its own label (llama.cpp's names the threads it was started with),
    plus, for transformers on the CPU, the threads torch computes with now (``torch.get_num_threads()``)."""
    label = model.label
    if model.engine == TRANSFORMERS and model.device == "cpu":
        import torch

        n = torch.get_num_threads()
        label += f" · {n} thread{'s' if n != 1 else ''}"
    return label


def build_ui(runtime: AppRuntime) -> gr.Blocks:
    from . import api, chat, compare, lab, lab_finetune, local, sampling, talk

    with gr.Blocks(title="llm-levels") as demo:
        gr.Markdown("# llm-levels\nOne prompt, three ways to use a large language model.")
        planned = _planned_name(runtime)
        first_html, first_json, _ = status_view(runtime, planned)
        status_html = gr.HTML(first_html, elem_id="model-status")
        status_json = gr.JSON(first_json, visible=False)
        timer = gr.Timer(POLL_EVERY_S)

        def poll() -> tuple[str, dict[str, Any], Any]:
            """The local model's status: (bar HTML, {state, fraction, message, error, model}, timer)."""
            body, data, loading = status_view(runtime, planned)
            return body, data, gr.Timer(POLL_EVERY_S if loading else POLL_READY_S, active=True)

        # Cheap and never queued behind a generation: every open page polls it while the model loads.
        timer.tick(
            poll, None, [status_html, status_json, timer], api_name="model_status", queue=False, show_progress="hidden"
        )
        demo.load(
            poll, None, [status_html, status_json, timer], api_visibility="private", queue=False, show_progress="hidden"
        )

        session = create_session_state()
        presenter = talk.build_presenter(runtime)  # talk mode's stage, above the tabs (hidden until a talk opens)
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Chat", id="chat"):
                chat.build(runtime, session)
            with gr.Tab("2 · Hosted API", id="api"):
                api.build(runtime, session)
            with gr.Tab("3 · Local model", id="local"):
                local.build(runtime, session)
            with gr.Tab("Compare", id="compare"):
                compare.build(runtime, session)
                sampling.build(runtime)
            with gr.Tab("Lab", id="lab"):
                lab.build(runtime, session)
                lab_finetune.build(runtime)
                lab_finetune.refresh_pickers_on_load(demo, runtime)
            with gr.Tab("🎤 Talk", id="talk"):
                talk.build_starter(runtime, presenter, tabs, demo)
    return demo
