"""Running talk steps on the real embedded model: columns side by side, rehearsal records, and a failing
backend that falls back to its record while the talk goes on."""

from __future__ import annotations

import threading

import pytest

from llm_levels.config import Settings
from llm_levels.runtime import AppRuntime
from llm_levels.talks import RehearsalStore, parse_talk
from llm_levels.talks.runner import plan, run_step, step_messages

TALK = """\
title: Test talk
steps:
  - title: Samples
    tab: local
    prompt: Name a colour.
    n: 3
    temperature: 1
    seed: 5
    max_tokens: 8
  - title: Sweep
    tab: compare
    prompt: Name a colour.
    temperatures: [0, 1.5]
    seed: 2
    max_tokens: 8
  - title: "Level 2: a dead server"
    tab: api
    backend: hosted:nowhere
    prompt: Name a colour.
    temperature: 0
    max_tokens: 8
  - title: Few-shot
    tab: chat
    system: One word.
    examples: [["Sky?", "Blue"]]
    prompt: Grass?
"""


@pytest.fixture(scope="module")
def runtime() -> AppRuntime:
    return AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))


def last(views):
    out = list(views)
    assert out and out[-1].finished and not any(v.finished for v in out[:-1])
    return out[-1]


def test_a_step_plans_one_column_per_sample_temperature_or_backend() -> None:
    talk = parse_talk(TALK, "t.yaml")
    samples, sweep, dead, few = (plan(s) for s in talk.steps)
    assert [p.params.seed for p in samples] == [5, 6, 7] and samples[0].label == "sample 1 · seed 5"
    assert [p.params.temperature for p in sweep] == [0.0, 1.5]
    assert dead[0].option_id == "hosted:nowhere"
    assert [m.role for m in step_messages(talk.steps[3])] == ["system", "user", "assistant", "user"]


def test_n_seeded_samples_answer_side_by_side_and_repeat(runtime, tmp_path) -> None:
    talk = parse_talk(TALK, "t.yaml")
    first = last(run_step(runtime, talk, 0, store=RehearsalStore(tmp_path)))
    assert [c.state for c in first.columns] == ["done"] * 3
    assert all(c.text.strip() for c in first.columns) and "tokens/s" in first.columns[0].detail
    again = last(run_step(runtime, talk, 0))
    assert [c.text for c in again.columns] == [c.text for c in first.columns]  # seeded: the same draws


def test_a_rehearsal_records_and_a_failing_step_shows_the_record(runtime, tmp_path) -> None:
    store = RehearsalStore(tmp_path)
    talk = parse_talk(TALK, "t.yaml")
    live = last(run_step(runtime, talk, 2, store=store))  # never rehearsed: the error, and the talk goes on
    assert live.failed and live.recorded is None and "nowhere" in live.columns[0].detail
    ok = parse_talk(TALK.replace("backend: hosted:nowhere", "backend: local"), "t.yaml").steps[2]
    # The rehearsal's answer is recorded under the step as written in the file; pretend it answered then.
    store.record("t", talk.steps[2], ["Blue."], ["hosted:nowhere"])
    shown = last(run_step(runtime, talk, 2, store=store))
    assert shown.recorded is not None and shown.columns[0].text == "Blue."
    assert shown.columns[0].state == "recorded" and shown.columns[0].detail.startswith("recorded at rehearsal, ")
    assert "live answer failed" in shown.status
    assert ok.backend == "local"
    rehearsed = last(run_step(runtime, talk, 3, store=store, rehearse=True))
    assert rehearsed.columns[0].state == "done"
    assert store.lookup("t", talk.steps[3]).answers == (rehearsed.columns[0].text,)


def test_stop_ends_a_step_promptly(runtime) -> None:
    talk = parse_talk(TALK.replace("max_tokens: 8", "max_tokens: 400"), "t.yaml")
    cancel = threading.Event()
    views = run_step(runtime, talk, 1, cancel=cancel)
    next(views)
    cancel.set()
    final = last(views)
    assert all(c.state in ("done", "failed") for c in final.columns)
