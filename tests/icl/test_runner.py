"""The runner's generate method through an ``ask`` callable (no model): prompts, parsing, Stop, failures, progress."""

from __future__ import annotations

import threading

import pytest

from llm_levels.core import BackendError, GenParams, Message
from llm_levels.icl.data import load_demo
from llm_levels.icl.prompts import get_template
from llm_levels.icl.runner import LabConfig, Progress, RunResult, ask_backend, run_lab
from tests.fakes import FakeBackend

LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def demo():
    ev, pool = load_demo()
    return ev.examples[:6], pool.examples


class GoldAsk:
    """Answers each prompt with the gold label of its row (found by the row's text), recording the prompts."""

    def __init__(self, rows, answer=None) -> None:
        self.gold = {e.text: e.label for e in rows}
        self.answer = answer
        self.calls: list[tuple[list[Message], GenParams]] = []

    def __call__(self, messages: list[Message], params: GenParams) -> str:
        self.calls.append((messages, params))
        if self.answer is not None:
            return self.answer(len(self.calls))
        text = messages[-1].content
        return next(f"{lab.capitalize()}." for t, lab in self.gold.items() if t in text)


def test_generate_asks_each_row_once_per_k_greedy_and_parses_the_answers(demo):
    rows, pool = demo
    ask = GoldAsk(rows)
    config = LabConfig(shots=(0, 2), method="generate", template="instruct", max_new_tokens=7)
    snaps = list(run_lab(rows, pool, LABELS, config, ask=ask))
    final = snaps[-1]
    assert final.finished and final.done == 12 and len(snaps) == 13  # one snapshot per answer, then the last
    assert [r.shots for r in final.runs] == [0, 2]
    assert all(run.complete and run.metrics.accuracy == 1.0 and run.metrics.invalid_rate == 0 for run in final.runs)
    assert len(ask.calls) == 12
    assert all(p.temperature == 0.0 and p.max_new_tokens == 7 for _m, p in ask.calls)
    # The template's chat form by default; a model without a chat template gets its single-turn form.
    template, examples = get_template("instruct"), final.runs[1].examples
    assert len(examples) == 2 and ask.calls[-1][0] == template.messages(rows[-1].text, examples, LABELS)
    single = GoldAsk(rows)
    list(run_lab(rows, pool, LABELS, config, ask=single, single_turn=True))
    assert single.calls[-1][0] == template.single_turn(rows[-1].text, examples, LABELS)
    assert all(len(msgs) == 1 and msgs[0].role == "user" for msgs, _p in single.calls)


def test_answers_without_one_label_count_as_invalid(demo):
    rows, pool = demo
    ask = GoldAsk(rows, answer=lambda n: "positive or negative" if n % 2 else "I cannot tell")
    final = list(run_lab(rows, pool, LABELS, LabConfig(shots=(0,), method="generate"), ask=ask))[-1]
    assert final.runs[0].metrics.invalid_rate == 1.0 and all(r.pred is None for r in final.runs[0].rows)


def test_stop_while_answering_keeps_the_rows_done_and_drops_the_one_cut(demo):
    rows, pool = demo
    cancel = threading.Event()

    def ask(messages, params):
        if len(calls) == 3:
            cancel.set()  # Stop arrives while the third answer is being written
        calls.append(messages)
        return "positive"

    calls: list = []
    final = list(run_lab(rows, pool, LABELS, LabConfig(shots=(0, 1), method="generate"), ask=ask, cancel=cancel))[-1]
    assert final.stopped and not final.finished and final.done == 3
    (run,) = final.runs
    assert len(run.rows) == 3 and not run.complete


def test_a_failing_ask_raises_its_error_after_the_rows_done(demo):
    rows, pool = demo

    def ask(messages, params):
        if len(seen) == 2:
            raise BackendError("The server broke.", kind="server")
        seen.append(1)
        return "neutral"

    seen: list = []
    got = []
    with pytest.raises(BackendError, match="server broke"):
        for p in run_lab(rows, pool, LABELS, LabConfig(shots=(0,), method="generate"), ask=ask):
            got.append(p)
    assert got[-1].done == 2 and len(got[-1].runs[0].rows) == 2


def test_a_method_without_what_it_needs_is_refused(demo):
    rows, pool = demo
    with pytest.raises(BackendError, match="generate method needs"):
        next(run_lab(rows, pool, LABELS, LabConfig(shots=(0,), method="generate")))
    with pytest.raises(BackendError, match="score method needs a local model"):
        next(run_lab(rows, pool, LABELS, LabConfig(shots=(0,), method="score"), ask=GoldAsk(rows)))


def test_a_backend_answers_the_generate_method_through_ask_backend(demo):
    rows, pool = demo
    backend = FakeBackend(["Neg", "ative"])
    final = list(run_lab(rows[:2], pool, LABELS, LabConfig(shots=(0,), method="generate"), ask=ask_backend(backend)))[
        -1
    ]
    assert final.finished and [r.answer for r in final.runs[0].rows] == ["Negative", "Negative"]
    assert len(backend.calls) == 2


def test_progress_says_the_time_left_only_while_running():
    run = RunResult(1, "generate", "instruct", LABELS, [], 10)
    assert "left" in Progress(5, 10, 5.0, [run]).describe()
    assert "about 1 s left" in Progress(99, 100, 0.5, [run]).describe()  # never "about 0 s"
    for p in (Progress(10, 10, 9.0, [run], finished=True), Progress(4, 10, 3.0, [run], stopped=True)):
        assert "left" not in p.describe()
    # The last row done, before the run is marked finished (the CLI's last bar said "about 1 s left").
    assert "left" not in Progress(10, 10, 9.0, [run]).describe()
    assert Progress(10, 10, 9.0, [run], finished=True).describe().startswith("done · 10/10 rows")
