"""The score method with the real embedded model (a few rows), the runner's Stop, generate via a backend."""

from __future__ import annotations

import threading

import pytest

from llm_levels.icl.data import load_demo
from llm_levels.icl.prompts import get_template, select_examples
from llm_levels.icl.runner import LabConfig, ask_backend, run_lab
from llm_levels.icl.scoring import LabelScorer

pytestmark = pytest.mark.slow
LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def demo():
    ev, pool = load_demo()
    rows = [ev.examples[i] for i in (0, 1, 2, 3, 4, 5)]  # positive, negative, neutral, ...
    return rows, pool.examples


def _reference(scorer: LabelScorer, messages, labels) -> dict[str, float]:
    """Unbatched, uncached, full-sequence log-likelihood of each label form (logsumexp over forms)."""
    import torch

    ids = scorer.prompt_ids(messages)
    out = {}
    for lab, forms in scorer.label_ids(labels).items():
        vals = []
        for f in forms:
            with torch.inference_mode():
                logits = scorer.loaded.model(input_ids=torch.tensor([ids + f])).logits[0].float()
            lp = torch.log_softmax(logits, -1)
            vals.append(sum(float(lp[len(ids) - 1 + t, tok]) for t, tok in enumerate(f)))
        out[lab] = float(torch.logsumexp(torch.tensor(vals), 0))
    return out


def test_batched_prefix_cached_scores_equal_the_plain_forward(embedded_model, demo):
    rows, pool = demo
    scorer = LabelScorer(embedded_model, batch_size=4)
    forms = scorer.label_ids(LABELS)
    assert any(len(f) > 1 for fs in forms.values() for f in fs)  # "Neutral" is two tokens: both paths run
    examples = select_examples(pool, 2, LABELS, seed=0, exclude=rows)
    prompts = [get_template("instruct").messages(e.text, examples, LABELS) for e in rows]
    assert scorer.set_prefix(prompts) > 100  # the instructions and the examples are shared
    got = scorer.score(prompts, LABELS)
    assert len(got) == len(rows)
    for p, s in zip(prompts[:1], got[:1]):
        ref = _reference(scorer, p, LABELS)
        assert s.logprobs == pytest.approx(ref, abs=2e-3)
        assert s.label == max(ref, key=ref.get)


def test_run_lab_score_metrics_and_stop_keeps_rows(embedded_model, demo):
    rows, pool = demo
    scorer = LabelScorer(embedded_model, batch_size=2)
    config = LabConfig(shots=(0, 1), method="score", template="list")
    snaps = list(run_lab(rows, pool, LABELS, config, scorer=scorer))
    final = snaps[-1]
    assert final.finished and final.done == 12 and [r.shots for r in final.runs] == [0, 1]
    for run in final.runs:
        assert run.complete and run.metrics.n == 6 and run.metrics.invalid_rate == 0
        assert all(r.pred in LABELS and set(r.scores) == set(LABELS) for r in run.rows)
    assert len(final.runs[1].examples) == 1 and final.runs[1].examples[0] not in rows

    cancel = threading.Event()
    done = []
    for p in run_lab(rows, pool, LABELS, config, scorer=scorer, cancel=cancel):
        done.append(p)
        if p.done == 2:
            cancel.set()
    last = done[-1]
    assert last.stopped and not last.finished and last.done == 2
    assert len(last.runs) == 1 and not last.runs[0].complete and last.runs[0].metrics.n == 2


def test_generate_through_the_backend_interface(local_backend, demo):
    rows, pool = demo
    config = LabConfig(shots=(1,), method="generate", template="instruct", max_new_tokens=3)
    final = list(run_lab(rows[:2], pool, LABELS, config, ask=ask_backend(local_backend)))[-1]
    run = final.runs[0]
    assert final.finished and run.metrics.n == 2
    assert all(r.answer.strip() for r in run.rows)
    assert all(r.pred in LABELS + (None,) for r in run.rows)


def test_seq2seq_scoring_mechanics(tiny_seq2seq, demo):
    rows, _ = demo
    scorer = LabelScorer(tiny_seq2seq, batch_size=4)
    prompts = [get_template("article").single_turn(e.text, [], LABELS) for e in rows[:3]]
    got = scorer.score(prompts, LABELS)
    assert [g.label for g in got] == [max(g.logprobs, key=g.logprobs.get) for g in got]
    assert all(set(g.logprobs) == set(LABELS) and all(v < 0 for v in g.logprobs.values()) for g in got)
