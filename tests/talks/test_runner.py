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


N_STEP = """\
title: n at level 2
steps:
  - title: "Level 2: five answers"
    tab: api
    backend: hosted:app
    model: local
    prompt: Name a colour.
    n: 3
    temperature: 1
    seed: 9
    max_tokens: 6
"""


@pytest.mark.slow
def test_a_hosted_step_with_n_asks_one_request_for_all_its_answers(app_server) -> None:
    """Level 2's ``n``: one request with ``n=3`` to a real OpenAI-compatible server (the served app's /v1),
    its three answers in three columns; the server's answer i is its answer with seed 9 + i."""
    import openai

    endpoint = f'[{{"name": "app", "base_url": "{app_server.url}v1", "model": "local"}}]'
    hosted = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "HOSTED_ENDPOINTS": endpoint}))
    step = parse_talk(N_STEP, "n.yaml")
    planned = plan(step.steps[0])
    assert [p.together for p in planned] == [True] * 3 and planned[0].label == "answer 1 of n=3"
    view = last(run_step(hosted, step, 0))
    assert [c.state for c in view.columns] == ["done"] * 3 and "n=3" in view.columns[0].detail
    client = openai.OpenAI(base_url=f"{app_server.url}v1", api_key="none", max_retries=0)
    one_by_one = [
        client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, seed=9 + i
        )
        .choices[0]
        .message.content
        for i in range(3)
    ]
    assert [c.text for c in view.columns] == one_by_one


def test_stop_ends_a_step_promptly(runtime) -> None:
    talk = parse_talk(TALK.replace("max_tokens: 8", "max_tokens: 400"), "t.yaml")
    cancel = threading.Event()
    views = run_step(runtime, talk, 1, cancel=cancel)
    next(views)
    cancel.set()
    final = last(views)
    assert all(c.state in ("done", "failed") for c in final.columns)


def test_the_lab_card_sets_this_models_scores_beside_the_articles():
    from llm_levels.talks.runner import _lab_table, lab_summary

    class Run:
        def __init__(self, shots: int, f1: float) -> None:
            self.shots = shots
            self.metrics = type("M", (), {"weighted_f1": f1, "accuracy": f1, "n": 60})()

    table = _lab_table([Run(0, 0.5671), Run(1, 0.575), Run(3, 0.625)])
    assert [row[4] for row in table] == [0.40, 0.44, "—"]  # the article scored k = 0 and 1 only
    assert lab_summary(table).replace("\u00a0", " ") == (
        "This model: weighted F1 0.567 at k = 0 → 0.625 at k = 3. The article's Flan-T5: 0.40 at k = 0 → 0.44 at k = 1."
    )
    assert (
        lab_summary(table[:1]).replace("\u00a0", " ").startswith("This model: weighted F1 0.567 at k = 0. ")
        and lab_summary(()) == ""
    )


def test_the_python_panel_of_a_hosted_n_step_shows_one_call_with_n(runtime) -> None:
    """The default talk's "five samples" step: the presenter's Python is one ``create`` call with ``n=5``."""
    from llm_levels.talks import load_talk
    from llm_levels.ui.talk_view import request_code

    talk = load_talk("default")
    step = next(s for s in talk.steps if s.n > 1)
    code = request_code(runtime, step)
    assert "n=5" in code and code.count("chat.completions.create(") == 1
    assert all(p.together for p in plan(step))
