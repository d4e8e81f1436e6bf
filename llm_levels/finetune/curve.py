"""The learning curve: weighted F1 against the number of labelled examples, prompting beside fine-tuning.

Prompting (the Lab's *score* method) puts k = 0, 1, 3, 5 labelled examples in the prompt; fine-tuning
trains adapters on 8, 16, 32, 64, 128 of them (capped at the training file's size). Both draw their
examples from the same training rows and are scored on the same evaluation rows, so the two lines are
directly comparable. The seed article's Flan-T5 scores come along as reference lines.

:func:`learning_curve` computes it (with progress and Stop), :func:`curve_frame` turns it into a table a
``gr.LinePlot`` draws, :mod:`.chart` into a PNG.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..icl.data import Example, data_error
from ..icl.runner import LabConfig, run_lab
from .data import drop_overlap, pick_training
from .evaluate import score_rows
from .train import FinetuneConfig, encode_for_training, hold_line, seeded_classifier, train_adapter

DEFAULT_SHOTS = (0, 1, 3, 5)
DEFAULT_SIZES = (8, 16, 32, 64, 128)
PROMPTING = "prompting (score, k examples in the prompt)"
FINETUNING = "fine-tuning (LoRA, n training examples)"
#: Each training size of the curve gets at least this many optimiser steps (8 rows: 3 epochs = 3 steps).
CURVE_MIN_STEPS = 24


@dataclass(frozen=True)
class Reference:
    """A published score drawn as a horizontal line."""

    label: str
    weighted_f1: float
    source: str


#: Peixeiro, "Catch up on Large Language Models", Towards Data Science, 2023-09-05 (the second seed article):
#: google/flan-t5-base on the Financial PhraseBank (sentences_allagree), weighted F1 zero- and one-shot.
ARTICLE = "Peixeiro (2023), Flan-T5-base on the Financial PhraseBank"
REFERENCES = (
    Reference("Flan-T5-base zero-shot (article)", 0.40, ARTICLE),
    Reference("Flan-T5-base one-shot (article)", 0.44, ARTICLE),
)


@dataclass(frozen=True)
class CurvePoint:
    """One measurement: a method, how many labelled examples it used, its scores and its time."""

    series: str
    examples: int
    weighted_f1: float
    accuracy: float
    seconds: float


@dataclass
class Curve:
    """A learning curve's points, what they were measured on, the reference lines."""

    points: list[CurvePoint] = field(default_factory=list)
    eval_source: str = ""
    train_source: str = ""
    n_eval: int = 0
    references: tuple[Reference, ...] = REFERENCES
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "eval_source": self.eval_source,
            "train_source": self.train_source,
            "n_eval": self.n_eval,
            "stopped": self.stopped,
            "points": [p.__dict__ for p in self.points],
            "references": [r.__dict__ for r in self.references],
        }


@dataclass(frozen=True)
class CurveProgress:
    """Where a learning curve stands: the step running, the fraction done, the points so far."""

    stage: str
    fraction: float
    eta_s: float | None
    loss: float | None
    points: tuple[CurvePoint, ...]


def curve_sizes(sizes: Sequence[int], available: int) -> list[int]:
    """The training sizes to run: those the file can fill, and the file's size when it cuts one short."""
    out = sorted({n for n in sizes if 0 < n <= available})
    if available > 0 and any(n > available for n in sizes) and available not in out:
        out.append(available)
    return out


def learning_curve(
    loaded: Any,
    train_rows: Sequence[Example],
    eval_rows: Sequence[Example],
    labels: Sequence[str],
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    config: FinetuneConfig | None = None,
    calibrate: str = "batch",
    min_steps: int = CURVE_MIN_STEPS,
    on_progress: Callable[[CurveProgress], None] | None = None,
    cancel: threading.Event | None = None,
    slots: Any = None,
    eval_source: str = "",
    train_source: str = "",
) -> Curve:
    """Prompting at each k of ``shots`` and fine-tuning at each size of ``sizes``, scored on ``eval_rows``.

    Few-shot examples and training rows both come from ``train_rows`` (rows whose sentence is evaluated are
    dropped first); each size trains fresh adapters (``config``: epochs, seed, template...) for at least
    ``min_steps`` optimiser steps, so the smallest sets are not judged on two or three steps. Stop ends it
    between two steps; the points finished so far are kept (``stopped`` set).
    """
    from ..icl.scoring import LabelScorer

    config = dataclasses.replace(config or FinetuneConfig(), min_steps=min_steps)
    labels = tuple(labels)
    pool, _ = drop_overlap(train_rows, eval_rows)
    if not eval_rows or not pool:
        raise data_error("A learning curve needs training rows and evaluation rows.")
    ordered = pick_training(pool, None, labels, config.seed)  # every size is a prefix of this order
    todo = curve_sizes(sizes, len(ordered))
    # Work units for the progress bar: one per scored row, one per training example pass.
    total = len(shots) * len(eval_rows) + sum(config.epochs_for(n) * n + len(eval_rows) for n in todo)
    curve = Curve(eval_source=eval_source, train_source=train_source, n_eval=len(eval_rows))
    tracker = _Tracker(total, on_progress, curve)

    lab = LabConfig(shots=tuple(shots), method="score", template=config.template, seed=config.seed, calibrate=calibrate)
    _prompting_points(curve, tracker, LabelScorer(loaded, slots=slots), eval_rows, ordered, labels, lab, cancel)
    if not curve.stopped:
        _finetuning_points(curve, tracker, loaded, ordered, eval_rows, labels, todo, config, cancel, slots)
    if not curve.stopped:
        tracker.update(total, "done", None)
    return curve


