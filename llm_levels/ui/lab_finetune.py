"""The Lab's fine-tune panel: train LoRA adapters on labelled rows, score them like the prompting methods, and
draw the learning curve (prompting at k examples beside fine-tuning on n).

Training runs in a worker thread on the transformers engine (:mod:`llm_levels.finetune`); the handler polls it
and redraws the status bar and the loss line twice a second. Each step and evaluation batch holds a place in
the transformers engine's line, so a chat on that engine interleaves with it, and llama.cpp (the default
engine) keeps answering meanwhile. Stop sets the run's ``cancel`` event: it ends between two steps and nothing
half-written is kept (the core saves an adapter atomically, and only a finished one).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import pandas as pd

from ..core import BackendError
from ..engine import TRANSFORMERS
from ..runtime import ADAPTER_OPTION_PREFIX, AppRuntime
from .lab_chart import chart_html
from .lab_view import LAB_TABLE_HEADERS, confusion_frame, per_class_frame, results_frame

Updates = dict[Any, Any]
#: Seconds between two redraws of a running fine-tune.
POLL_S = 0.5
#: Gradio lane of fine-tunes and learning curves: one at a time in the whole app (they fill the CPU).
LANE = {"concurrency_id": "lab-finetune", "concurrency_limit": 1}

ABOUT = """Beyond a handful of examples, putting more of them in the prompt stops paying; **training** on them
does. This trains small low-rank adapters (LoRA) on the top layers of the local model (transformers engine)
and scores the result on rows it never saw, with the same metrics as the prompting methods. Default data:
the demo set's training split; evaluated: its evaluation split (never trained on)."""


@dataclass
class Job:
    """One fine-tune or learning curve of a session: its Stop, what it reports, its result."""

    cancel: threading.Event = field(default_factory=threading.Event)
    text: str = "⏳ Starting…"
    fraction: float = 0.0
    losses: list[float] = field(default_factory=list)
    points: tuple[Any, ...] = ()
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, work: Callable[[Job], Any]) -> None:
        """Run ``work(self)`` in a daemon thread; its result or error is kept."""

        def run() -> None:
            try:
                self.result = work(self)
            except BaseException as e:  # noqa: BLE001 - shown by the handler's thread
                self.error = e
            finally:
                self.done.set()

        threading.Thread(target=run, name="lab-finetune", daemon=True).start()

    @staticmethod
    def discard(job: Job | None) -> None:
        """Stop a session's job when its state is dropped."""
        if job is not None:
            job.cancel.set()


def bar_html(fraction: float) -> str:
    """A thin progress bar (the Lab's look)."""
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div style="height:10px;border-radius:5px;background:var(--neutral-200);overflow:hidden">'
        f'<div style="width:{pct:.1f}%;height:100%;background:var(--color-accent)"></div></div>'
    )


def loss_frame(losses: list[float]) -> pd.DataFrame:
    """The training loss after every optimiser step, for the live line."""
    return pd.DataFrame({"step": range(1, len(losses) + 1), "loss": [round(x, 4) for x in losses]}).astype(
        {"step": "int64", "loss": "float64"}
    )


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """``"0,1,3"`` -> (0, 1, 3); a gr.Error naming ``what`` for anything but whole numbers >= 0."""
    try:
        out = tuple(int(t) for t in (text or "").replace(" ", "").split(",") if t)
    except ValueError:
        out = ()
    if not out or any(n < 0 for n in out):
        raise gr.Error(f"{what}: whole numbers separated by commas, e.g. 0,1,3.")
    return out


def load_sets(upload: str | None, eval_limit: Any, seed: int) -> tuple[Any, list[Any], tuple[str, ...]]:
    """(training data, evaluated rows, labels): an uploaded training file or the demo set's training split;
    always evaluated on the demo set's evaluation split (``eval_limit`` rows, 0 = all)."""
    from ..finetune import demo_split
    from ..icl.data import load_labelled, sample_eval

    train, evaluated = demo_split(seed)
    if upload:
        train = load_labelled(upload, "auto")
    rows = sample_eval(evaluated.examples, int(eval_limit or 0) or None, seed)
    return train, rows, tuple(evaluated.labels)


