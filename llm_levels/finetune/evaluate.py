"""Scoring a fine-tuned classifier on evaluation rows, with the prompting methods' metrics.

The result is a :class:`FinetuneRun`: the Lab's :class:`~llm_levels.icl.runner.RunResult` (method
``finetune``, zero examples in the prompt: what was learnt is in the adapter) plus what training did, so the
table, the confusion matrix, the per-class scores, the JSON and the CSV are the same as for *score* and
*generate*.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..icl.data import Example
from ..icl.runner import RowResult, RunResult

METHOD = "finetune"


@dataclass
class FinetuneRun(RunResult):
    """A :class:`RunResult` of the fine-tune method, with the training facts in its JSON."""

    train_examples: int = 0
    epochs: int = 0
    train_s: float = 0.0
    seed: int = 0
    train_source: str = ""
    losses: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            {
                "train_examples": self.train_examples,
                "epochs": self.epochs,
                "train_s": round(self.train_s, 3),
                "seed": self.seed,
                "train_source": self.train_source,
                "loss_first": round(self.losses[0], 4) if self.losses else None,
                "loss_last": round(self.losses[-1], 4) if self.losses else None,
            }
        )
        return out


def score_rows(
    clf: Any,
    rows: Sequence[Example],
    *,
    batch_size: int = 16,
    states: Any = None,
    cancel: threading.Event | None = None,
    on_rows: Callable[[int, int], None] | None = None,
    slots: Any = None,
) -> list[RowResult]:
    """Every row's predicted label (the most likely of the labels at the answer position) and the
    log-probability of each label; stops early (fewer rows back) when ``cancel`` is set.

    ``on_rows(done, total)`` is called after each batch.
    """
    import torch

    if states is None:
        states = clf.encode(rows, batch_size)
    out: list[RowResult] = []
    clf.peft.eval()
    for i in range(0, len(rows), batch_size):
        if cancel is not None and cancel.is_set():
            break
        if slots is not None:
            slots.acquire()
        try:
            with torch.inference_mode():
                batch = states.take(range(i, min(i + batch_size, len(rows))))
                logp = torch.log_softmax(clf.label_logits(batch).float(), dim=-1)
        finally:
            if slots is not None:
                slots.release()
        for e, row in zip(rows[i : i + batch_size], logp.tolist()):
            scores = {lab: round(v, 4) for lab, v in zip(clf.labels, row)}
            pred = max(clf.labels, key=lambda lab: scores[lab])
            out.append(RowResult(e.line, e.text, e.label, pred, pred, scores))
        if on_rows is not None:
            on_rows(len(out), len(rows))
    return out


def make_run(
    clf: Any, rows: list[RowResult], total: int, elapsed_s: float, *, train: Any, seed: int, train_source: str
) -> FinetuneRun:
    """The :class:`FinetuneRun` of scored ``rows`` (``train``: the :class:`~.train.TrainResult`)."""
    return FinetuneRun(
        shots=0,
        method=METHOD,
        template=clf.template,
        labels=tuple(clf.labels),
        examples=[],
        total=total,
        rows=rows,
        elapsed_s=elapsed_s,
        complete=len(rows) == total,
        train_examples=train.examples,
        epochs=train.epochs,
        train_s=train.train_s + train.encode_s,
        seed=seed,
        train_source=train_source,
        losses=tuple(x for x in train.losses if math.isfinite(x)),
    )


def timed_score(clf: Any, rows: Sequence[Example], **kwargs: Any) -> tuple[list[RowResult], float]:
    """:func:`score_rows` and the seconds it took."""
    t0 = time.perf_counter()
    out = score_rows(clf, rows, **kwargs)
    return out, time.perf_counter() - t0