def _prompting_points(
    curve: Curve,
    tracker: _Tracker,
    scorer: Any,
    eval_rows: Sequence[Example],
    pool: Sequence[Example],
    labels: tuple[str, ...],
    lab: LabConfig,
    cancel: threading.Event | None,
) -> None:
    """Add a point per k of ``lab.shots`` (the Lab's score method); set ``curve.stopped`` on Stop."""
    for p in run_lab(eval_rows, pool, labels, lab, scorer=scorer, cancel=cancel):
        run = p.runs[-1] if p.runs else None
        tracker.update(p.done, f"prompting, k = {run.shots}" if run else "prompting", None)
        if p.finished or p.stopped:
            for r in (r for r in p.runs if r.complete):
                m = r.metrics
                curve.points.append(CurvePoint(PROMPTING, r.shots, m.weighted_f1, m.accuracy, r.elapsed_s))
            curve.stopped = p.stopped


def _finetuning_points(
    curve: Curve,
    tracker: _Tracker,
    loaded: Any,
    ordered: list[Example],
    eval_rows: Sequence[Example],
    labels: tuple[str, ...],
    sizes: list[int],
    config: FinetuneConfig,
    cancel: threading.Event | None,
    slots: Any,
) -> None:
    """Add a point per training size (fresh adapters on the first n of ``ordered``); set ``curve.stopped``
    on Stop."""
    states = eval_states = None
    for n in sizes:
        t0 = time.perf_counter()
        clf = seeded_classifier(loaded, labels, config)
        if states is None:  # the frozen layers' output is the same for every size: computed once
            states = hold_line(slots, encode_for_training, clf, ordered, config.batch_size)
            eval_states = hold_line(slots, clf.encode, eval_rows, 16)
        base = tracker.done
        train = train_adapter(
            clf,
            ordered[:n],
            config,
            states=states.take(range(n)),
            cancel=cancel,
            slots=slots,
            on_progress=lambda tp, n=n, base=base: tracker.update(base + tp.done, f"fine-tuning on {n}", tp.loss),
        )
        scored = [] if train.stopped else score_rows(clf, eval_rows, states=eval_states, cancel=cancel, slots=slots)
        if len(scored) < len(eval_rows):
            curve.stopped = True
            return
        tracker.update(tracker.done + len(eval_rows), f"fine-tuned on {n}", train.losses[-1])
        m = _metrics(scored, labels)
        curve.points.append(CurvePoint(FINETUNING, n, m.weighted_f1, m.accuracy, time.perf_counter() - t0))


def _metrics(scored: Sequence[Any], labels: Sequence[str]) -> Any:
    from ..icl.metrics import compute_metrics

    return compute_metrics([r.gold for r in scored], [r.pred for r in scored], labels)


class _Tracker:
    """Turns work units done into :class:`CurveProgress` reports with a time estimate."""

    def __init__(self, total: int, report: Callable[[CurveProgress], None] | None, curve: Curve) -> None:
        self.total, self.report, self.curve = max(1, total), report, curve
        self.done = 0
        self.t0 = time.perf_counter()

    def update(self, done: int, stage: str, loss: float | None) -> None:
        self.done = min(done, self.total)
        if self.report is None:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (self.total - self.done) / self.done if self.done else None
        self.report(CurveProgress(stage, self.done / self.total, eta, loss, tuple(self.curve.points)))


def curve_frame(curve: Curve) -> Any:
    """The curve as a long table (``examples``, ``weighted_f1``, ``series``) for ``gr.LinePlot``; each
    reference is a flat line across the measured range."""
    import pandas as pd

    rows = [{"examples": p.examples, "weighted_f1": round(p.weighted_f1, 4), "series": p.series} for p in curve.points]
    xs = [p.examples for p in curve.points] or [0, 1]
    for ref in curve.references:
        rows += [{"examples": x, "weighted_f1": ref.weighted_f1, "series": ref.label} for x in (min(xs), max(xs))]
    frame = pd.DataFrame(rows, columns=["examples", "weighted_f1", "series"])
    return frame.astype({"examples": "int64", "weighted_f1": "float64", "series": "str"})
