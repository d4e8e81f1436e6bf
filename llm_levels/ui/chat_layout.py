"""The Chat tab's layout: its components, created in order inside the current ``gr.Tab`` (no events)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..runtime import AppRuntime
from .shared import backend_choices, checked_slider

#: The example prompts under the empty chat. Chosen so that the embedded model (SmolLM2-135M-Instruct, tiny)
#: answers each sensibly with Chat's greedy decoding on the default engine; tests/ui/test_chat_examples.py
#: checks every one (a fact-recall question such as a capital city is beyond it there).
EXAMPLES: list[dict[str, str]] = [
    {"text": "Explain what a large language model is in two sentences, for someone who has never used one."},
    {"text": "Write a Python function that checks whether a word is a palindrome, with one example."},
    {"text": "Give me three tips for a good presentation, as a short bulleted list."},
    {"text": "How do you say 'hello' in French?"},
    {"text": "Name three colors."},
]

#: The "Longest answer" slider's starting value (lowered to MAX_NEW_TOKENS_CAP when that is smaller).
DEFAULT_MAX_TOKENS = 512

ABOUT = """
**Level 1 — a chat window.** You type, the model answers, and the app keeps the conversation so the
model "remembers" earlier turns (it is sent the whole conversation every time). This is the least
effort and the least control: no settings to tune, no automation, and you see only the answer, not
the request. With a hosted backend your text goes to whoever runs the model and may cost money; with
the local model it stays on this machine but the answers are slower and simpler.
"""


@dataclass
class ChatLayout:
    """The Chat tab's components that its events use."""

    state: gr.State
    chatbot: gr.Chatbot
    textbox: gr.Textbox
    send_btn: gr.Button
    stop_btn: gr.Button
    retry_btn: gr.Button
    undo_btn: gr.Button
    clear_btn: gr.Button
    metrics_md: gr.Markdown
    backend: gr.Dropdown
    max_tokens: gr.Slider


def layout(runtime: AppRuntime) -> ChatLayout:
    """Create the Chat tab's components inside the current ``gr.Tab``."""
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
            show_label=False,
            placeholder="Message the model… (Enter sends, Shift+Enter for a new line)",
            lines=1,
            max_lines=8,
            scale=8,
            autofocus=True,
            elem_id="chat-input",
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
            choices=backend_choices(runtime),
            value=runtime.default_chat_backend(),
            label="Backend",
            elem_id="chat-backend",
            info="Who answers. The hosted ones use the key from the environment or the one you typed "
            "in the Hosted API tab.",
        )
        max_tokens = checked_slider(
            1,
            cap,
            value=min(DEFAULT_MAX_TOKENS, cap),
            step=1,
            label="Longest answer (tokens)",
            info="About three quarters of a word per token.",
        )
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)
    return ChatLayout(
        state, chatbot, textbox, send_btn, stop_btn, retry_btn, undo_btn, clear_btn, metrics_md, backend, max_tokens
    )
