"""Which rows a fine-tune trains on: balanced, nested, seeded picks; never an evaluated sentence."""

from __future__ import annotations

import pytest

from llm_levels.core import BackendError
from llm_levels.finetune.data import check_labels, demo_split, demo_training, drop_overlap, pick_training
from llm_levels.icl.data import Example, load_demo

LABELS = ("negative", "neutral", "positive")


def test_pick_training_is_balanced_nested_and_seeded():
    train = demo_training().examples
    eight = pick_training(train, 8, LABELS, seed=0)
    thirty = pick_training(train, 30, LABELS, seed=0)
    assert thirty[:8] == eight  # a smaller size is a prefix of a larger one: the curve adds data
    assert {lab: sum(e.label == lab for e in thirty) for lab in LABELS} == {lab: 10 for lab in LABELS}
    assert pick_training(train, 30, LABELS, seed=0) == thirty
    assert pick_training(train, 30, LABELS, seed=1) != thirty
    assert len(pick_training(train, None, LABELS, seed=0)) == len(train) == 186


def test_pick_training_takes_what_a_small_label_has_then_the_rest():
    rows = [Example(f"p{i}", "positive") for i in range(5)] + [Example("n0", "negative")]
    picked = pick_training(rows, 4, ("negative", "positive"), seed=0)
    assert [e.label for e in picked].count("negative") == 1 and len(picked) == 4


def test_demo_split_holds_a_third_of_each_label_apart_and_never_shares_a_sentence():
    train, evaluated = demo_split(seed=0)
    data, pool = load_demo()
    assert len(evaluated.examples) == 51 and len(train.examples) == 186 - 51
    assert {lab: sum(e.label == lab for e in evaluated.examples) for lab in LABELS} == {lab: 17 for lab in LABELS}
    assert not {e.text for e in train.examples} & {e.text for e in evaluated.examples}
    assert set(e.text for e in pool.examples) <= {e.text for e in train.examples}
    assert demo_split(seed=1)[1].examples != evaluated.examples


def test_drop_overlap_ignores_case_and_spacing():
    train = [Example("Sales  rose.", "positive"), Example("Sales fell.", "negative")]
    kept, dropped = drop_overlap(train, [Example("sales rose.", "positive")])
    assert kept == [train[1]] and dropped == 1


def test_training_rows_must_cover_every_label():
    with pytest.raises(BackendError, match="neutral"):
        check_labels([Example("a", "positive"), Example("b", "negative")], LABELS)
    with pytest.raises(BackendError):
        pick_training([Example("a", "other")], 4, LABELS, seed=0)
