"""The Compare tab's layout and views (no events): its components, created in order inside the current
``gr.Tab``; a run's :class:`Column` per backend, and what each column, the metrics table and the charts show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from .. import history as H
from ..core import Usage
from ..pricing import PriceTable, format_cost
from ..runtime import ADAPTER_OPTION_PREFIX, LOCAL_PREFIX, AppRuntime
from ..text_clean import clean_text
from ..turns import Delta, Done, Event, Failed, Loading, Started, Waiting
from . import compare_probs
from .shared import backend_choices, is_usable, local_wait_title, short_label, uses_local_model, wait_text

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import TurnMetrics

PER_ROW = 4
#: Answer columns kept for saved fine-tuned adapters: the ticked adapters fill them in the order they were ticked,
#: so an adapter saved while the app runs can be compared at once (one merged model in memory per adapter).
ADAPTER_COLUMNS = 3
TABLE_COLUMNS = ["Backend", "Model", "TTFT (s)", "Total (s)", "Tokens/s", "In tokens", "Out tokens", "Cost"]
TABLE_COLUMNS += [compare_probs.COLUMN, "Finish"]

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
    """The Compare tab's backend options and the components that its events use. ``ids``: the options with a
    column of their own (all but the adapters); ``answers``, ``columns``: theirs, then the adapters' (``titles``)."""

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
    titles: list[gr.Markdown]
    status: gr.Markdown
    table: gr.Dataframe
    ttft_plot: gr.BarPlot
    tps_plot: gr.BarPlot
    token_probs: gr.Checkbox
    probs_plot: gr.BarPlot


def layout(runtime: AppRuntime) -> CompareLayout:
    """Create the Compare tab's components inside the current ``gr.Tab``: one column per backend option and
    :data:`ADAPTER_COLUMNS` for saved adapters, shown for the ticked ones."""
    cap, choices = runtime.settings.max_new_tokens_cap, backend_choices(runtime)
    labels = {i: label for label, i in choices if not i.startswith(ADAPTER_OPTION_PREFIX)}
    ids = list(labels)
    # The other local engine is offered, not ticked: it loads on first use (the same weights, other kernels).
    default = [i for i in ids if is_usable(runtime, i, None) and not i.startswith(LOCAL_PREFIX)]

    with gr.Row(equal_height=True):
        # lines=1: Gradio sends a one-line box on Enter (Shift+Enter for a new line), as in the other tabs;
        # a taller box would take Enter as a new line. It grows to max_lines as the prompt does.
        prompt = gr.Textbox(
            label="Prompt",
            placeholder="One prompt for every backend… (Enter runs, Shift+Enter for a new line)",
            lines=1,
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
        elem_id="compare-backends",
    )
    with gr.Accordion("Options", open=False):
        system = gr.Textbox(
            label="System prompt (optional)",
            lines=2,
            placeholder="e.g. You are a concise assistant. Answer in at most three sentences.",
            elem_id="compare-system",
        )
        with gr.Row():
            max_tokens = gr.Slider(
                1, cap, value=min(128, cap), step=1, label="Max new tokens", elem_id="compare-max-tokens"
            )
            temperature = gr.Slider(
                0.0,
                2.0,
                value=0.0,
                step=0.05,
                label="Temperature",
                info="0 = always the most likely token (fair for comparing).",
                elem_id="compare-temperature",
            )
        token_probs = compare_probs.checkbox()

    columns, answers, titles = _answer_columns(ids, labels, default)

    status = gr.Markdown("", elem_id="compare-status")
    table = gr.Dataframe(
        value=pd.DataFrame(columns=TABLE_COLUMNS),
        headers=TABLE_COLUMNS,
        label="Metrics",
        elem_id="compare-table",
        interactive=False,
        wrap=True,
    )
    ttft_plot, tps_plot, probs_plot = _speed_plots()
    with gr.Accordion("About Compare", open=False):
        gr.Markdown(ABOUT)
    parts = (prompt, run_btn, stop_btn, backends, system, max_tokens, temperature, columns, answers, titles, status)
    return CompareLayout(ids, labels, *parts, table, ttft_plot, tps_plot, token_probs, probs_plot)


