"""Compare's token probabilities: how confident each backend was in its own answer.

With "Mean token probability" ticked (off by default: it costs a little on every engine and some hosted
servers refuse it), every backend is asked for its tokens' probabilities (``top_logprobs=1``); each that
reports them gets the answer's mean token probability in the metrics table (:data:`COLUMN`) and a bar in the
chart beside the speed charts. A backend that gives none says why under its answer (``turns.Done.note``).
The chart is drawn from the table after each run, and again when a kept comparison is restored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr
import pandas as pd

from ..core import TokenLogprob

#: The metrics table's column.
COLUMN = "Mean token p"
#: Alternatives asked for per token: one is enough for the mean (the chosen token's own probability).
TOP_LOGPROBS = 1
#: The chart's value axis.
Y = "mean p (%)"


def mean_probability(tokens: Sequence[TokenLogprob]) -> float | None:
    """The mean probability of an answer's tokens (the model's own, before sampling); None without tokens."""
    return sum(t.probability for t in tokens) / len(tokens) if tokens else None


def cell(mean: float | None) -> str:
    """The table's cell: ``87.3%``, or ``—`` when the backend reported nothing."""
    return "—" if mean is None else f"{mean * 100:.1f}%"


def params(token_probs: Any) -> dict[str, Any]:
    """What a run adds to each backend's settings: ``top_logprobs`` when the box is ticked."""
    return {"top_logprobs": TOP_LOGPROBS} if token_probs and str(token_probs).lower() != "false" else {}


def frame(table: Any) -> pd.DataFrame:
    """The chart's data from a metrics table (cells are text; ``—`` is no value)."""
    points: list[tuple[str, float]] = []
    if isinstance(table, pd.DataFrame) and COLUMN in table.columns and "Backend" in table.columns:
        for backend, value in zip(table["Backend"], table[COLUMN]):
            try:
                points.append((str(backend), float(str(value).rstrip("%"))))
            except (TypeError, ValueError):
                continue
    return pd.DataFrame(
        {"backend": pd.Series([p[0] for p in points], dtype=str), Y: pd.Series([p[1] for p in points], dtype=float)}
    )


def checkbox() -> gr.Checkbox:
    """The Options' box (off by default)."""
    return gr.Checkbox(
        value=False,
        label="Mean token probability",
        info="Ask every backend for its tokens' probabilities: how sure each was of its own answer (a column and "
        "a chart). Off: nothing asked for.",
        elem_id="compare-token-probs",
    )


def plot() -> gr.BarPlot:
    """The chart: one bar per backend that reported probabilities."""
    return gr.BarPlot(
        frame(None),
        x="backend",
        y=Y,
        title="Mean token probability (%)",
        height=260,
        y_lim=[0, 100],
        elem_id="compare-probs-plot",
    )


def wire(run: Any, restore: Any, table: gr.Dataframe, chart: gr.BarPlot) -> None:
    """Draw the chart from the table after each run (``run``) and after a kept comparison is shown (``restore``)."""
    quiet: dict[str, Any] = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    for event in (run, restore):
        if event is not None:
            event.then(frame, [table], [chart], **quiet)
