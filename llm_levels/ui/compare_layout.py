"""The Compare tab's layout: its components, created in order inside the current ``gr.Tab`` (no events)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from ..runtime import LOCAL_PREFIX, AppRuntime
from .shared import backend_choices, is_usable

PER_ROW = 4
TABLE_COLUMNS = ["Backend", "Model", "TTFT (s)", "Total (s)", "Tokens/s", "In tokens", "Out tokens", "Cost", "Finish"]

ABOUT = """
**Compare** sends the same prompt to every backend you tick, at the same time, and measures each:
time to the first token (how long you wait before anything appears), total time, decode speed, tokens
in and out, and the estimated cost. Hosted models are bigger and usually better but cost money and see
your text; the local model is free and private but small and slow on a CPU. Tick both local engines
to see the same weights run by llama.cpp and by plain transformers: same model, different kernels,
different speed. The app's own endpoint uses the local model too, so local columns may wait for
each other (that wait is part of their time to first token).
"""


def bar_frame(y: str, points: list[tuple[str, float]]) -> pd.DataFrame:
    """One bar chart's data. Typed columns even when empty: in Gradio 6.31 a BarPlot that once got an
    untyped empty frame never draws later data."""
    return pd.DataFrame(
        {"backend": pd.Series([p[0] for p in points], dtype=str), y: pd.Series([p[1] for p in points], dtype=float)}
    )


@dataclass
class CompareLayout:
    """The Compare tab's backend options and the components that its events use."""

    ids: list[str]
    labels: dict[str, str]
    prompt: gr.Textbox
    run_btn: gr.Button
    stop_btn: gr.Button
    backends: gr.CheckboxGroup
    system: gr.Textbox
    max_tokens: gr.Slider
    temperature: gr.Slider
    columns: list[gr.Column]
    answers: list[gr.Markdown]
    status: gr.Markdown
    table: gr.Dataframe
    ttft_plot: gr.BarPlot
    tps_plot: gr.BarPlot


def layout(runtime: AppRuntime) -> CompareLayout:
    """Create the Compare tab's components inside the current ``gr.Tab``: one column per backend option, shown
    for the ticked ones."""
    cap = runtime.settings.max_new_tokens_cap
    choices = backend_choices(runtime)
    ids = [i for _, i in choices]
    labels = dict((i, label) for label, i in choices)
    # The other local engine is offered, not ticked: it loads on first use (the same weights, other kernels).
    default = [i for i in ids if is_usable(runtime, i, None) and not i.startswith(LOCAL_PREFIX)]

    with gr.Row(equal_height=True):
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="One prompt for every backend…",
            lines=2,
            max_lines=8,
            scale=8,
            elem_id="compare-prompt",
        )
        with gr.Column(scale=1, min_width=120):
            run_btn = gr.Button("Run", variant="primary", elem_id="compare-run")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="compare-stop")
    backends = gr.CheckboxGroup(
        choices=choices,
        value=default,
        label="Backends",
        info="Hosted ones need a key (from the environment or the Hosted API tab).",
    )
    with gr.Accordion("Options", open=False):
        system = gr.Textbox(
            label="System prompt (optional)",
            lines=2,
            placeholder="e.g. You are a concise assistant. Answer in at most three sentences.",
        )
        with gr.Row():
            max_tokens = gr.Slider(1, cap, value=min(128, cap), step=1, label="Max new tokens")
            temperature = gr.Slider(
                0.0,
                2.0,
                value=0.0,
                step=0.05,
                label="Temperature",
                info="0 = always the most likely token (fair for comparing).",
            )

    columns, answers = _answer_columns(ids, labels, default)

    status = gr.Markdown("", elem_id="compare-status")
    table = gr.Dataframe(
        value=pd.DataFrame(columns=TABLE_COLUMNS),
        headers=TABLE_COLUMNS,
        label="Metrics",
        elem_id="compare-table",
        interactive=False,
        wrap=True,
    )
    ttft_plot, tps_plot = _speed_plots()
    with gr.Accordion("About Compare", open=False):
        gr.Markdown(ABOUT)
    return CompareLayout(
        ids,
        labels,
        prompt,
        run_btn,
        stop_btn,
        backends,
        system,
        max_tokens,
        temperature,
        columns,
        answers,
        status,
        table,
        ttft_plot,
        tps_plot,
    )


def _answer_columns(
    ids: list[str], labels: dict[str, str], default: list[str]
) -> tuple[list[gr.Column], list[gr.Markdown]]:
    """One column (title and answer) per backend option, four to a row, visible for the ticked ones."""
    columns: list[gr.Column] = []
    answers: list[gr.Markdown] = []
    for start in range(0, len(ids), PER_ROW):
        with gr.Row(equal_height=True):
            for option_id in ids[start : start + PER_ROW]:
                with gr.Column(visible=option_id in default, min_width=240) as col:
                    gr.Markdown(f"**{labels[option_id]}**")
                    answers.append(gr.Markdown("", elem_classes="compare-answer", container=True, max_height=520))
                columns.append(col)
    return columns, answers


def _speed_plots() -> tuple[gr.BarPlot, gr.BarPlot]:
    """The time-to-first-token and tokens/s bar charts, side by side."""
    # No sort= here: in Gradio 6.31 a sorted BarPlot stays empty; y from 0 so small bars are visible.
    with gr.Row():
        ttft_plot = gr.BarPlot(
            bar_frame("seconds", []),
            x="backend",
            y="seconds",
            title="Time to first token (s, lower is better)",
            height=260,
            y_lim=[0, None],
        )
        tps_plot = gr.BarPlot(
            bar_frame("tokens/s", []),
            x="backend",
            y="tokens/s",
            title="Decode speed (tokens/s, higher is better)",
            height=260,
            y_lim=[0, None],
        )
    return ttft_plot, tps_plot