def _answer_columns(
    ids: list[str], labels: dict[str, str], default: list[str]
) -> tuple[list[gr.Column], list[gr.Markdown], list[gr.Markdown]]:
    """One column (title and answer) per backend option, four to a row, visible for the ticked ones; then a row
    of :data:`ADAPTER_COLUMNS` hidden ones for adapters, whose titles (returned third) change with the ticks."""
    columns: list[gr.Column] = []
    answers: list[gr.Markdown] = []
    titles: list[gr.Markdown] = []
    rows = [ids[start : start + PER_ROW] for start in range(0, len(ids), PER_ROW)] + [[""] * ADAPTER_COLUMNS]
    for row in rows:
        with gr.Row(equal_height=True):
            for option_id in row:
                with gr.Column(visible=option_id in default, min_width=240) as col:
                    title = gr.Markdown(f"**{labels[option_id]}**" if option_id else "")
                    answers.append(gr.Markdown("", elem_classes="compare-answer", container=True, max_height=520))
                columns.append(col)
                if not option_id:
                    titles.append(title)
    return columns, answers, titles


def _speed_plots() -> tuple[gr.BarPlot, gr.BarPlot, gr.BarPlot]:
    """The time-to-first-token, tokens/s and mean token probability bar charts, side by side."""
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
        probs_plot = compare_probs.plot()
    return ttft_plot, tps_plot, probs_plot


# --------------------------------------------------------------------------------- a run's views
@dataclass
class Column:
    """One backend's column during a run."""

    option_id: str
    label: str
    phase: str = "waiting"  # waiting, streaming, done, stopped, error
    text: str = ""
    model: str = ""
    error: str = ""
    metrics: TurnMetrics | None = None
    #: What the column waits for before its first token (loading, its place in the engine's line).
    progress: Loading | Waiting | None = None
    #: The answer's mean token probability (when asked for and reported), or why none came.
    mean_p: float | None = None
    note: str | None = None

    def take(self, event: Event | None) -> None:
        """Update the column with one event of its turn (None: its turn ended; unfinished, it was stopped)."""
        if event is None:
            if self.phase in ("waiting", "streaming"):
                self.phase = "stopped"
        elif isinstance(event, (Loading, Waiting)):
            self.progress = event
        elif isinstance(event, Started):
            self.model = event.model
        elif isinstance(event, Delta):
            self.phase = "streaming"
            self.text += event.text
        elif isinstance(event, Done):
            self.phase = "stopped" if event.finish_reason == "cancelled" else "done"
            self.metrics = event.metrics
            self.mean_p, self.note = compare_probs.mean_probability(event.tokens), event.note
        elif isinstance(event, Failed):
            self.phase, self.error, self.metrics = "error", str(event.error), event.metrics
            if event.partial and not self.text:
                self.text = event.partial

    def stop(self) -> None:
        """Stop was pressed while this column was answering: unless its answer had just ended by itself, it
        was stopped (an error on the way out, or an end with no reason, is how its backend took the Stop)."""
        m = self.metrics
        if not (self.phase == "done" and m is not None and m.finish_reason in ("stop", "length")):
            self.phase = "stopped"


def column_cost(table: PriceTable, col: Column) -> str:
    """ "free (your hardware)" for local answers, "$0.000123" when the model's price is known, else "unknown"."""
    m = col.metrics
    local = uses_local_model(col.option_id)
    known = m is not None and m.input_tokens is not None and m.output_tokens is not None
    usage = Usage(m.input_tokens, m.output_tokens) if known else None
    return format_cost(table.estimate(col.model, usage, local=local), local=local)


