"""The Compare tab: one prompt, every chosen backend side by side, streaming at once, one metrics table.

Each backend runs in its own thread and puts what happens (text deltas, the model's name, the final
metrics, an error) on one queue; a single generator event drains the queue and updates every column,
the table and the charts together. A failing backend shows its error in its column; the others go on.
Stop closes the generator, which sets the shared cancel event: every backend stops working.

Columns are built once per backend option (the options are fixed when the app starts) and shown for
the ticked ones, four to a row. Event: ``compare_run``, in the tab's own Gradio lane (a run that waits
on a slow hosted server never holds the local model's turn). The local column waits for the model in
the app's line (``runtime.local_slots``) and shows its place there ("N ahead of you").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from .. import history as H
from ..core import BackendError, Usage
from ..pricing import PriceTable, format_cost
from ..runtime import LOCAL_PREFIX, AppRuntime
from ..turns import Delta, Done, Event, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from .shared import (
    SessionState,
    backend_choices,
    is_usable,
    local_wait_title,
    price_table,
    short_label,
    uses_local_model,
    wait_text,
)
from .shared import lane as gradio_lane

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import TurnMetrics

log = logging.getLogger(__name__)

PER_ROW = 4
#: Seconds between two screen updates (also how soon Stop takes effect while nothing streams).
UPDATE_EVERY_S = 0.1
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


@dataclass
class Column:
    """One backend's column during a run."""

    option_id: str
    label: str
    phase: str = "waiting"  # waiting, streaming, done, error
    text: str = ""
    model: str = ""
    error: str = ""
    metrics: TurnMetrics | None = None
    #: What the column waits for before its first token (loading, its place in the engine's line).
    progress: Loading | Waiting | None = None

    def take(self, event: Event) -> None:
        """Update the column with one event of its turn."""
        if isinstance(event, (Loading, Waiting)):
            self.progress = event
        elif isinstance(event, Started):
            self.model = event.model
        elif isinstance(event, Delta):
            self.phase = "streaming"
            self.text += event.text
        elif isinstance(event, Done):
            self.phase, self.metrics = "done", event.metrics
        elif isinstance(event, Failed):
            self.phase, self.error, self.metrics = "error", str(event.error), event.metrics
            if event.partial and not self.text:
                self.text = event.partial


def _cost_label(table: PriceTable, col: Column) -> str:
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


def _table(cols: list[Column], prices: PriceTable) -> pd.DataFrame:
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
                _cost_label(prices, col) if m else "—",
                "error" if col.phase == "error" else (m.finish_reason or "unfinished") if m else status,
            ]
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _bars(y: str, points: list[tuple[str, float]]) -> pd.DataFrame:
    """One bar chart's data. Typed columns even when empty: in Gradio 6.31 a BarPlot that once got an
    untyped empty frame never draws later data."""
    return pd.DataFrame(
        {"backend": pd.Series([p[0] for p in points], dtype=str), y: pd.Series([p[1] for p in points], dtype=float)}
    )


def _plots(cols: list[Column]) -> tuple[pd.DataFrame, pd.DataFrame]:
    done = [col for col in cols if col.metrics is not None]
    ttft = [(short_label(col.option_id), col.metrics.ttft_s) for col in done if col.metrics.ttft_s is not None]
    tps = [
        (short_label(col.option_id), col.metrics.tokens_per_s) for col in done if col.metrics.tokens_per_s is not None
    ]
    return _bars("seconds", ttft), _bars("tokens/s", tps)


def _column_text(col: Column) -> str:
    if col.phase == "waiting":
        if isinstance(col.progress, Waiting):
            return local_wait_title(col.progress.ahead)
        if isinstance(col.progress, Loading) and col.progress.fraction is not None:
            return "⏳ " + wait_text(col.progress)
        return "⏳ Waiting for the first token…"
    if col.phase == "streaming":
        return col.text + " ▌"
    if col.phase == "error":
        kept = col.text + "\n\n" if col.text.strip() else ""
        return f"{kept}> ⚠️ **Not answered:** {col.error}"
    return col.text or "*(empty answer)*"


def _worker(idx: int, turn: Iterator[Event], events: queue.Queue[tuple[int, Event]]) -> None:
    """Run one backend's turn; pass each of its events on as (column, event)."""
    try:
        for event in turn:
            events.put((idx, event))
    finally:
        turn.close()  # Stop or the end: the backend stops, a turn still in line leaves it


