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
from ..runtime import AppRuntime
from ..turns import Delta, Done, Event, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from .compare_layout import TABLE_COLUMNS, CompareLayout, bar_frame, layout
from .shared import (
    SessionState,
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

#: Seconds between two screen updates (also how soon Stop takes effect while nothing streams).
UPDATE_EVERY_S = 0.1


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


def _plots(cols: list[Column]) -> tuple[pd.DataFrame, pd.DataFrame]:
    done = [col for col in cols if col.metrics is not None]
    ttft = [(short_label(col.option_id), col.metrics.ttft_s) for col in done if col.metrics.ttft_s is not None]
    tps = [
        (short_label(col.option_id), col.metrics.tokens_per_s) for col in done if col.metrics.tokens_per_s is not None
    ]
    return bar_frame("seconds", ttft), bar_frame("tokens/s", tps)


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
    ui = layout(runtime)
    tab = CompareTab(
        runtime,
        ui.ids,
        ui.labels,
        price_table(runtime),
        ui.answers,
        ui.columns,
        ui.table,
        ui.ttft_plot,
        ui.tps_plot,
        ui.status,
    )
    wire(tab, ui, session)


def wire(tab: CompareTab, ui: CompareLayout, session: SessionState) -> None:
    """Connect the Compare tab's events (run, stop, ticking backends, a new session key) to ``tab``'s handlers."""
    backends = ui.backends
    run_ev = gr.on(
        [ui.run_btn.click, ui.prompt.submit],
        tab.run,
        inputs=[ui.prompt, ui.system, ui.max_tokens, ui.temperature, backends, session.api_key],
        outputs=tab.outputs,
        api_name="compare_run",
        show_progress="minimal",
        show_progress_on=[ui.status],
        **gradio_lane("compare"),
    )
    ui.stop_btn.click(None, None, None, cancels=[run_ev], api_visibility="private", queue=False)
    backends.change(
        tab.show_columns, backends, ui.columns, api_visibility="private", queue=False, show_progress="hidden"
    )
    session.api_key.change(
        tab.tick_session_key,
        [session.api_key, backends],
        backends,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
