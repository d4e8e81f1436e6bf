"""The Compare tab: one prompt, every chosen backend side by side, streaming at once, one metrics table.

Each backend runs in its own thread and puts what happens (text deltas, the model's name, the final
metrics, an error) on one queue; a single generator event drains the queue and updates every column,
the table and the charts together. A failing backend shows its error in its column; the others go on.
Stop sets the run's shared cancel event: every backend stops working, and the run ends by itself, its
last update tagging each unfinished answer "stopped" (an answer cut at the length limit is tagged too).

Each backend option has a column of its own, built when the app starts and shown when ticked, four to a row;
saved fine-tuned adapters come and go while the app runs (the Lab saves them), so they share a few columns
kept for them (``ADAPTER_COLUMNS``), filled by the ticked adapters in the order they were ticked. Event:
``compare_run``, in the tab's own Gradio lane (a run that waits on a slow hosted server never holds the local
model's turn). The local column waits for the model in the app's line (``runtime.local_slots``) and shows its
place there ("N ahead of you").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError
from ..pricing import PriceTable
from ..runtime import ADAPTER_OPTION_PREFIX, AppRuntime
from ..text_clean import clean_text
from ..turns import Event, TurnRequest, run_turn
from . import compare_probs
from .api_panels import SessionStops
from .compare_layout import (
    ADAPTER_COLUMNS,
    Column,
    CompareLayout,
    column_text,
    kept_results,
    layout,
    plot_frames,
    restored_results,
    table_frame,
    table_plots,
)
from .shared import SessionState, backend_choices, is_usable, price_table, remembered, uses_local_model
from .shared import lane as gradio_lane

log = logging.getLogger(__name__)

#: Seconds between two screen updates (also how soon Stop takes effect while nothing streams).
UPDATE_EVERY_S = 0.1


def _worker(idx: int, turn: Iterator[Event], events: queue.Queue[tuple[int, Event | None]]) -> None:
    """Run one backend's turn; pass each of its events on as (column, event), then (column, None)."""
    try:
        for event in turn:
            events.put((idx, event))
    finally:
        turn.close()  # Stop or the end: the backend stops, a turn still in line leaves it
        events.put((idx, None))


