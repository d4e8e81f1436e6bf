"""Prompt building (no leakage, balance, the article's template verbatim) and label parsing."""

from __future__ import annotations

from collections import Counter

import pytest

from llm_levels.core import BackendError
from llm_levels.icl.data import Example, load_demo, parse_labelled
from llm_levels.icl.prompts import ARTICLE_QUESTION, get_template, parse_label, select_examples
from llm_levels.icl.runner import LabConfig, prepare_data

LABELS = ("negative", "neutral", "positive")


def test_examples_balanced_deterministic_and_never_evaluated_rows():
    ev, pool = load_demo()
    a = select_examples(pool.examples, 6, LABELS, seed=1, exclude=ev.examples)
    assert Counter(e.label for e in a) == {"negative": 2, "neutral": 2, "positive": 2}
    assert a == select_examples(pool.examples, 6, LABELS, seed=1, exclude=ev.examples)
    # A pool that contains an evaluated row (case/space variant) never hands it out.
    leak = Example("  " + ev.examples[0].text.upper() + " ", ev.examples[0].label)
    for seed in range(20):
        got = select_examples([leak] + pool.examples, 3, LABELS, seed=seed, exclude=ev.examples)
        assert leak not in got


def test_prepare_data_splits_a_pool_off_a_single_file():
    rows = "".join(f"sentence {lab} {i},{lab}\n" for lab in LABELS for i in range(5))
    data = parse_labelled("text,label\n" + rows, "csv")
    eval_rows, pool = prepare_data(data, None, LabConfig(shots=(0, 3), seed=4))
    assert len(pool) == 3 and len(eval_rows) == 12
    assert not {e.text for e in pool} & {e.text for e in eval_rows}
    ex = select_examples(pool, 3, LABELS, 4, exclude=eval_rows)
    assert Counter(e.label for e in ex) == {"negative": 1, "neutral": 1, "positive": 1}
    with pytest.raises(BackendError, match="only 3 usable rows"):
        select_examples(pool, 4, LABELS, 4, exclude=eval_rows)


def test_article_template_is_verbatim():
    t = get_template("article")
    zero = t.messages("Sales rose.", [], LABELS)
    assert [m.to_dict() for m in zero] == [{"role": "user", "content": f"{ARTICLE_QUESTION}\nSales rose."}]
    one = t.messages("Sales rose.", [Example("Loss widened.", "negative")], LABELS)
    assert one[0].content == f"{ARTICLE_QUESTION}\nLoss widened.\nnegative\n\n{ARTICLE_QUESTION}\nSales rose."
    inst = get_template("instruct").messages("Sales rose.", [Example("Loss widened.", "negative")], LABELS)
    assert [m.role for m in inst] == ["system", "user", "assistant", "user"] and inst[2].content == "negative"
    with pytest.raises(BackendError, match="Unknown template"):
        get_template("nope")


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ("  NEUTRAL\n", "neutral"),
        ("The sentiment is positive.", "positive"),
        ("Bullish", "positive"),
        ("not positive, it is negative", "negative"),
        ("Positive. Not negative.", "positive"),
        ("positive or negative", None),
        ("neither positive nor negative", None),
        ("", None),
        ("I like cake", None),
        ("Answer:\nneutral", "neutral"),
    ],
)
def test_parse_label(answer, expected):
    assert parse_label(answer, LABELS) == expected
