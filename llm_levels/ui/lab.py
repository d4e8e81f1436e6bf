"""The Lab tab: zero-, one- and few-shot classification of a labelled file with any backend, scored and plotted.

A user uploads a labelled file (CSV/TSV, JSONL or Financial PhraseBank lines) or uses the demo set that
ships with the project, picks the shot counts, the backend, the method (``score`` = compare label
log-likelihoods with the local model on the transformers engine; ``generate`` = parse a free-text answer,
any backend) and the prompt template (the seed article's verbatim, or better ones), and runs. While it
runs: a progress bar with the rows done, the speed and the time left; after each batch: the metrics
table, accuracy / F1 per k, the confusion matrix and per-class scores of the latest run. Stop ends the
run and keeps the rows done so far; the results download as JSON (metrics) and CSV (one line per row).

*generate* asks each prompt as one turn of the turn service (``llm_levels.turns.run_turn``), like Chat:
the local model's line, the session's key, its request limit (``REQUESTS_PER_MINUTE``: a run over the
limit waits, and says so, instead of failing) and one error message for every backend. *score* reads the
transformers engine's logits (:class:`~llm_levels.icl.scoring.LabelScorer`), loaded on first use.

Events (``api_name``): ``lab_run`` (in the tab's own Gradio lane), ``lab_stop``. Handlers are the methods
of :class:`LabTab` and return ``{component: value}`` updates.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import pandas as pd

from ..core import BackendError, GenParams, Message
from ..engine import TRANSFORMERS
from ..icl.data import FORMATS, LabelledData, load_demo, load_labelled
from ..icl.prompts import DEFAULT_TEMPLATE, TEMPLATES
from ..icl.runner import (
    CALIBRATIONS,
    METHODS,
    LabConfig,
    Progress,
    parse_shots,
    prepare_data,
    run_lab,
    save_results,
)
from ..runtime import LOCAL, AppRuntime
from ..turns import Event, Loading, Started, TurnRequest, Waiting, answer_text, run_turn
from ..web.gradio_compat import checked_slider
from .lab_chart import chart_html
from .lab_view import (
    LAB_TABLE_HEADERS,
    confusion_frame,
    examples_text,
    per_class_frame,
    results_frame,
    status_text,
)
from .shared import backend_choices, lane, short_label, wait_title

log = logging.getLogger(__name__)

ABOUT = """
**In-context learning.** A model can learn a task from the prompt alone: zero-shot (just the
instruction), one-shot or few-shot (a few labelled examples first). This lab measures it on a labelled
file. *score* asks the local model how likely each label word is after the prompt (always a valid label,
one batched pass); *generate* lets any backend answer in free text and reads the label out of it (answers
with no label count as invalid). The seed article ran Flan-T5 on the Financial PhraseBank this way:
accuracy 0.45 (zero-shot) and 0.49 (one-shot), weighted F1 0.40 and 0.44.
"""

Updates = dict[Any, Any]


@dataclass
class LabRun:
    """A session's current lab run, shared by the run and Stop events (lives in the session's gr.State)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    source: str = ""
    backend: str = ""
    config: LabConfig | None = None
    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    def save(self) -> list[str]:
        """Write the results JSON and the per-row CSV into a new folder (Stop and the run's end may both save
        at once); their paths."""
        if self.progress is None or not self.progress.runs:
            return []
        folder = tempfile.mkdtemp(prefix="llm-levels-lab-")
        self.folders.append(folder)
        j, c = save_results(
            self.progress.runs, folder, source=self.source, backend=self.backend, model=self.backend, config=self.config
        )
        self.files = [str(j), str(c)]
        return self.files

    @staticmethod
    def discard(run: LabRun | None) -> None:
        """The session's value expired (``gr.State`` delete callback): stop the run, remove its files
        (the page was served copies of them, from Gradio's own cache)."""
        if run is not None:
            run.cancel.set()
            for folder in run.folders:
                shutil.rmtree(folder, ignore_errors=True)


