"""Classification metrics for the lab, computed by hand (no scikit-learn dependency).

Definitions match scikit-learn's ``classification_report`` with ``zero_division=0``:

- an *invalid* answer (no label could be read from it) counts as wrong: it lowers accuracy and the
  recall of its true label, but is not a prediction of any label, so it does not touch precision;
- macro F1 averages the F1 of the labels that occur in the gold rows or in the valid predictions;
- weighted F1 weights each label's F1 by its support (its number of gold rows).

The confusion matrix has one row per gold label and one column per label plus a last ``(invalid)``
column, so every evaluated row is counted exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

INVALID = "(invalid)"


@dataclass(frozen=True)
class ClassStats:
    """Precision, recall, F1 and support of one label."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Every number the lab reports for one run."""

    n: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    invalid_rate: float
    n_invalid: int
    labels: tuple[str, ...]
    per_class: dict[str, ClassStats]
    #: rows: gold labels in ``labels`` order; columns: ``labels`` then ``(invalid)``.
    confusion: list[list[int]]

    @property
    def confusion_columns(self) -> list[str]:
        return list(self.labels) + [INVALID]

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "invalid_rate": self.invalid_rate,
            "n_invalid": self.n_invalid,
            "labels": list(self.labels),
            "per_class": {k: asdict(v) for k, v in self.per_class.items()},
            "confusion": [list(r) for r in self.confusion],
            "confusion_columns": self.confusion_columns,
        }


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def compute_metrics(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> Metrics:
    """Metrics of predictions ``pred`` (``None`` = invalid answer) against ``gold`` over ``labels``.

    Labels in ``gold`` or ``pred`` that are not in ``labels`` are added (in sorted order) so nothing is
    lost.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    extra = sorted({g for g in gold if g not in labels} | {p for p in pred if p is not None and p not in labels})
    labels = tuple(labels) + tuple(extra)
    col = {lab: i for i, lab in enumerate(labels)}
    confusion = [[0] * (len(labels) + 1) for _ in labels]
    for g, p in zip(gold, pred):
        confusion[col[g]][len(labels) if p is None else col[p]] += 1

    n = len(gold)
    n_invalid = sum(p is None for p in pred)
    correct = sum(confusion[i][i] for i in range(len(labels)))
    per_class: dict[str, ClassStats] = {}
    for i, lab in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[r][i] for r in range(len(labels)))
        support = sum(confusion[i])
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        per_class[lab] = ClassStats(precision, recall, f1, support)

    present = [
        lab
        for i, lab in enumerate(labels)
        if per_class[lab].support > 0 or any(confusion[r][i] for r in range(len(labels)))
    ]
    macro = _safe_div(sum(per_class[lab].f1 for lab in present), len(present))
    weighted = _safe_div(sum(s.f1 * s.support for s in per_class.values()), n)
    return Metrics(
        n=n,
        accuracy=_safe_div(correct, n),
        macro_f1=macro,
        weighted_f1=weighted,
        invalid_rate=_safe_div(n_invalid, n),
        n_invalid=n_invalid,
        labels=labels,
        per_class=per_class,
        confusion=confusion,
    )
