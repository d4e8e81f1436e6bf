"""Sampling side by side (in the Compare tab): ``n`` draws of one prompt, or a temperature sweep, as columns.

The same machinery as a talk step (:mod:`llm_levels.talks.runner`): on a local engine each column is one
turn of the turn service, all running at once (decoded together in the engine's slots), draw ``i`` with seed
``seed + i``, so a sweep or a set of samples can be shown again exactly; a hosted API (or the app's own
``/v1``) gets the n draws as one request with ``n``, as the API itself offers them.

Event (``api_name``): ``compare_sampling``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..core import BackendError, GenParams
from ..runtime import AppRuntime
from ..talks.format import MAX_ANSWERS, Step, Talk
from ..talks.runner import run_step
from ..text_clean import clean_text
from .shared import backend_choices
from .talk_view import cards_html, status_md

#: The sweep the panel starts with (Talebi's "temperature 0 vs 2", with two steps between).
DEFAULT_SWEEP = "0, 0.7, 1.5, 2"


def parse_temperatures(text: str) -> tuple[float, ...]:
    """``"0, 0.7, 1.5"`` -> ``(0.0, 0.7, 1.5)``; a clear error for anything else. Empty means no sweep."""
    out: list[float] = []
    for part in (text or "").replace(";", ",").split(","):
        if not part.strip():
            continue
        try:
            t = float(part)
        except ValueError:
            raise BackendError(f"Temperatures are numbers separated by commas (got {part.strip()!r}).") from None
        if not 0.0 <= t <= 2.0:
            raise BackendError(f"Each temperature must be between 0 and 2 (got {t:g}).")
        out.append(t)
    if len(out) > MAX_ANSWERS:
        raise BackendError(f"At most {MAX_ANSWERS} temperatures at once.")
    return tuple(out)


def sampling_step(
    prompt: str, backend: str, mode: str, n: float, temperatures: str, temperature: float, seed: float, max_new: float
) -> Step:
    """The panel's settings as a one-step talk (checked: a bad value raises :class:`BackendError`)."""
    text = clean_text(prompt or "")
    if not text.strip():
        raise BackendError("Type a prompt first.")
    params = GenParams.from_dict({"temperature": temperature, "seed": seed, "max_new_tokens": max_new})
    if mode == "sweep":
        sweep = parse_temperatures(temperatures)
        if not sweep:
            raise BackendError("Give the temperatures to compare, e.g. 0, 0.7, 1.5, 2.")
        return Step("Temperature sweep", "compare", text, backend=backend, params=params, temperatures=sweep)
    count = int(n)
    if not 1 <= count <= MAX_ANSWERS:
        raise BackendError(f"n must be between 1 and {MAX_ANSWERS}.")
    return Step("Samples", "compare", text, backend=backend, params=params, n=count)


def run_sampling(
    runtime: AppRuntime,
    prompt: str,
    backend: str,
    mode: str,
    n: float,
    temperatures: str,
    temperature: float,
    seed: float,
    max_new: float,
    request: gr.Request | None = None,
) -> Iterator[tuple[str, str]]:
    """Stream the columns (HTML) and a status line."""
    try:
        step = sampling_step(prompt, backend, mode, n, temperatures, temperature, seed, max_new)
    except BackendError as e:
        raise gr.Error(str(e)) from None
    talk = Talk("compare-sampling", "Sampling", (step,))
    view = None
    for view in run_step(runtime, talk, 0, session_id=request.session_hash if request else None):
        yield cards_html(view), status_md(view)
    if view is not None and view.finished:
        yield cards_html(view), status_md(view) or "<sub>Done.</sub>"


def build(runtime: AppRuntime) -> None:
    """The sampling panel, inside the current block (the Compare tab)."""
    with gr.Accordion("Sampling side by side: n draws, or a temperature sweep", open=False, elem_id="sampling-box"):
        gr.Markdown(
            "One prompt, several answers in columns. **n draws** samples the same settings with seeds "
            "seed, seed+1, … (a hosted API gets one request with `n`); a **temperature sweep** answers once "
            "per temperature with the same seed. "
            "Temperature 0 is greedy: every draw is the same."
        )
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt", value="Write one sentence about the sea.", scale=3, elem_id="sampling-prompt"
            )
            backend = gr.Dropdown(backend_choices(runtime), value="local", label="Backend", elem_id="sampling-backend")
        with gr.Row():
            mode = gr.Radio([("n draws", "samples"), ("temperature sweep", "sweep")], value="sweep", label="Columns")
            n = gr.Slider(1, MAX_ANSWERS, value=4, step=1, label="n (draws)")
            temps = gr.Textbox(value=DEFAULT_SWEEP, label="Temperatures (sweep)", elem_id="sampling-temps")
            temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature (draws)")
            seed = gr.Number(value=7, precision=0, minimum=0, label="Seed")
            max_new = gr.Slider(1, 256, value=40, step=1, label="Max new tokens")
        run = gr.Button("Draw the answers", variant="primary", elem_id="sampling-run")
        status = gr.Markdown(elem_id="sampling-status")
        cards = gr.HTML(elem_id="sampling-cards")

    def handler(*args: Any, request: gr.Request) -> Iterator[dict[Any, Any]]:
        for html_cards, line in run_sampling(runtime, *args, request=request):
            yield {cards: html_cards, status: line}

    inputs = [prompt, backend, mode, n, temps, temperature, seed, max_new]
    run.click(
        handler, inputs, [cards, status], api_name="compare_sampling", concurrency_id="compare", concurrency_limit=4
    )
    prompt.submit(handler, inputs, [cards, status], api_visibility="private", concurrency_id="compare")
