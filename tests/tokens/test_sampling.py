"""The explorer's pure functions: temperature, top-k and top-p on a next-token distribution, and the draw."""

from __future__ import annotations

import math

import pytest

from llm_levels.core import BackendError
from llm_levels.tokens import Distribution, NextToken, reshape, sample

PROBS = [0.5, 0.2, 0.15, 0.1, 0.05]


def dist(engine: str = "transformers", probs=PROBS) -> Distribution:
    return Distribution(tuple(NextToken(f"t{i}", p, i) for i, p in enumerate(probs)), engine, "m", 3)


def test_temperature_zero_is_one_bar_at_100_percent():
    r = reshape(dist(), temperature=0)
    assert [b.probability for b in r.bars] == [1.0, 0, 0, 0, 0]
    assert [b.cut for b in r.bars] == [None] + ["greedy"] * 4
    assert [b.raw for b in r.bars] == PROBS  # the model's own probabilities stay on every bar
    assert sample(r, seed=1).token == "t0" and sample(r).token == "t0"


def test_temperature_one_without_cuts_keeps_the_model_distribution():
    r = reshape(dist())
    assert [b.probability for b in r.bars] == pytest.approx(PROBS)
    assert all(b.cut is None for b in r.bars) and r.kept == r.bars


@pytest.mark.parametrize("t", [0.5, 1.7])
def test_temperature_is_softmax_of_logits_over_t(t):
    r = reshape(dist(), temperature=t)
    logits = [math.log(p) / t for p in PROBS]
    z = sum(math.exp(x) for x in logits)
    assert [b.probability for b in r.bars] == pytest.approx([math.exp(x) / z for x in logits])
    top = r.bars[0].probability
    assert top > 0.5 if t < 1 else top < 0.5  # low temperature sharpens, high flattens


def test_top_k_cuts_all_but_the_k_most_likely_and_renormalizes():
    r = reshape(dist(), top_k=2)
    assert [b.cut for b in r.bars] == [None, None, "top_k", "top_k", "top_k"]
    assert [b.probability for b in r.bars] == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    # 0.5 + 0.2 = 0.7 < 0.75: the third token is needed to reach it, the rest go.
    r = reshape(dist(), top_p=0.75)
    assert [b.cut for b in r.bars] == [None, None, None, "top_p", "top_p"]
    assert sum(b.probability for b in r.bars) == pytest.approx(1.0)
    # Exactly reaching p is enough.
    assert [b.cut for b in reshape(dist(), top_p=0.7).bars] == [None, None, "top_p", "top_p", "top_p"]
    # The most likely token always stays.
    assert [b.cut for b in reshape(dist(), top_p=0.01).bars] == [None] + ["top_p"] * 4


def test_top_k_then_top_p_on_what_top_k_left():
    # After top-k=3 the three are 0.5/0.85, 0.2/0.85, 0.15/0.85: 0.588 + 0.235 = 0.82 reaches 0.8.
    r = reshape(dist(), top_k=3, top_p=0.8)
    assert [b.cut for b in r.bars] == [None, None, "top_p", "top_k", "top_k"]


def test_the_engines_order_differs_transformers_tempers_before_top_p_llama_cpp_after():
    # Temperature 0.5 sharpens: 0.5 -> 0.676 of the (listed) mass, enough for top_p = 0.6 alone.
    hf = reshape(dist("transformers"), temperature=0.5, top_p=0.6)
    assert [b.cut for b in hf.bars] == [None] + ["top_p"] * 4 and hf.order == "temperature_first"
    # llama.cpp cuts on the model's own probabilities (0.5 < 0.6: two tokens stay), then tempers them.
    ll = reshape(dist("llama.cpp"), temperature=0.5, top_p=0.6)
    assert [b.cut for b in ll.bars] == [None, None, "top_p", "top_p", "top_p"] and ll.order == "cuts_first"
    assert [b.probability for b in ll.kept] == pytest.approx([0.25 / 0.29, 0.04 / 0.29])
    # Asked for explicitly, the other order.
    assert reshape(dist("llama.cpp"), temperature=0.5, top_p=0.6, order="temperature_first").bars == hf.bars


def test_settings_out_of_range_are_refused_with_one_message():
    with pytest.raises(BackendError) as e:
        reshape(dist(), temperature=-1, top_p=0)
    assert "temperature" in e.value.message and "top_p" in e.value.message


def test_sample_is_reproducible_with_a_seed_and_never_picks_a_cut_token():
    r = reshape(dist(), temperature=1.5, top_k=3)
    draws = [sample(r, seed=s).token for s in range(300)]
    assert draws == [sample(r, seed=s).token for s in range(300)]
    assert set(draws) == {"t0", "t1", "t2"}  # every kept token is drawn sometimes, a cut one never
    # The frequencies follow the bars (300 draws: within a generous margin).
    share = draws.count("t0") / len(draws)
    assert abs(share - r.bars[0].probability) < 0.1


def test_an_empty_distribution():
    r = reshape(dist(probs=[]))
    assert r.bars == ()
    with pytest.raises(ValueError):
        sample(r)


def test_json_forms():
    d = dist()
    j = d.to_json()
    assert j["other"] == pytest.approx(0.0) and [t["token"] for t in j["tokens"]] == ["t0", "t1", "t2", "t3", "t4"]
    rj = reshape(d, top_k=1).to_json()
    assert rj["bars"][0] == {"token": "t0", "raw": 0.5, "probability": 1.0, "cut": None, "id": 0}
    assert rj["bars"][1]["cut"] == "top_k" and rj["order"] == "temperature_first"
