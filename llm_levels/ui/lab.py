"""The Lab tab: zero-, one- and few-shot classification of a labelled file with any backend, scored and plotted.

A user uploads a labelled file (CSV/TSV, JSONL or Financial PhraseBank lines) or uses the demo set that
ships with the project, picks the shot counts, the backend, the method (``score`` = compare label
log-likelihoods with the local model; ``generate`` = parse a free-text answer, any backend) and the prompt
template (the seed article's verbatim, or better ones), and runs. While it runs: a progress bar with the
rows done, the speed and the time left; after each batch: the metrics table, accuracy / F1 vs k, the
confusion matrix and per-class scores of the latest run. Stop ends the run and keeps the rows done so far;
the results download as JSON (metrics) and CSV (one line per evaluated row).

Events (``api_name``): ``lab_run`` (in the tab's own Gradio lane; with the local model each batch or row
waits for its turn in the app's line for the model, ``runtime.local_slots``), ``lab_stop``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import gradio as gr
import pandas as pd

from ..core import BackendError
from ..icl.data import FORMATS, load_demo, load_labelled
from ..icl.metrics import INVALID
from ..icl.prompts import DEFAULT_TEMPLATE, TEMPLATES
from ..icl.runner import (CALIBRATIONS, METHODS, TABLE_HEADERS, LabConfig, Progress, RunResult, parse_shots, prepare_data,
                          results_table, run_lab, save_results)
from ..engine import TRANSFORMERS
from ..runtime import LOCAL, AppRuntime
from .shared import backend_choices, lane

log = logging.getLogger(__name__)

ABOUT = """
**In-context learning.** A model can learn a task from the prompt alone: zero-shot (just the
instruction), one-shot or few-shot (a few labelled examples first). This lab measures it on a labelled
file. *score* asks the local model how likely each label word is after the prompt (always a valid label,
one batched pass); *generate* lets any backend answer in free text and reads the label out of it (answers
with no label count as invalid). The seed article ran Flan-T5 on the Financial PhraseBank this way:
accuracy 0.45 (zero-shot) and 0.49 (one-shot), weighted F1 0.40 and 0.44.
"""

PLOT_COLUMNS = ["k", "score", "metric"]  # starts empty (None): an empty initial frame would keep the plot blank


def _plot_frame(rows: list[list]) -> pd.DataFrame:
    """The accuracy-vs-k plot's data with typed columns even when empty: in Gradio 6.31 a plot that once
    got an untyped empty frame never draws later data."""
    return pd.DataFrame({"k": pd.Series([r[0] for r in rows], dtype=int),
                         "score": pd.Series([r[1] for r in rows], dtype=float),
                         "metric": pd.Series([r[2] for r in rows], dtype=str)})


@dataclass
class LabRun:
    """A session's current lab run, shared by the run and Stop events (lives in the session's gr.State)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    source: str = ""
    backend: str = ""
    config: LabConfig | None = None
    files: list[str] = field(default_factory=list)


