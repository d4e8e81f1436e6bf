"""Running one talk step: its answers (one column each: n samples, a temperature sweep, several backends)
come from the turn service, side by side; a Lab step scores the demo set. Pure Python, no Gradio.

A column that fails falls back to the step's rehearsal record when there is one (the talk goes on and the
record is labelled "recorded at rehearsal, <time>"); otherwise it shows the error and the next step still
runs. A rehearsal run stores every step that answered in full.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..core import BackendError, Message, TokenLogprob
from ..turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_choices, run_turn
from .format import Step, Talk
from .rehearsal import RecordedAnswer, RehearsalStore

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime

#: Seconds between two snapshots of a running step.
TICK_S = 0.15
#: Rows of the demo set a Lab step scores (enough for a stable table, short enough for a talk).
LAB_ROWS = 60
#: The article's Flan-T5 numbers (weighted F1 on the Financial PhraseBank), shown beside a Lab step.
ARTICLE_F1 = {0: 0.40, 1: 0.44}

#: What each tab answers with when a step names no backend: all work offline on the embedded model.
DEFAULT_BACKEND = {"chat": "local", "api": "app-endpoint", "local": "local", "compare": "local"}


@dataclass(frozen=True)
class Column:
    """One answer of a step: its label (the setting that differs), text so far, state and a detail line."""

    label: str
    text: str = ""
    state: str = "waiting"  # waiting | answering | done | failed | recorded
    detail: str = ""
    tokens: tuple[TokenLogprob, ...] = ()  # each token's probability, when the step asked for them


@dataclass(frozen=True)
class StepView:
    """A snapshot of a running or finished step, for the presenter view."""

    columns: tuple[Column, ...]
    finished: bool = False
    recorded: RecordedAnswer | None = None
    table: tuple[tuple[Any, ...], ...] = ()  # a Lab step's rows: k, weighted F1, accuracy, the article's F1
    status: str = ""

    @property
    def failed(self) -> bool:
        return any(c.state == "failed" for c in self.columns)


@dataclass(frozen=True)
class Planned:
    """One column's request: its label, picker id, model (api steps) and settings."""

    label: str
    option_id: str
    params: Any
    model: str | None = None
    #: Answered with the step's other columns by one request with ``n`` (a hosted API), not a turn of its own.
    together: bool = False


def step_messages(step: Step) -> list[Message]:
    """The conversation a step sends: its system prompt, its few-shot pairs, then the prompt."""
    out = [Message("system", step.system)] if step.system else []
    for user, assistant in step.examples:
        out += [Message("user", user), Message("assistant", assistant)]
    return [*out, Message("user", step.prompt)]


def plan(step: Step) -> list[Planned]:
    """The columns of a step: one per backend, per temperature, or per sample (seeds seed, seed+1, ...)."""
    option = step.backend or DEFAULT_BACKEND.get(step.tab, "local")
    p = step.params
    if step.backends:
        return [Planned(b, b, p, step.model) for b in step.backends]
    if step.temperatures:
        return [Planned(f"temperature {t:g}", option, p.with_(temperature=t), step.model) for t in step.temperatures]
    if step.n > 1 and is_hosted(option):  # one request with n: the API gives the n answers together
        return [Planned(f"answer {i + 1} of n={step.n}", option, p, step.model, True) for i in range(step.n)]
    if step.n > 1:
        base = 0 if p.seed is None else p.seed
        return [
            Planned(f"sample {i + 1} · seed {base + i}", option, p.with_(seed=base + i), step.model)
            for i in range(step.n)
        ]
    return [Planned(option, option, p, step.model)]