class FinetunePanel:
    """The panel's components and handlers (each returns ``{component: value}``)."""

    def __init__(self, runtime: AppRuntime, c: dict[str, Any]) -> None:
        self.runtime = runtime
        self.c = c

    def _model(self, job: Job) -> Any:
        """The local model on the transformers engine (loaded now if needed, shown in the status)."""

        def show(f: float, m: str) -> None:
            job.text = f"⏳ Loading the transformers engine: {m}"

        return self.runtime.models.get(engine=TRANSFORMERS, progress=show)

    def _poll(self, job: Job, draw: Callable[[Job], Updates]) -> Iterator[Updates]:
        """Redraw while ``job`` runs; stop it if the page goes away (the generator is closed)."""
        try:
            while not job.done.wait(POLL_S):
                yield draw(job)
        finally:
            if not job.done.is_set():
                job.cancel.set()

    def train(
        self, upload: Any, examples: Any, epochs: Any, eval_limit: Any, seed: Any, name: str, save: bool
    ) -> Iterator[Updates]:
        """Fine-tune, then show the metrics, confusion matrix and chart; save the adapter when asked."""
        from ..finetune import FinetuneConfig, adapters_root, default_name, run_finetune

        c = self.c
        try:
            config = FinetuneConfig(
                examples=int(examples or 0) or None, epochs=int(epochs or FinetuneConfig.epochs), seed=int(seed or 0)
            )
            train, rows, labels = load_sets(upload, eval_limit, config.seed)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        job = Job()

        def work(job: Job) -> Any:
            loaded = self._model(job)
            save_as = ((name or "").strip() or default_name(loaded.display_name, labels)) if save else None

            def on_progress(p: Any) -> None:
                if p.phase == "training" and math.isfinite(p.loss):
                    job.losses.append(p.loss)
                job.text, job.fraction = f"⏳ {p.describe()}", p.fraction

            return run_finetune(
                loaded,
                train.examples,
                rows,
                labels,
                config,
                on_progress=on_progress,
                cancel=job.cancel,
                slots=self.runtime.line(TRANSFORMERS),
                save_as=save_as,
                adapters_dir=adapters_root(self.runtime.settings),
                train_source=train.source,
            )

        def draw(job: Job) -> Updates:
            return {c["status"]: f"{job.text}\n\n{bar_html(job.fraction)}", c["loss"]: loss_frame(job.losses)}

        job.start(work)
        yield {**draw(job), c["holder"]: job}
        yield from self._poll(job, draw)
        yield {**draw(job), **self._outcome(job)}

    def _outcome(self, job: Job) -> Updates:
        """The finished fine-tune: its metrics and where its adapter went, or why there is none."""
        c = self.c
        out = job.result
        if job.error is not None:
            return {c["status"]: f"❌ {job.error}"}
        if out is None or out.stopped:
            return {c["status"]: "⏹ Stopped: nothing was saved."}
        run = out.run
        t = out.train
        head = (
            f"✅ Fine-tuned on {t.examples} rows × {t.epochs} epochs ({t.train_s + t.encode_s:.1f} s), "
            f"evaluated on {run.total} rows: weighted F1 **{run.metrics.weighted_f1:.3f}**, "
            f"accuracy {run.metrics.accuracy:.3f}."
        )
        if out.dropped_overlap:
            head += f" {out.dropped_overlap} training rows were also evaluated rows: dropped."
        if out.adapter is not None:
            slug = out.adapter.slug
            head += (
                f"\n\nAdapter saved: **{out.adapter.name}**. Pick it now in Chat, Compare or the Lab "
                f"(`{ADAPTER_OPTION_PREFIX}{slug}`; pages opened before list it once reloaded), or type "
                f"`adapter:{slug}` in the Local tab's model box with the transformers engine."
            )
        return {
            c["status"]: head,
            c["table"]: results_frame([run]),
            c["chart"]: chart_html([run]),
            c["confusion"]: confusion_frame(run),
            c["per_class"]: per_class_frame(run),
        }

    def curve(
        self, upload: Any, epochs: Any, eval_limit: Any, seed: Any, shots_text: str, sizes_text: str
    ) -> Iterator[Updates]:
        """The learning curve, drawn point by point, with the article's reference lines."""
        from ..finetune import Curve, FinetuneConfig, curve_frame, learning_curve

        c = self.c
        shots, sizes = parse_ints(shots_text, "Shots"), parse_ints(sizes_text, "Training sizes")
        if not all(sizes):
            raise gr.Error("Training sizes: at least 1 example each.")
        try:
            config = FinetuneConfig(epochs=int(epochs or FinetuneConfig.epochs), seed=int(seed or 0))
            train, rows, labels = load_sets(upload, eval_limit, config.seed)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        job = Job()

        def work(job: Job) -> Any:
            loaded = self._model(job)

            def on_progress(p: Any) -> None:
                eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
                loss = f" · loss {p.loss:.3f}" if p.loss is not None else ""
                job.text, job.fraction, job.points = f"⏳ {p.stage}{eta}{loss}", p.fraction, p.points

            return learning_curve(
                loaded,
                train.examples,
                rows,
                labels,
                shots=shots,
                sizes=sizes,
                config=config,
                on_progress=on_progress,
                cancel=job.cancel,
                slots=self.runtime.line(TRANSFORMERS),
                train_source=train.source,
            )

        def draw(job: Job) -> Updates:
            frame = curve_frame(job.result if job.result is not None else Curve(points=list(job.points)))
            return {c["curve_status"]: f"{job.text}\n\n{bar_html(job.fraction)}", c["curve"]: frame}

        job.start(work)
        yield {**draw(job), c["holder"]: job}
        yield from self._poll(job, draw)
        if job.error is not None:
            yield {c["curve_status"]: f"❌ {job.error}"}
            return
        done = "⏹ Stopped: the points finished are shown." if job.result.stopped else "✅ Learning curve done."
        yield {**draw(job), c["curve_status"]: f"{done} Evaluated on {len(rows)} rows."}

    def stop(self, job: Job | None) -> None:
        """Stop the session's fine-tune or curve (between two steps); no output changes here."""
        if job is not None:
            job.cancel.set()