@dataclass
class CompareTab:
    """The Compare tab's components and handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    #: The options with a column of their own (every one but the adapters) and their labels.
    ids: list[str]
    labels: dict[str, str]
    prices: PriceTable
    #: The answer boxes and columns of ``ids``, then those kept for adapters (``titles``: theirs).
    answers: list[gr.Markdown]
    columns: list[gr.Column]
    titles: list[gr.Markdown]
    table: gr.Dataframe
    ttft_plot: gr.BarPlot
    tps_plot: gr.BarPlot
    status: gr.Markdown
    prompt: gr.Textbox
    system: gr.Textbox
    backends: gr.CheckboxGroup
    stops: SessionStops = field(default_factory=SessionStops)

    @property
    def outputs(self) -> list[Any]:
        return [*self.answers, self.table, self.ttft_plot, self.tps_plot, self.status]

    def boxes(self, selected: list[str] | None) -> dict[str, gr.Markdown]:
        """The answer box of each ticked backend, in column order: the ones with a column of their own (in the
        order of the options), then the adapters, in the columns kept for them (in the order they were ticked;
        those beyond :data:`ADAPTER_COLUMNS` get none). Ids that are neither are left out."""
        own = {i: md for i, md in zip(self.ids, self.answers) if i in (selected or ())}
        return {**own, **dict(zip(self.adapters_in(selected or []), self.answers[len(self.ids) :]))}

    def adapters_in(self, selected: list[str]) -> list[str]:
        """The ticked adapters, in the order they were ticked."""
        return [i for i in dict.fromkeys(selected) if i.startswith(ADAPTER_OPTION_PREFIX)]

    def labels_now(self) -> dict[str, str]:
        """Every option's label, with the adapters saved by now (read from disk: the Lab saves them as the app
        runs)."""
        return {**self.labels, **{o.id: o.label for o in self.runtime.adapter_options()}}

    def run(
        self,
        text: str,
        system_prompt: str,
        max_new: float,
        temp: float,
        selected: list[str] | None,
        api_key: str | None,
        request: gr.Request,
        token_probs: Any = False,
    ) -> Iterator[dict[Any, Any]]:
        """Send the prompt to every selected backend at once and stream all columns.

        Returns one answer per backend option but the adapters (in the order of the options; unticked ones
        empty), one per adapter column (the ticked adapters in the order they were ticked), then the metrics
        table, the TTFT chart, the tokens/s chart and a status line.
        """
        picked = list(self.boxes(selected))
        text, system_prompt = clean_text(text or ""), clean_text(system_prompt or "")
        if H.is_blank(text):
            raise gr.Error("Type a prompt first.")
        if not picked:
            raise gr.Error("Tick at least one backend.")
        if len(self.adapters_in(selected or [])) > ADAPTER_COLUMNS:
            raise gr.Error(f"Compare shows at most {ADAPTER_COLUMNS} adapters at once: untick one.")
        messages = H.to_messages([H.user(text)], system=system_prompt)
        cancel = threading.Event()
        try:  # each turn is checked as it is made (one request per backend counts against the session's limit)
            turns = [
                run_turn(
                    self.runtime,
                    TurnRequest(
                        i,
                        messages,
                        {
                            "max_new_tokens": int(max_new),
                            "temperature": float(temp),
                            **compare_probs.params(token_probs),
                        },
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
        labels = self.labels_now()
        cols = [Column(i, labels.get(i, i)) for i in picked]
        events: queue.Queue[tuple[int, Event | None]] = queue.Queue()
        for k, (col, turn) in enumerate(zip(cols, turns)):
            threading.Thread(
                target=_worker, name=f"compare-{col.option_id}", daemon=True, args=(k, turn, events)
            ).start()
        t0 = time.perf_counter()
        try:
            with self.stops.running(request.session_hash if request else None, cancel):
                yield self._frame(cols, t0)
                last = time.perf_counter()
                unfinished: list[Column] | None = None
                while any(col.phase in ("waiting", "streaming") for col in cols):
                    if unfinished is None and cancel.is_set():  # Stop: the columns still answering now
                        unfinished = [col for col in cols if col.phase in ("waiting", "streaming")]
                    _drain(events, cols, UPDATE_EVERY_S)
                    if time.perf_counter() - last >= UPDATE_EVERY_S:
                        last = time.perf_counter()
                        yield self._frame(cols, t0)  # also a point where Gradio may close this generator
            for col in unfinished or ():  # they say they were stopped (not how their backend took it)
                col.stop()
            yield self._frame(cols, t0, final=True, stopped=any(col.phase == "stopped" for col in cols))
        finally:
            cancel.set()  # the end, or Gradio closed the generator: every backend still working stops

    def stop(self, request: gr.Request) -> None:
        """Stop this session's running comparison: each backend stops, the run ends with what came."""
        self.stops.stop(request.session_hash if request else None)

    def _frame(self, cols: list[Column], t0: float, final: bool = False, stopped: bool = False) -> dict[Any, Any]:
        """Every column's text, the table, both charts and the status line, as they stand now."""
        boxes = self.boxes([col.option_id for col in cols])
        ttft, tps = plot_frames(cols)
        running = sum(col.phase in ("waiting", "streaming") for col in cols)
        elapsed = time.perf_counter() - t0
        if stopped:
            line = f"Stopped after {elapsed:.1f} s."
        elif final:
            line = f"Done in {elapsed:.1f} s."
        else:
            line = f"Running… {running} of {len(cols)} still answering ({elapsed:.0f} s)"
        texts = {boxes[col.option_id]: column_text(col) for col in cols}
        return {
            **dict.fromkeys(self.answers, ""),
            **texts,
            self.table: table_frame(cols, self.prices),
            self.ttft_plot: ttft,
            self.tps_plot: tps,
            self.status: line,
        }

    def keep(self, prompt: str, system: str, selected: list[str] | None, *shown: Any) -> dict[str, Any]:
        """What to keep in the browser after a run: the prompt and the results on screen (``shown``: each
        answer box, then the metrics table and the status line)."""
        n = len(self.answers)
        table, status = shown[n], shown[n + 1]
        texts = dict(zip(self.answers, shown[:n]))
        answers = {i: texts[md] for i, md in self.boxes(selected).items()}
        return kept_results(prompt, system, selected, answers, table, status)

    def restore(self, saved: Any) -> dict[Any, Any]:
        """When the page (re)loads: show the last run kept in this browser, if any."""
        known = self.labels_now()  # an adapter deleted since is left out
        kept = restored_results(saved, list(known))
        if kept is None:
            return dict.fromkeys([*self.restored, self.status], gr.skip())
        ttft, tps = table_plots(kept["table"])
        boxes = self.boxes(kept["selected"])
        return {
            self.prompt: kept["prompt"],
            self.system: kept["system"],
            # The choices too: this page may not list an adapter saved since the app started yet.
            self.backends: gr.CheckboxGroup(choices=backend_choices(self.runtime), value=kept["selected"]),
            **dict.fromkeys(self.answers, ""),
            **{md: kept["answers"].get(i, "") for i, md in boxes.items()},
            self.table: kept["table"],
            self.ttft_plot: ttft,
            self.tps_plot: tps,
            self.status: kept["status"],
        }

    @property
    def restored(self) -> list[Any]:
        """The outputs of :meth:`restore`."""
        return [self.prompt, self.system, self.backends, *self.answers, self.table, self.ttft_plot, self.tps_plot]

    def show_columns(self, selected: list[str] | None) -> dict[Any, Any]:
        """Show the ticked backends' columns; an adapter's column gets the adapter's name as its title."""
        boxes = self.boxes(selected)
        adapters = [i for i in boxes if i not in self.labels]  # in the order of their columns
        labels = self.labels_now() if adapters else self.labels
        titles = [f"**{labels.get(i, i)}**" for i in adapters] + [""] * (len(self.titles) - len(adapters))
        shown = set(boxes.values())
        return {
            **{c: gr.Column(visible=md in shown) for md, c in zip(self.answers, self.columns)},
            **dict(zip(self.titles, titles)),
        }

    def tick_session_key(self, key: str | None, selected: list[str] | None) -> Any:
        """When this session gets a key, tick the hosted backends it makes usable."""
        sel = list(selected or [])
        added = [i for i in self.ids if i not in sel and not uses_local_model(i) and is_usable(self.runtime, i, key)]
        # In the order of the options, then the ticked adapters in the order they were ticked (their columns).
        return gr.skip() if not added else [i for i in self.ids if i in sel or i in added] + self.adapters_in(sel)