@dataclass
class LabTab:
    """The Lab tab's output components and its event handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    status: gr.Markdown
    table: gr.Dataframe
    plot: gr.HTML
    confusion: gr.Dataframe
    per_class: gr.Dataframe
    files: gr.File
    examples_md: gr.Markdown
    holder: gr.State

    @property
    def outputs(self) -> list[Any]:
        """The API outputs of ``lab_run`` and ``lab_stop``, in order (the holder comes after them)."""
        return [self.status, self.table, self.plot, self.confusion, self.per_class, self.files, self.examples_md]

    def run(
        self,
        upload: str | None,
        fmt_v: str,
        backend_id: str,
        method_v: str,
        template_v: str,
        shots_v: str,
        limit_v: float | None,
        seed_v: float | None,
        calibrate_v: str,
        max_new_v: float,
        api_key: str | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> Iterator[Updates]:
        """Run the lab on the upload (or the demo set); the tables and chart refresh after each batch."""
        try:  # checked before anything on screen changes: a bad setting loses nothing
            config = LabConfig(
                shots=parse_shots(shots_v or ""),
                method=method_v,
                template=template_v,
                limit=int(limit_v) if limit_v else None,
                seed=int(seed_v or 0),
                max_new_tokens=int(max_new_v or 10),
                calibrate=calibrate_v or "batch",
            )
            if method_v == "score" and self.runtime.engine_of(backend_id) is None:
                raise BackendError(
                    "The score method reads the local model's probabilities: pick the local model, "
                    "or use generate for a hosted backend.",
                    kind="bad_request",
                )
            data, pool = (load_labelled(upload, fmt_v or "auto"), None) if upload else load_demo()
            rows, pool_rows = prepare_data(data, pool, config)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        state = LabRun(source=data.source, config=config)
        notes = f"⚠️ {data.problem_summary()}\n\n" if data.problems else ""
        yield {self.status: notes + "⏳ Getting the backend ready…", self.holder: state}
        try:
            steps = self._steps(state, rows, pool_rows, data, backend_id, api_key, request, progress)
            for p in steps:
                state.progress = p
                progress(p.fraction, desc=p.describe())
                if p.finished or p.stopped:
                    state.save()
                yield {**self.view(state, notes), self.holder: state}
        except BackendError as e:
            if state.progress is not None and state.progress.runs:
                state.save()
                yield {
                    **self.view(state, notes, prefix=f"❌ {e} — the rows done so far are below."),
                    self.holder: state,
                }
            else:
                yield {self.status: f"{notes}❌ {e}", self.holder: state}

    def _steps(
        self,
        state: LabRun,
        rows: list,
        pool_rows: list,
        data: LabelledData,
        backend_id: str,
        api_key: str | None,
        request: gr.Request | None,
        progress: gr.Progress,
    ) -> Iterator[Progress]:
        """The run's progress: scored on the transformers engine, or asked turn by turn."""
        config = state.config
        assert config is not None
        if config.method == "score":
            from ..icl.scoring import LabelScorer

            loaded = self.runtime.models.get(  # a saved adapter's option scores that adapter, not the base
                self.runtime.spec_of(backend_id),
                engine=TRANSFORMERS,
                progress=lambda f, m: progress(f, desc=f"Loading the transformers engine: {m}"),
            )
            scorer = LabelScorer(loaded, slots=self.runtime.line(TRANSFORMERS))
            state.backend = f"local · {loaded.display_name} · {TRANSFORMERS}"
            return run_lab(rows, pool_rows, data.labels, config, scorer=scorer, cancel=state.cancel)
        single_turn = False
        engine = self.runtime.engine_of(backend_id)
        state.backend = short_label(backend_id)
        if engine is not None:  # a model without a chat template gets one-message prompts: load it to know
            loaded = self.runtime.models.get(
                self.runtime.spec_of(backend_id),
                engine=engine,
                progress=lambda f, m: progress(f, desc=f"Loading the local model: {m}"),
            )
            single_turn = bool(getattr(loaded, "is_seq2seq", False))
            state.backend = f"local · {loaded.display_name} · {engine}"
        # A Lab run counts once against the session's request limit (here); its rows are one run's work.
        self.runtime.rate_limiter.check(request.session_hash if request else None)
        ask = SessionAsk(self.runtime, backend_id, state, api_key=api_key, session_id=None, progress=progress)
        return run_lab(rows, pool_rows, data.labels, config, ask=ask, single_turn=single_turn, cancel=state.cancel)

    def stop(self, state: LabRun | None) -> Updates:
        """Stop the run; keep (and save) the rows done so far."""
        if state is None or state.progress is None:
            if state is not None:
                state.cancel.set()
            return {self.status: "Stopped before any row was done."}
        state.cancel.set()
        p = state.progress
        state.progress = Progress(p.done, p.total, p.elapsed_s, p.runs, finished=p.finished, stopped=not p.finished)
        state.save()
        return self.view(state, "")

    def view(self, state: LabRun, notes: str, prefix: str = "") -> Updates:
        """Every output for the run so far: status and bar, table, chart, the latest run's details, files."""
        p = state.progress
        assert p is not None
        runs = p.runs
        what = state.backend  # the method and template are named here, not in every line of the table
        if state.config is not None:
            what += f" · {state.config.method} · template {state.config.template}"
        out = {
            self.status: status_text(p, what, notes, prefix),
            self.table: results_frame(runs),
            self.plot: chart_html(runs),
            self.confusion: pd.DataFrame(),
            self.per_class: pd.DataFrame(),
            self.examples_md: "",
        }
        if state.files:
            out[self.files] = state.files
        if runs:
            last = runs[-1]
            out.update(
                {
                    self.confusion: confusion_frame(last),
                    self.per_class: per_class_frame(last),
                    self.examples_md: examples_text(last),
                }
            )
        return out