#: The backend pickers that offer saved adapters (their elem_ids): Chat's, the Lab's, Compare's boxes and its
#: "Sampling side by side" panel's.
PICKERS = ("chat-backend", "lab-backend", "compare-backends", "sampling-backend")
#: How the pickers' refresh runs: at once (no queue), unseen, not part of the app's API.
QUIET: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}


def backend_pickers(demo: gr.Blocks | None, elem_ids: tuple[str, ...] = PICKERS) -> list[Any]:
    """The pickers ``elem_ids`` built in ``demo`` so far (dropdowns and checkbox groups)."""
    blocks = demo.blocks.values() if demo is not None else ()
    return [b for b in blocks if isinstance(b, (gr.Dropdown, gr.CheckboxGroup)) and b.elem_id in elem_ids]


def picker_refresh(runtime: AppRuntime, pickers: list[Any]) -> Callable[[], Updates]:
    """A handler that re-reads the backend choices of ``pickers`` (each keeps its value): the adapters saved
    by now are offered."""
    from .shared import backend_choices

    def refresh() -> Updates:
        choices = backend_choices(runtime)
        return {p: type(p)(choices=choices) for p in pickers}

    return refresh


def refresh_pickers_on_load(demo: gr.Blocks, runtime: AppRuntime, elem_ids: tuple[str, ...] = PICKERS) -> None:
    """Re-read the backend choices of the pickers ``elem_ids`` when a page loads, so an adapter saved since the
    app started (on another page, say) is offered after a page reload."""
    pickers = backend_pickers(demo, elem_ids)
    if pickers:
        demo.load(picker_refresh(runtime, pickers), None, pickers, **QUIET)