def _drain(events: queue.Queue[tuple[int, Event | None]], cols: list[Column], wait_s: float) -> None:
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
        ui.titles,
        ui.table,
        ui.ttft_plot,
        ui.tps_plot,
        ui.status,
        ui.prompt,
        ui.system,
        ui.backends,
    )
    wire(tab, ui, session)


def wire(tab: CompareTab, ui: CompareLayout, session: SessionState) -> None:
    """Connect the Compare tab's events (run, stop, ticking backends, a new session key) to ``tab``'s handlers."""
    backends = ui.backends
    run = gr.on(
        [ui.run_btn.click, ui.prompt.submit],
        tab.run,
        inputs=[ui.prompt, ui.system, ui.max_tokens, ui.temperature, backends, session.api_key, ui.token_probs],
        outputs=tab.outputs,
        api_name="compare_run",
        show_progress="minimal",
        show_progress_on=[ui.status],
        **gradio_lane("compare"),
    )
    # Stop asks the run to stop (it ends itself, tagging the unfinished answers), rather than Gradio's cancels=.
    ui.stop_btn.click(tab.stop, None, None, api_visibility="private", queue=False, show_progress="hidden")
    backends.change(
        tab.show_columns,
        backends,
        [*ui.columns, *ui.titles],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    session.api_key.change(
        tab.tick_session_key,
        [session.api_key, backends],
        backends,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    compare_probs.wire(run, remember(tab, run, session), ui.table, ui.probs_plot)


def remember(tab: CompareTab, run: Any, session: SessionState) -> Any:
    """Keep the last prompt and results in this browser (after each run that started), and show them again
    when the page (re)loads. Only what is on screen is kept: never the session's key."""
    saved = remembered("compare", None)
    quiet: dict[str, Any] = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    shown = [*tab.answers, tab.table, tab.status]
    run.success(tab.keep, [tab.prompt, tab.system, tab.backends, *shown], [saved], **quiet)
    if session.page is None:
        return None
    return session.page.load(tab.restore, [saved], [*tab.restored, tab.status], **quiet)