class SessionAsk:
    """The generate method's ``ask(messages, params) -> str`` for one Lab run: each prompt is one turn of the
    turn service, for this session (its key, its request limit). What a turn waits for (the model, the line,
    the limit) shows in the progress bar; Stop (``state.cancel``) ends the turn, or the wait, at once."""

    def __init__(
        self,
        runtime: AppRuntime,
        option_id: str,
        state: LabRun,
        *,
        api_key: str | None,
        session_id: str | None,
        progress: Any,
    ) -> None:
        self.runtime, self.option_id, self.state, self.progress = runtime, option_id, state, progress
        self.api_key, self.session_id = api_key, session_id

    def _say(self, text: str) -> None:
        p = self.state.progress
        self.progress(p.fraction if p is not None else None, desc=text)

    def __call__(self, messages: list[Message], params: GenParams) -> str:
        events = run_turn(
            self.runtime,
            TurnRequest(self.option_id, messages, params, session_id=self.session_id, api_key=self.api_key),
            cancel=self.state.cancel,
        )
        return answer_text(events, self._show)

    def _show(self, event: Event) -> None:
        """What a row's turn is waiting for (the model, the line) in the progress bar; the backend's name."""
        if isinstance(event, Started) and not self.state.backend.startswith("local"):
            self.state.backend = event.name
        elif isinstance(event, (Loading, Waiting)):
            self._say(wait_title(event))


def build(runtime: AppRuntime, session: Any) -> LabTab:
    """Build the Lab tab inside the current ``gr.Tab``."""
    with gr.Accordion("About the lab", open=False):
        gr.Markdown(ABOUT)
    # The session's run: emptied (and its run stopped, its files removed) once unused for SESSION_IDLE_TTL_S.
    holder = gr.State(None, time_to_live=runtime.settings.session_idle_ttl_s, delete_callback=LabRun.discard)
    with gr.Row():
        with gr.Column(scale=2):
            data_file = gr.File(
                label="Labelled file (empty = the demo set: 150 financial-news sentences)",
                file_types=[".csv", ".tsv", ".jsonl", ".json", ".txt"],
                type="filepath",
            )
            fmt = gr.Dropdown(
                list(FORMATS),
                value="auto",
                label="Format",
                info="csv/tsv: text + label columns · jsonl · phrasebank: sentence@label (Latin-1)",
            )
            backend = gr.Dropdown(backend_choices(runtime), value=LOCAL, label="Backend", elem_id="lab-backend")
            method = gr.Radio(
                list(METHODS),
                value="score",
                label="Method",
                info="score: label log-likelihoods (local model only) · generate: parse an answer",
            )
            template = gr.Dropdown(
                [(t.title, t.name) for t in TEMPLATES.values()], value=DEFAULT_TEMPLATE, label="Prompt template"
            )
            shots = gr.Textbox("0,1,3", label="Shots (k)", info="Comma-separated, e.g. 0,1,3,5", elem_id="lab-shots")
            with gr.Row():
                limit = gr.Number(0, label="Rows (0 = all)", precision=0, minimum=0, elem_id="lab-limit")
                seed = gr.Number(0, label="Seed", precision=0)
            with gr.Row():
                calibrate = gr.Dropdown(
                    list(CALIBRATIONS),
                    value="batch",
                    label="Calibration (score)",
                    info="batch: subtract each label's mean score over the rows · "
                    "content-free: subtract the scores for 'N/A' · none",
                )
                max_new = checked_slider(1, 64, value=10, step=1, label="max_new_tokens (generate)")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="lab-run")
                stop_btn = gr.Button("Stop", variant="stop")
        with gr.Column(scale=3):
            status = gr.Markdown("Pick a file (or keep the demo set) and press **Run**.", elem_id="lab-status")
            table = gr.Dataframe(
                pd.DataFrame(columns=LAB_TABLE_HEADERS), label="Results per k", interactive=False, elem_id="lab-table"
            )
            # Grouped bars in SVG (lab_chart.py): whole-number k, three metrics side by side, one k readable.
            plot = gr.HTML(chart_html([]), elem_id="lab-chart", container=True, padding=True)
            # One under the other, each the column's full width: side by side they were cut off.
            confusion = gr.Dataframe(
                pd.DataFrame(),
                label="Confusion matrix (latest run; rows = gold)",
                interactive=False,
                elem_id="lab-confusion",
            )
            per_class = gr.Dataframe(
                pd.DataFrame(), label="Per class (latest run)", interactive=False, elem_id="lab-per-class"
            )
            files = gr.File(label="Download: results JSON + per-row CSV", file_count="multiple", interactive=False)
            examples_md = gr.Markdown("")

    tab = LabTab(runtime, status, table, plot, confusion, per_class, files, examples_md, holder)
    inputs = [data_file, fmt, backend, method, template, shots, limit, seed, calibrate, max_new, session.api_key]
    ev = run_btn.click(tab.run, inputs, tab.outputs + [holder], api_name="lab_run", **lane("lab"))
    stop_btn.click(tab.stop, [holder], tab.outputs, cancels=[ev], api_name="lab_stop", queue=False)
    return tab
