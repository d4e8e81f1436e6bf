"""Running a lab: every k of a shot list over the evaluated rows, by one method, with progress and Stop.

:func:`run_lab` is a generator of :class:`Progress` snapshots (after every batch or answer), so the CLI can
print a bar and the Lab tab can refresh its tables; the last snapshot holds the finished runs. Setting
``cancel`` (or closing the generator) stops it between two batches; the rows done so far stay in the
snapshot already handed out, marked ``complete=False``.

Methods:

- ``generate``: an :data:`Ask` (a callable ``ask(messages, params) -> str`` that raises
  :class:`~llm_levels.core.BackendError`) writes a short greedy answer and
  :func:`~llm_levels.icl.prompts.parse_label` reads the label out of it (or marks it invalid). The Lab tab
  and the command line build theirs on the turn service (each prompt one turn of
  ``llm_levels.turns.run_turn``), so the runner never opens or calls a backend itself;
- ``score``: a :class:`~llm_levels.icl.scoring.LabelScorer` compares the log-likelihood of each label
  after the prompt (local models only; never invalid).

For each k, the k examples are drawn once (balanced, seeded) from the pool and used for every row, as in
the seed article; the pool never holds an evaluated row (:func:`prepare_data` checks that).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import Backend, BackendError, GenParams, Message, ReplyBuilder
from .data import Example, LabelledData, data_error, sample_eval, split_pool
from .metrics import Metrics, compute_metrics
from .prompts import DEFAULT_TEMPLATE, get_template, parse_label, select_examples
from .results import (  # noqa: F401 - moved to .results, still importable from here
    CSV_COLUMNS,
    TABLE_HEADERS,
    results_dict,
    results_table,
    save_results,
    write_predictions_csv,
)
from .scoring import LabelScorer

METHODS = ("generate", "score")
CALIBRATIONS = ("batch", "content-free", "none")
#: The content-free input of contextual calibration.
CONTENT_FREE = "N/A"
MAX_SHOTS = 32

#: ``ask(messages, params) -> answer``: one greedy answer for the generate method (raises BackendError).
Ask = Callable[[list[Message], GenParams], str]


@dataclass(frozen=True)
class LabConfig:
    """What to run: the shot counts, the method, the template, how many rows, the seed."""

    shots: tuple[int, ...] = (0, 1, 3)
    method: str = "score"
    template: str = DEFAULT_TEMPLATE
    limit: int | None = None
    seed: int = 0
    #: generate only: the most tokens of an answer (a label is one word; the article allowed 50).
    max_new_tokens: int = 10
    #: score only: rows per batched forward pass.
    batch_size: int = 8
    #: score only: how to remove the model's prior bias towards one label before taking the best one.
    #: ``batch`` (Zhou et al., 2023, "Batch Calibration"): subtract each label's mean log-probability over
    #: the run's rows (no gold labels used; while the run goes, the mean of the rows done so far, and every
    #: row is re-decided with the full mean at the end). ``content-free`` (Zhao et al., 2021): subtract the
    #: log-probabilities for the content-free sentence "N/A" in the same prompt. ``none``: raw argmax.
    calibrate: str = "batch"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise data_error(f"Unknown method {self.method!r}: use generate or score.")
        if not self.shots:
            raise data_error("Give at least one shot count, e.g. 0,1,3.")
        if any(k < 0 or k > MAX_SHOTS for k in self.shots):
            raise data_error(f"Shot counts must be between 0 and {MAX_SHOTS}.")
        get_template(self.template)  # raises for an unknown name
        if self.calibrate not in CALIBRATIONS:
            raise data_error(f"Unknown calibration {self.calibrate!r}: use one of {', '.join(CALIBRATIONS)}.")


def parse_shots(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,3"`` -> ``(0, 1, 3)`` (duplicates dropped, order kept); raises a clear error for bad input."""
    if not isinstance(text, str):
        items = [str(x) for x in text]
    else:
        items = [t for t in text.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    out: list[int] = []
    for t in items:
        try:
            k = int(t.strip())
        except ValueError:
            raise data_error(f"Shot counts must be whole numbers separated by commas (got {t!r}).") from None
        if k < 0 or k > MAX_SHOTS:
            raise data_error(f"Shot counts must be between 0 and {MAX_SHOTS} (got {k}).")
        if k not in out:
            out.append(k)
    if not out:
        raise data_error("Give at least one shot count, e.g. 0,1,3.")
    return tuple(out)


@dataclass
class RowResult:
    """One evaluated row of one run: the gold label, the prediction (None = invalid), what the model said."""

    line: int
    text: str
    gold: str
    pred: str | None
    answer: str
    scores: dict[str, float] | None = None

    @property
    def correct(self) -> bool:
        return self.pred == self.gold


@dataclass
class RunResult:
    """One k of a lab: its examples, its rows (all, or those done before Stop) and the metrics."""

    shots: int
    method: str
    template: str
    labels: tuple[str, ...]
    examples: list[Example]
    total: int
    rows: list[RowResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    complete: bool = False

    @property
    def metrics(self) -> Metrics:
        return compute_metrics([r.gold for r in self.rows], [r.pred for r in self.rows], self.labels)

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "shots": self.shots,
            "method": self.method,
            "template": self.template,
            "n": m.n,
            "accuracy": m.accuracy,
            "macro_f1": m.macro_f1,
            "weighted_f1": m.weighted_f1,
            "invalid_rate": m.invalid_rate,
            "per_class": {
                k: {"precision": v.precision, "recall": v.recall, "f1": v.f1, "support": v.support}
                for k, v in m.per_class.items()
            },
            "confusion": m.confusion,
            "labels": list(m.labels),
            "confusion_columns": m.confusion_columns,
            "complete": self.complete,
            "total": self.total,
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(m.n / self.elapsed_s, 3) if self.elapsed_s > 0 else None,
            "examples": [{"text": e.text, "label": e.label} for e in self.examples],
        }


@dataclass
class Progress:
    """A snapshot while a lab runs: rows done of all, timing, and every run so far (the last may be partial)."""

    done: int
    total: int
    elapsed_s: float
    runs: list[RunResult]
    finished: bool = False
    stopped: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        if self.done == 0 or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done

    def describe(self) -> str:
        """``k=1 (run 2 of 3) · 80/300 rows · 12.3 rows/s · about 18 s left``."""
        if not self.runs:
            return "starting…"
        cur = self.runs[-1]
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        eta = self.eta_s
        ended = self.finished or self.stopped or self.done >= self.total  # the last row is done: nothing left
        left = "" if eta is None or ended else f" · about {_fmt_s(max(eta, 1.0))} left"
        state = "stopped" if self.stopped else ("done" if self.finished else f"k={cur.shots}")
        return f"{state} · {self.done}/{self.total} rows · {rate:.1f} rows/s{left}"


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


# ------------------------------------------------------------------------------------------- data
def prepare_data(
    data: LabelledData, pool: LabelledData | None, config: LabConfig
) -> tuple[list[Example], list[Example]]:
    """(rows to evaluate, example pool). Without a separate pool, enough rows of each label are split off
    ``data`` into one (seeded); either way no evaluated row's text can be picked as an example."""
    k_max = max(config.shots)
    labels = data.labels
    if pool is None:
        per_label = -(-k_max // len(labels)) if k_max else 0
        pool, data = split_pool(data, per_label, config.seed)
    rows = sample_eval(data.examples, config.limit, config.seed)
    if not rows:
        raise data_error("No rows are left to evaluate.")
    return rows, list(pool.examples)


def _prompt(
    template: str, single_turn: bool, text: str, examples: Sequence[Example], labels: Sequence[str]
) -> list[Message]:
    t = get_template(template)
    return t.single_turn(text, examples, labels) if single_turn else t.messages(text, examples, labels)


def _is_seq2seq(obj: Any) -> bool:
    loaded = getattr(obj, "loaded", None)
    return bool(getattr(loaded, "is_seq2seq", False))


# ------------------------------------------------------------------------------------------- running
def run_lab(
    rows: Sequence[Example],
    pool: Sequence[Example],
    labels: Sequence[str],
    config: LabConfig,
    *,
    ask: Ask | None = None,
    scorer: LabelScorer | None = None,
    cancel: threading.Event | None = None,
    single_turn: bool | None = None,
) -> Iterator[Progress]:
    """Run every k of ``config.shots``; yields a :class:`Progress` after each batch (score) or answer
    (generate), and a last one with ``finished`` (or ``stopped``) set.

    ``ask`` answers the generate method's prompts (set ``single_turn`` for a model without a chat
    template: one user message per prompt); ``scorer`` reads the score method's label probabilities.
    """
    if config.method == "score" and scorer is None:
        raise BackendError(
            "The score method needs a local model (it reads the model's probabilities); "
            "hosted APIs do not return them: use --method generate.",
            kind="bad_request",
            status=400,
        )
    if config.method == "generate" and ask is None:
        raise BackendError("The generate method needs a backend.", kind="bad_request", status=400)
    if config.method == "score":
        single_turn = _is_seq2seq(scorer)
    labels = tuple(labels)
    total = len(rows) * len(config.shots)
    runs: list[RunResult] = []
    done = 0
    t0 = time.perf_counter()
    stopped = False
    for k in config.shots:
        examples = select_examples(pool, k, labels, config.seed, exclude=rows)
        run = RunResult(k, config.method, config.template, labels, examples, len(rows))
        runs.append(run)
        prompt = functools.partial(_prompt, config.template, bool(single_turn), examples=examples, labels=labels)
        started = time.perf_counter()
        steps = (
            _score_rows(run, rows, prompt, scorer, config, cancel)
            if config.method == "score"
            else _generate_rows(run, rows, prompt, ask, config, cancel)
        )
        for n in steps:
            if n == 0:  # cancelled before this step: nothing more of this k (or any later one)
                stopped = True
                break
            done += n
            run.elapsed_s = time.perf_counter() - started
            yield Progress(done, total, time.perf_counter() - t0, runs)
        run.elapsed_s = time.perf_counter() - started
        run.complete = len(run.rows) == len(rows)
        if stopped:
            break
    if runs and not runs[-1].rows and not runs[-1].complete:
        runs.pop()  # stopped before its first row: nothing to report
    yield Progress(done, total, time.perf_counter() - t0, runs, finished=not stopped, stopped=stopped)


def _score_rows(
    run: RunResult,
    rows: Sequence[Example],
    prompt: Callable[[str], list[Message]],
    scorer: Any,
    config: LabConfig,
    cancel: threading.Event | None,
) -> Iterator[int]:
    """Score ``rows`` batch by batch into ``run``; yields the rows each batch added (0: cancelled)."""
    prompts = [prompt(e.text) for e in rows]
    scorer.set_prefix(prompts)
    free_base: dict[str, float] = {}
    if config.calibrate == "content-free":
        free_base = scorer.score([prompt(CONTENT_FREE)], run.labels)[0].logprobs
    step = max(1, scorer.batch_size)
    for i in range(0, len(rows), step):
        if cancel is not None and cancel.is_set():
            yield 0
            return
        for e, s in zip(rows[i : i + step], scorer.score(prompts[i : i + step], run.labels)):
            run.rows.append(RowResult(e.line, e.text, e.label, None, "", s.logprobs))
        _decide(run.rows, run.labels, config.calibrate, free_base)
        yield len(rows[i : i + step])


def _generate_rows(
    run: RunResult,
    rows: Sequence[Example],
    prompt: Callable[[str], list[Message]],
    ask: Any,
    config: LabConfig,
    cancel: threading.Event | None,
) -> Iterator[int]:
    """Ask for each row's answer and parse its label into ``run``; yields 1 per row (0: cancelled)."""
    params = GenParams(temperature=0.0, max_new_tokens=config.max_new_tokens)
    for e in rows:
        if cancel is not None and cancel.is_set():
            yield 0
            return
        answer = ask(prompt(e.text), params)
        if cancel is not None and cancel.is_set():  # stopped while answering: the row is not counted
            yield 0
            return
        run.rows.append(RowResult(e.line, e.text, e.label, parse_label(answer, run.labels), answer))
        yield 1


def _decide(rows: list[RowResult], labels: Sequence[str], calibrate: str, free_base: dict[str, float]) -> None:
    """(Re)decide every scored row's label: argmax of its log-probabilities minus the calibration baseline."""
    if calibrate == "batch" and rows:
        base = {lab: sum(r.scores[lab] for r in rows if r.scores) / len(rows) for lab in labels}
    elif calibrate == "content-free":
        base = free_base
    else:
        base = {}
    for r in rows:
        if r.scores:
            r.pred = max(labels, key=lambda lab: r.scores[lab] - base.get(lab, 0.0))
            r.answer = r.pred


def ask_backend(backend: Backend, cancel: threading.Event | None = None) -> Ask:
    """An :data:`Ask` straight on a backend's stream, without the turn service (for tests of the runner)."""

    def ask(messages: list[Message], params: GenParams) -> str:
        builder = ReplyBuilder()
        gen = backend.stream(messages, params, cancel)
        try:
            for chunk in gen:
                builder.add(chunk)
        finally:
            gen.close()
        return builder.text

    return ask