@dataclass
class CompareTab:
    """The Compare tab's components and handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    ids: list[str]
    labels: dict[str, str]
    prices: PriceTable
    answers: list[gr.Markdown]
    columns: list[gr.Column]
    table: gr.Dataframe
    ttft_plot: gr.BarPlot
    tps_plot: gr.BarPlot
    status: gr.Markdown

    @property
    def outputs(self) -> list[Any]:
        return [*self.answers, self.table, self.ttft_plot, self.tps_plot, self.status]

    def run(
        self,
        text: str,
        system_prompt: str,
        max_new: float,
        temp: float,
        selected: list[str] | None,
        api_key: str | None,
        request: gr.Request,
    ) -> Iterator[dict[Any, Any]]:
        """Send the prompt to every selected backend at once and stream all columns.

        Returns one answer per backend option (in the order of the options; unticked ones empty),
        then the metrics table, the TTFT chart, the tokens/s chart and a status line.
        """
        picked = [i for i in self.ids if i in (selected or [])]
        if not (text or "").strip():
            raise gr.Error("Type a prompt first.")
        if not picked:
            raise gr.Error("Tick at least one backend.")
        messages = H.to_messages([H.user(text)], system=system_prompt)
        cancel = threading.Event()
        try:  # each turn is checked as it is made (one request per backend counts against the session's limit)
            turns = [
                run_turn(
                    self.runtime,
                    TurnRequest(
                        i,
                        messages,
                        {"max_new_tokens": int(max_new), "temperature": float(temp)},
                        session_id=request.session_hash if request else None,
                        api_key=api_key,
                    ),
                    cancel=cancel,
                    poll_s=UPDATE_EVERY_S,
                )
                for i in picked
            ]
        except (BackendError, TypeError, ValueError) as e:
            raise gr.Error(str(e)) from e
        cols = [Column(i, self.labels[i]) for i in picked]
        events: queue.Queue[tuple[int, Event]] = queue.Queue()
        for k, (col, turn) in enumerate(zip(cols, turns)):
            threading.Thread(
                target=_worker, name=f"compare-{col.option_id}", daemon=True, args=(k, turn, events)
            ).start()
        t0 = time.perf_counter()
        try:
            yield self._frame(cols, t0)
            last = time.perf_counter()
            while any(col.phase in ("waiting", "streaming") for col in cols):
                _drain(events, cols, UPDATE_EVERY_S)
                if time.perf_counter() - last >= UPDATE_EVERY_S:
                    last = time.perf_counter()
                    yield self._frame(cols, t0)  # also a point where Stop can close this generator
            yield self._frame(cols, t0, final=True)
        finally:
            cancel.set()  # Stop, or the end: every backend still working stops

    def _frame(self, cols: list[Column], t0: float, final: bool = False) -> dict[Any, Any]:
        """Every column's text, the table, both charts and the status line, as they stand now."""
        pos = {col.option_id: col for col in cols}
        ttft, tps = _plots(cols)
        running = sum(col.phase in ("waiting", "streaming") for col in cols)
        elapsed = time.perf_counter() - t0
        line = (
            f"Done in {elapsed:.1f} s."
            if final
            else f"Running… {running} of {len(cols)} still answering ({elapsed:.0f} s)"
        )
        texts = {md: _column_text(pos[i]) if i in pos else "" for i, md in zip(self.ids, self.answers)}
        return {
            **texts,
            self.table: _table(cols, self.prices),
            self.ttft_plot: ttft,
            self.tps_plot: tps,
            self.status: line,
        }

    def show_columns(self, selected: list[str] | None) -> dict[Any, Any]:
        return {c: gr.Column(visible=i in (selected or [])) for i, c in zip(self.ids, self.columns)}

    def tick_session_key(self, key: str | None, selected: list[str] | None) -> Any:
        """When this session gets a key, tick the hosted backends it makes usable."""
        sel = list(selected or [])
        added = [i for i in self.ids if i not in sel and not uses_local_model(i) and is_usable(self.runtime, i, key)]
        return gr.skip() if not added else [i for i in self.ids if i in sel or i in added]


def _drain(events: queue.Queue[tuple[int, Event]], cols: list[Column], wait_s: float) -> None:
    """Apply every event waiting in the queue (waiting up to ``wait_s`` for the first)."""
    try:
        item = events.get(timeout=wait_s)
    except queue.Empty:
        return
    while True:
        k, event = item
        cols[k].take(event)
        try:
            item = events.get_nowait()
        except queue.Empty:
            return


def build(runtime: AppRuntime, session: SessionState) -> None:
    """Build the Compare tab inside the current ``gr.Tab``."""
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

    columns: list[gr.Column] = []
    answers: list[gr.Markdown] = []
    for start in range(0, len(ids), PER_ROW):
        with gr.Row(equal_height=True):
            for option_id in ids[start : start + PER_ROW]:
                with gr.Column(visible=option_id in default, min_width=240) as col:
                    gr.Markdown(f"**{labels[option_id]}**")
                    answers.append(gr.Markdown("", elem_classes="compare-answer", container=True, max_height=520))
                columns.append(col)

    status = gr.Markdown("", elem_id="compare-status")
    table = gr.Dataframe(
        value=pd.DataFrame(columns=TABLE_COLUMNS),
        headers=TABLE_COLUMNS,
        label="Metrics",
        elem_id="compare-table",
        interactive=False,
        wrap=True,
    )
    # No sort= here: in Gradio 6.31 a sorted BarPlot stays empty; y from 0 so small bars are visible.
    with gr.Row():
        ttft_plot = gr.BarPlot(
            _bars("seconds", []),
            x="backend",
            y="seconds",
            title="Time to first token (s, lower is better)",
            height=260,
            y_lim=[0, None],
        )
        tps_plot = gr.BarPlot(
            _bars("tokens/s", []),
            x="backend",
            y="tokens/s",
            title="Decode speed (tokens/s, higher is better)",
            height=260,
            y_lim=[0, None],
        )
    with gr.Accordion("About Compare", open=False):
        gr.Markdown(ABOUT)

    tab = CompareTab(runtime, ids, labels, price_table(runtime), answers, columns, table, ttft_plot, tps_plot, status)
    run_ev = gr.on(
        [run_btn.click, prompt.submit],
        tab.run,
        inputs=[prompt, system, max_tokens, temperature, backends, session.api_key],
        outputs=tab.outputs,
        api_name="compare_run",
        show_progress="minimal",
        show_progress_on=[status],
        **gradio_lane("compare"),
    )
    stop_btn.click(None, None, None, cancels=[run_ev], api_visibility="private", queue=False)
    backends.change(tab.show_columns, backends, columns, api_visibility="private", queue=False, show_progress="hidden")
    session.api_key.change(
        tab.tick_session_key,
        [session.api_key, backends],
        backends,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
