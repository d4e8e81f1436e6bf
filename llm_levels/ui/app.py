"""Assemble the Blocks: a model-status bar on top, then one tab per level, Compare and Lab."""

from __future__ import annotations

import gradio as gr

from ..runtime import AppRuntime
from .shared import create_session_state

THEME = gr.themes.Soft(text_size="lg")
CSS = """
.gradio-container { max-width: 1400px !important; }
"""


def build_ui(runtime: AppRuntime) -> gr.Blocks:
    from . import api, chat, compare, lab, local

    with gr.Blocks(title="llm-levels") as demo:
        gr.Markdown("# llm-levels\nOne prompt, three ways to use a large language model.")
        session = create_session_state()
        with gr.Tabs():
            with gr.Tab("1 · Chat", id="chat"):
                chat.build(runtime, session)
            with gr.Tab("2 · Hosted API", id="api"):
                api.build(runtime, session)
            with gr.Tab("3 · Local model", id="local"):
                local.build(runtime, session)
            with gr.Tab("Compare", id="compare"):
                compare.build(runtime, session)
            with gr.Tab("Lab", id="lab"):
                lab.build(runtime, session)
    return demo