def build(runtime: AppRuntime, session: Any) -> None:
    """Build the Lab tab inside the current ``gr.Tab``."""
    with gr.Accordion("About the lab", open=False):
        gr.Markdown(ABOUT)
    holder = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            data_file = gr.File(label="Labelled file (empty = the demo set: 150 financial-news sentences)",
                                file_types=[".csv", ".tsv", ".jsonl", ".json", ".txt"], type="filepath")
            fmt = gr.Dropdown(list(FORMATS), value="auto", label="Format",
                              info="csv/tsv: text + label columns · jsonl · phrasebank: sentence@label (Latin-1)")
            backend = gr.Dropdown(backend_choices(runtime), value=LOCAL, label="Backend")
            method = gr.Radio(list(METHODS), value="score", label="Method",
                              info="score: label log-likelihoods (local model only) · generate: parse an answer")
            template = gr.Dropdown([(t.title, t.name) for t in TEMPLATES.values()], value=DEFAULT_TEMPLATE,
                                   label="Prompt template")
            shots = gr.Textbox("0,1,3", label="Shots (k)", info="Comma-separated, e.g. 0,1,3,5", elem_id="lab-shots")
            with gr.Row():
                limit = gr.Number(0, label="Rows (0 = all)", precision=0, minimum=0, elem_id="lab-limit")
                seed = gr.Number(0, label="Seed", precision=0)
            with gr.Row():
                calibrate = gr.Dropdown(list(CALIBRATIONS), value="batch", label="Calibration (score)",
                                        info="batch: subtract each label's mean score over the rows · "
                                             "content-free: subtract the scores for 'N/A' · none")
                max_new = gr.Slider(1, 64, value=10, step=1, label="max_new_tokens (generate)")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="lab-run")
                stop_btn = gr.Button("Stop", variant="stop")
        with gr.Column(scale=3):
            status = gr.Markdown("Pick a file (or keep the demo set) and press **Run**.", elem_id="lab-status")
            table = gr.Dataframe(pd.DataFrame(columns=TABLE_HEADERS), label="Results per k", interactive=False,
                                 elem_id="lab-table")
            plot = gr.LinePlot(None, x="k", y="score", color="metric",
                               title="Accuracy and F1 vs number of shots (k)", y_lim=[0, 1], height=280)
            with gr.Row():
                confusion = gr.Dataframe(pd.DataFrame(), label="Confusion matrix (latest run; rows = gold)",
                                         interactive=False)
                per_class = gr.Dataframe(pd.DataFrame(), label="Per class (latest run)", interactive=False)
            files = gr.File(label="Download: results JSON + per-row CSV", file_count="multiple", interactive=False)
            examples_md = gr.Markdown("")

    # ------------------------------------------------------------------ handlers
    def run(upload: str | None, fmt_v: str, backend_id: str, method_v: str, template_v: str, shots_v: str,
            limit_v: float | None, seed_v: float | None, calibrate_v: str, max_new_v: float, api_key: str | None,
            progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
        """Run the lab; yields (status, table, plot, confusion, per-class, files, examples, holder)."""
        try:
            config = LabConfig(shots=parse_shots(shots_v or ""), method=method_v, template=template_v,
                               limit=int(limit_v) if limit_v else None, seed=int(seed_v or 0),
                               max_new_tokens=int(max_new_v or 10), calibrate=calibrate_v or "batch")
            if method_v == "score" and runtime.engine_of(backend_id) is None:
                raise BackendError("The score method reads the local model's probabilities: pick the local model, "
                                   "or use generate for a hosted backend.", kind="bad_request")
            if upload:
                data, pool = load_labelled(upload, fmt_v or "auto"), None
            else:
                data, pool = load_demo()
            rows, pool_rows = prepare_data(data, pool, config)
        except BackendError as e:
            raise gr.Error(str(e)) from e  # input validation: nothing on screen is lost
        state = LabRun(source=data.source, config=config)
        notes = f"⚠️ {data.problem_summary()}\n\n" if data.problems else ""
        skip = gr.skip()
        yield (notes + "⏳ Getting the backend ready…",) + (skip,) * 6 + (state,)
        try:
            be = scorer = None
            if method_v == "score":
                from ..icl.scoring import LabelScorer

                # Scoring reads the model's logits: always the transformers engine (loaded on first use,
                # with its progress shown here).
                loaded = runtime.models.get(engine=TRANSFORMERS, progress=lambda f, m: progress(
                    f, desc=f"Loading the transformers engine: {m}"))
                scorer = LabelScorer(loaded, slots=runtime.line(TRANSFORMERS))
                state.backend = f"local · {loaded.display_name} · {TRANSFORMERS}"
            else:
                be = runtime.backend(backend_id, api_key=api_key)
                state.backend = be.name
            for p in run_lab(rows, pool_rows, data.labels, config, backend=be, scorer=scorer, cancel=state.cancel):
                state.progress = p
                progress(p.fraction, desc=p.describe())
                if p.finished or p.stopped:
                    state.files = _save(state)
                yield _view(state, notes) + (state,)
        except BackendError as e:
            msg = f"❌ {e}"
            if state.progress is not None and state.progress.runs:
                state.files = _save(state)
                yield _view(state, notes, prefix=msg + " — the rows done so far are below.") + (state,)
            else:
                yield (notes + msg,) + (skip,) * 6 + (state,)

    def stop(state: LabRun | None) -> tuple:
        """Stop the run; keep (and save) the rows done so far."""
        if state is None or state.progress is None:
            if state is not None:
                state.cancel.set()
            return ("Stopped before any row was done.",) + (gr.skip(),) * 6
        state.cancel.set()
        p = state.progress
        state.progress = Progress(p.done, p.total, p.elapsed_s, p.runs, finished=p.finished, stopped=not p.finished)
        state.files = _save(state)
        return _view(state, "")

    outputs = [status, table, plot, confusion, per_class, files, examples_md]
    ev = run_btn.click(run, [data_file, fmt, backend, method, template, shots, limit, seed, calibrate, max_new,
                             session.api_key], outputs + [holder], api_name="lab_run", **lane("lab"))
    stop_btn.click(stop, [holder], outputs, cancels=[ev], api_name="lab_stop", queue=False)


def _save(state: LabRun) -> list[str]:
    if state.progress is None or not state.progress.runs:
        return []
    folder = tempfile.mkdtemp(prefix="llm-levels-lab-")
    j, c = save_results(state.progress.runs, folder, source=state.source, backend=state.backend,
                        model=state.backend, config=state.config)
    return [str(j), str(c)]


def _view(state: LabRun, notes: str, prefix: str = "") -> tuple:
    p = state.progress
    assert p is not None
    runs = p.runs
    pct = p.fraction * 100
    head = prefix or ("✅ Done" if p.finished else "⏹ Stopped: the rows done so far are kept" if p.stopped else "⏳ Running")
    bar = (f'<div style="height:10px;border-radius:5px;background:var(--neutral-200);overflow:hidden">'
           f'<div style="width:{pct:.1f}%;height:100%;background:var(--color-accent)"></div></div>')
    status = f"{notes}**{head}** · {state.backend} · {p.describe()}\n\n{bar}"
    table = pd.DataFrame(results_table(runs), columns=TABLE_HEADERS)
    plot_rows = []
    for r in runs:
        m = r.metrics
        if m.n:
            plot_rows += [[r.shots, m.accuracy, "accuracy"], [r.shots, m.weighted_f1, "weighted F1"],
                          [r.shots, m.macro_f1, "macro F1"]]
    plot = _plot_frame(plot_rows)
    last = runs[-1] if runs else None
    conf, pc, ex = pd.DataFrame(), pd.DataFrame(), ""
    if last is not None:
        m = last.metrics
        conf = pd.DataFrame([[lab] + row for lab, row in zip(m.labels, m.confusion)],
                            columns=["gold \\ predicted"] + m.confusion_columns)
        if not m.n_invalid:
            conf = conf.drop(columns=[INVALID])
        pc = pd.DataFrame([[lab, round(s.precision, 3), round(s.recall, 3), round(s.f1, 3), s.support]
                           for lab, s in m.per_class.items()], columns=["label", "precision", "recall", "F1", "support"])
        ex = _examples_text(last)
    return status, table, plot, conf, pc, (state.files or gr.skip()), ex


def _examples_text(run: RunResult) -> str:
    if not run.examples:
        return f"**k={run.shots}**: no examples (zero-shot)."
    lines = [f"**k={run.shots}** examples (from the pool, never evaluated):"]
    lines += [f"- *{e.label}*: {e.text}" for e in run.examples]
    return "\n".join(lines)
