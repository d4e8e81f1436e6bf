"""Metrics against a case computed by hand."""

from __future__ import annotations

import pytest

from llm_levels.icl.metrics import compute_metrics


def test_hand_computed_case():
    gold = ["pos", "pos", "pos", "neg", "neg", "neu"]
    pred = ["pos", "neg", None, "neg", "pos", "neu"]
    m = compute_metrics(gold, pred, ("neg", "neu", "pos"))
    # pos: tp=1, predicted 2, support 3 -> P=.5 R=1/3 F1=.4 ; neg: tp=1, predicted 2, support 2 -> P=.5 R=.5 F1=.5
    # neu: P=R=F1=1, support 1
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.per_class["pos"].precision == pytest.approx(0.5)
    assert m.per_class["pos"].recall == pytest.approx(1 / 3)
    assert m.per_class["pos"].f1 == pytest.approx(0.4)
    assert m.per_class["neg"].f1 == pytest.approx(0.5)
    assert m.per_class["neu"].f1 == pytest.approx(1.0)
    assert m.macro_f1 == pytest.approx((0.4 + 0.5 + 1.0) / 3)
    assert m.weighted_f1 == pytest.approx((0.4 * 3 + 0.5 * 2 + 1.0 * 1) / 6)
    assert m.invalid_rate == pytest.approx(1 / 6) and m.n_invalid == 1
    assert m.confusion == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1]]
    assert m.confusion_columns == ["neg", "neu", "pos", "(invalid)"]