def _fmt(x: float | int | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    return str(x) if isinstance(x, int) else f"{x:.{digits}f}"


def table_frame(cols: list[Column], prices: PriceTable) -> pd.DataFrame:
    """The metrics table of a run: one row per column."""
    rows = []
    for col in cols:
        m = col.metrics
        status = {"waiting": "…", "streaming": "streaming", "error": "error"}.get(col.phase, "")
        rows.append(
            [
                short_label(col.option_id),
                col.model or "—",
                _fmt(m.ttft_s) if m else "—",
                _fmt(m.total_s) if m else "—",
                _fmt(m.tokens_per_s, 1) if m else "—",
                _fmt(m.input_tokens) if m else "—",
                _fmt(m.output_tokens) if m else "—",
                column_cost(prices, col) if m else "—",
                compare_probs.cell(col.mean_p),
                _finish(col, status),
            ]
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _finish(col: Column, status: str) -> str:
    """The table's Finish cell: error, stopped, the finish reason, or how far the column is."""
    if col.phase in ("error", "stopped"):
        return col.phase
    m = col.metrics
    return (m.finish_reason or "unfinished") if m else status


def ending_tag(reason: str) -> str:
    """The visible tag under an answer box's text for an answer that did not end by itself (``reason``:
    ``stopped`` or ``length``): the Chat tabs' ending note (:func:`~llm_levels.history.ending_note`), as
    Markdown."""
    note = H.ending_note(reason)
    return f"> **{note['metadata']['title']}** · {note['content']}"


def plot_frames(cols: list[Column]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data of the time-to-first-token and tokens/s charts: one bar per column with metrics."""
    done = [col for col in cols if col.metrics is not None]
    ttft = [(short_label(col.option_id), col.metrics.ttft_s) for col in done if col.metrics.ttft_s is not None]
    tps = [
        (short_label(col.option_id), col.metrics.tokens_per_s) for col in done if col.metrics.tokens_per_s is not None
    ]
    return bar_frame("seconds", ttft), bar_frame("tokens/s", tps)


def column_text(col: Column) -> str:
    """What a column's answer box shows: its place in line, the streaming text, or the answer and its tag."""
    if col.phase == "waiting":
        if isinstance(col.progress, Waiting):
            return local_wait_title(col.progress.ahead)
        if isinstance(col.progress, Loading) and col.progress.fraction is not None:
            return "⏳ " + wait_text(col.progress)
        return "⏳ Waiting for the first token…"
    if col.phase == "streaming":
        return col.text + " ▌"
    kept = col.text + "\n\n" if col.text.strip() else ""
    if col.phase == "error":
        return f"{kept}> ⚠️ **Not answered:** {col.error}"
    if col.phase == "stopped":
        return kept + ending_tag("stopped")
    note = f"\n\n> ℹ️ {col.note}" if col.note else ""  # e.g. why no token probabilities came
    if col.metrics is not None and col.metrics.finish_reason == "length":
        return kept + ending_tag("length") + note
    return (col.text or "*(empty answer)*") + note


# ---------------------------------------------------------------------------- kept in the browser
#: The most characters of one answer box kept in the browser (an answer is at most the token cap long).
KEPT_ANSWER_CHARS = 50_000
RESTORED_NOTE = "↺ Your last comparison (kept in this browser):"


def kept_results(
    prompt: str, system: str, selected: list[str] | None, answers: dict[str, str], table: Any, status: str
) -> dict[str, Any]:
    """What Compare keeps in the browser after a run: the prompt, the system prompt, the ticked backends, each
    answer box's text, the metrics table and the status line. Never a key (nothing here holds one)."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(columns=TABLE_COLUMNS)
    return {
        "prompt": prompt or "",
        "system": system or "",
        "selected": list(selected or []),
        "answers": {i: text[:KEPT_ANSWER_CHARS] for i, text in answers.items() if text},
        "table": [[str(cell) for cell in row] for row in frame.astype(object).values.tolist()],
        "status": status or "",
    }


def _text(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def _texts(value: Any) -> list[str]:
    return [clean_text(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []


def restored_results(saved: Any, ids: list[str]) -> dict[str, Any] | None:
    """The results :func:`kept_results` stored, read back from the browser and checked (text made valid,
    unknown backends and malformed rows dropped); None when nothing usable was kept."""
    if not isinstance(saved, dict) or not isinstance(saved.get("answers"), dict):
        return None
    rows = [_texts(row) for row in saved.get("table") or [] if isinstance(row, list)]
    return {
        "prompt": _text(saved.get("prompt")),
        "system": _text(saved.get("system")),
        "selected": [i for i in _texts(saved.get("selected")) if i in ids],
        "answers": {i: _text(a) for i, a in saved["answers"].items() if i in ids},
        "table": pd.DataFrame([r for r in rows if len(r) == len(TABLE_COLUMNS)], columns=TABLE_COLUMNS),
        "status": f"{RESTORED_NOTE} {_text(saved.get('status'))}".strip(),
    }


def table_plots(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two charts drawn again from a kept metrics table (cells are text; "—" is no value)."""

    def points(column: str) -> list[tuple[str, float]]:
        out = []
        for backend, value in zip(table["Backend"], table[column]):
            try:
                out.append((str(backend), float(value)))
            except (TypeError, ValueError):
                continue
        return out

    return bar_frame("seconds", points("TTFT (s)")), bar_frame("tokens/s", points("Tokens/s"))