def build(runtime: AppRuntime) -> FinetunePanel:
    """The fine-tune panel, inside the Lab tab (below the prompting methods)."""
    c: dict[str, Any] = {}
    with gr.Accordion("Fine-tune the local model (LoRA)", open=False, elem_id="ft-panel"):
        gr.Markdown(ABOUT)
        c["holder"] = gr.State(None, time_to_live=runtime.settings.session_idle_ttl_s, delete_callback=Job.discard)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(
                    label="Training file (empty = the demo set's training split)",
                    file_types=[".csv", ".tsv", ".jsonl", ".json", ".txt"],
                    type="filepath",
                )
                with gr.Row():
                    examples = gr.Number(128, label="Training examples", precision=0, minimum=1, elem_id="ft-examples")
                    epochs = gr.Number(5, label="Epochs", precision=0, minimum=1, maximum=50, elem_id="ft-epochs")
                with gr.Row():
                    eval_limit = gr.Number(
                        0, label="Rows evaluated (0 = all)", precision=0, minimum=0, elem_id="ft-eval"
                    )
                    seed = gr.Number(0, label="Seed", precision=0)
                name = gr.Textbox("", label="Adapter name (empty = 'SmolLM2 + financial-sentiment adapter')")
                save = gr.Checkbox(True, label="Save the adapter (then usable in Chat, Compare and the Local tab)")
                with gr.Row():
                    train_btn = gr.Button("Fine-tune", variant="primary", elem_id="ft-run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
            with gr.Column(scale=3):
                c["status"] = gr.Markdown("Press **Fine-tune**.", elem_id="ft-status")
                c["loss"] = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Training loss", elem_id="ft-loss")
                c["table"] = gr.Dataframe(
                    pd.DataFrame(columns=LAB_TABLE_HEADERS), label="Results", interactive=False, elem_id="ft-table"
                )
                c["chart"] = gr.HTML(chart_html([]), container=True, padding=True)
                c["confusion"] = gr.Dataframe(
                    pd.DataFrame(), label="Confusion matrix (rows = gold)", interactive=False, elem_id="ft-confusion"
                )
                c["per_class"] = gr.Dataframe(pd.DataFrame(), label="Per class", interactive=False)
        gr.Markdown(
            "**Learning curve**: weighted F1 against labelled examples, prompting (score) at k examples in the "
            "prompt beside fine-tuning on n; the article's Flan-T5 scores as reference lines. The full curve "
            "takes minutes: fewer rows or sizes make it quicker."
        )
        with gr.Row():
            shots = gr.Textbox("0,1,3,5", label="Prompting: k", elem_id="ft-shots")
            sizes = gr.Textbox("8,16,32,64,128", label="Fine-tuning: n", elem_id="ft-sizes")
            curve_btn = gr.Button("Draw the learning curve", elem_id="ft-curve-run")
        c["curve_status"] = gr.Markdown("", elem_id="ft-curve-status")
        c["curve"] = gr.LinePlot(
            pd.DataFrame({"examples": pd.Series(dtype="int64"), "weighted_f1": [], "series": []}),
            x="examples",
            y="weighted_f1",
            color="series",
            title="Weighted F1 vs labelled examples",
            y_lim=[0, 1],
            elem_id="ft-curve",
        )
    panel = FinetunePanel(runtime, c)
    outs = list(c.values())
    trained = train_btn.click(
        panel.train, [upload, examples, epochs, eval_limit, seed, name, save], outs, show_progress="hidden", **LANE
    )
    # An adapter just saved is offered at once by this page's pickers (built before this panel: Chat, Compare,
    # the Lab's); other pages offer it when they load (refresh_pickers_on_load).
    pickers = backend_pickers(gr.context.Context.root_block)
    if pickers:
        trained.then(picker_refresh(runtime, pickers), None, pickers, **QUIET)
    curve_btn.click(panel.curve, [upload, epochs, eval_limit, seed, shots, sizes], outs, show_progress="hidden", **LANE)
    # Stop sets the job's event only: the run ends between two steps and its handler shows "Stopped".
    stop_btn.click(panel.stop, [c["holder"]], None, queue=False)
    return panel