def run_step(
    runtime: AppRuntime,
    talk: Talk,
    index: int,
    *,
    store: RehearsalStore | None = None,
    cancel: threading.Event | None = None,
    rehearse: bool = False,
    session_id: str | None = None,
) -> Iterator[StepView]:
    """Run step ``index`` of ``talk``, yielding snapshots; the last has ``finished`` set.

    With ``rehearse``, a step whose every column answered is recorded in ``store``. Without it, a step with
    a failed column shows its rehearsal record instead, if ``store`` has one.
    """
    step = talk.steps[index]
    cancel = cancel or threading.Event()
    if step.tab == "lab":
        yield from _run_lab(runtime, step, cancel)
        return
    planned = plan(step)
    columns = [Column(p.label) for p in planned]
    lock = threading.Lock()

    def update(i: int, **changes: Any) -> None:
        with lock:
            columns[i] = replace(columns[i], **changes)

    if planned[0].together:
        threads = [
            threading.Thread(
                target=_answer_together, args=(runtime, step, planned[0], update, cancel, session_id), daemon=True
            )
        ]
    else:
        threads = [
            threading.Thread(target=_answer, args=(runtime, step, p, i, update, cancel, session_id), daemon=True)
            for i, p in enumerate(planned)
        ]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            with lock:
                snapshot = tuple(columns)
            yield StepView(snapshot, status=_status(snapshot))
            time.sleep(TICK_S)
    finally:
        if any(t.is_alive() for t in threads):  # closed early (Stop, the page went away)
            cancel.set()
    final = tuple(columns)
    yield _finish(talk, step, final, store, rehearse and not cancel.is_set())


def is_hosted(option_id: str) -> bool:
    """Whether a picker id is an OpenAI-compatible API (a configured endpoint or the app's own ``/v1``)."""
    return option_id.startswith("hosted:") or option_id == "app-endpoint"


def _hosted_builder(runtime: AppRuntime, p: Planned) -> Callable[[], Any] | None:
    """The hosted backend with the step's model, built by the turn's opener (None: a local option)."""
    if not is_hosted(p.option_id):
        return None
    return lambda: runtime.hosted_backend(p.option_id, model=p.model)


def _answer_together(
    runtime: AppRuntime,
    step: Step,
    p: Planned,
    update: Callable[..., None],
    cancel: threading.Event,
    session_id: str | None,
) -> None:
    """Every column's answer from one hosted request with ``n`` (runs in its own thread)."""
    columns = range(step.n)
    try:
        request = TurnRequest(
            p.option_id, step_messages(step), p.params, session_id=session_id, backend=_hosted_builder(runtime, p)
        )
        done = 0
        for event in run_choices(runtime, request, step.n, cancel=cancel):
            if isinstance(event, Started):
                for i in columns:
                    update(i, state="answering", detail=f"{event.model} · one request, n={step.n}")
            elif isinstance(event, Done):
                detail = f"{event.metrics.summary()} · one request, n={step.n}"
                update(done, text=event.text, state="done", detail=detail, tokens=event.tokens)
                done += 1
            elif isinstance(event, Failed):
                for i in columns:
                    update(i, state="failed", detail=str(event.error))
    except BackendError as e:
        for i in columns:
            update(i, state="failed", detail=str(e))


def _answer(
    runtime: AppRuntime,
    step: Step,
    p: Planned,
    i: int,
    update: Callable[..., None],
    cancel: threading.Event,
    session_id: str | None,
) -> None:
    """One column's turn, reported through ``update`` (runs in its own thread)."""
    text = ""
    try:
        request = TurnRequest(
            p.option_id, step_messages(step), p.params, session_id=session_id, backend=_hosted_builder(runtime, p)
        )
        for event in run_turn(runtime, request, cancel=cancel):
            if isinstance(event, Loading):
                # No fraction yet (the engine has not reported one): say so rather than fail the column.
                pct = "" if event.fraction is None else f" · {event.fraction * 100:.0f}%"
                update(i, state="waiting", detail=f"loading the model{pct}")
            elif isinstance(event, Waiting):
                update(i, state="waiting", detail=f"waiting in line · {event.ahead} ahead")
            elif isinstance(event, Started):
                update(i, state="answering", detail=event.model)
            elif isinstance(event, Delta):
                text += event.text
                update(i, text=text)
            elif isinstance(event, Done):
                update(i, text=event.text, state="done", detail=event.metrics.summary(), tokens=event.tokens)
            elif isinstance(event, Failed):
                update(i, text=event.partial, state="failed", detail=str(event.error))
    except BackendError as e:
        update(i, text=text, state="failed", detail=str(e))
    except Exception as e:  # noqa: BLE001 - one column's bug must not stop the talk; say what happened
        update(i, text=text, state="failed", detail=f"{type(e).__name__}: {e}")


def _status(columns: tuple[Column, ...]) -> str:
    done = sum(c.state in ("done", "failed") for c in columns)
    return f"{done} of {len(columns)} answered" if len(columns) > 1 else ""


def _finish(
    talk: Talk, step: Step, columns: tuple[Column, ...], store: RehearsalStore | None, rehearse: bool
) -> StepView:
    """The step's last view: recorded when rehearsing and all answered; the record when a column failed."""
    if store is not None and rehearse and all(c.state == "done" for c in columns):
        store.record(talk.name, step, [c.text for c in columns], [c.label for c in columns])
    if store is not None and not rehearse and any(c.state == "failed" for c in columns):
        rec = store.lookup(talk.name, step)
        if rec is not None:
            shown = tuple(
                Column(label, text, "recorded", rec.label)
                for label, text in zip(rec.labels or [c.label for c in columns], rec.answers, strict=False)
            )
            why = next(c.detail for c in columns if c.state == "failed")
            return StepView(shown, finished=True, recorded=rec, status=f"live answer failed ({why})")
    return StepView(columns, finished=True, status=_status(columns))


def _run_lab(runtime: AppRuntime, step: Step, cancel: threading.Event) -> Iterator[StepView]:
    """A Lab step: the score method on the demo set's first rows at each k, beside the article's numbers."""
    from ..engine import TRANSFORMERS
    from ..icl.data import load_demo
    from ..icl.runner import LabConfig, prepare_data, run_lab
    from ..icl.scoring import LabelScorer

    scoring = f"Scoring the demo set's first {LAB_ROWS} rows at k = {', '.join(str(k) for k in step.shots)} …"
    column = Column("Lab · score method · demo set", scoring, "waiting", "loading the transformers engine")
    yield StepView((column,), status="loading")
    try:
        loaded = runtime.models.get(None, engine=TRANSFORMERS)
        data, pool = load_demo()
        config = LabConfig(shots=step.shots, method="score", limit=LAB_ROWS)
        rows, examples = prepare_data(data, pool, config)
        last = None
        for last in run_lab(rows, examples, data.labels, config, scorer=LabelScorer(loaded), cancel=cancel):
            yield StepView((replace(column, state="answering", detail=last.describe()),), table=_lab_table(last.runs))
    except BackendError as e:
        yield StepView((replace(column, text="", state="failed", detail=str(e)),), finished=True)
        return
    detail = last.describe() if last else "nothing ran"
    state = "done" if last is not None and last.finished else "failed"
    table = _lab_table(last.runs if last else [])
    text = lab_summary(table) if state == "done" else ""
    yield StepView((replace(column, text=text, state=state, detail=detail),), finished=True, table=table)


def lab_summary(table: tuple[tuple[Any, ...], ...]) -> str:
    """The Lab card's line: this model's weighted F1 from the fewest to the most examples, beside the article's."""
    if not table:
        return ""
    (k0, f0, *_), (k1, f1, *_) = table[0], table[-1]
    at = "at\u00a0k\u00a0=\u00a0"  # never broken over two lines
    ours = f"weighted F1 {f0:.3f} {at}{k0}" + (f" → {f1:.3f} {at}{k1}" if len(table) > 1 else "")
    article = " → ".join(f"{f:.2f} {at}{k}" for k, f in sorted(ARTICLE_F1.items()))
    return f"This model: {ours}. The article's Flan-T5: {article}."


def _lab_table(runs: list[Any]) -> tuple[tuple[Any, ...], ...]:
    rows = []
    for run in runs:
        m = run.metrics
        ref = ARTICLE_F1.get(run.shots)
        rows.append((run.shots, round(m.weighted_f1, 3), round(m.accuracy, 3), m.n, "—" if ref is None else ref))
    return tuple(rows)
