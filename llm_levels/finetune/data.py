"""Which labelled rows a fine-tune learns from, and which it is evaluated on (never the same ones).

- :func:`demo_training`: the demo set's rows (the 150 evaluated by the prompting methods and the 36 of
  the example pool) as one training file, for evaluating on a file of your own.
- :func:`demo_split`: when the evaluation rows come from the demo set too, a seeded, stratified split of
  those rows into a training part and an evaluation part.
- :func:`pick_training`: ``n`` training rows balanced across labels, in a seeded order; the rows picked for
  a smaller ``n`` are the first rows picked for a larger one, so a learning curve adds data, never swaps it.
- :func:`drop_overlap`: training rows whose sentence is also an evaluated sentence are dropped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..icl.data import Example, LabelledData, data_error, load_demo

#: The share of the demo set held apart for evaluation when training on the demo set too.
DEMO_EVAL_FRACTION = 1 / 3


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def demo_training() -> LabelledData:
    """The whole demo set (evaluation rows and example pool) as training data."""
    data, pool = load_demo()
    return LabelledData(list(data.examples) + list(pool.examples), "demo (all 186 rows)", "csv")


def demo_split(seed: int = 0, eval_fraction: float = DEMO_EVAL_FRACTION) -> tuple[LabelledData, LabelledData]:
    """(training split, evaluation split) of the demo set: ``eval_fraction`` of each label's rows of the
    150-row evaluation file are held apart (chosen by ``seed``); the rest and the example pool train."""
    data, pool = load_demo()
    rng = random.Random(f"finetune-demo-split:{seed}")
    held: set[int] = set()
    for label in data.labels:
        idx = [i for i, e in enumerate(data.examples) if e.label == label]
        rng.shuffle(idx)
        held.update(idx[: max(1, round(len(idx) * eval_fraction))])
    train = [e for i, e in enumerate(data.examples) if i not in held] + list(pool.examples)
    evaluated = [e for i, e in enumerate(data.examples) if i in held]
    return (
        LabelledData(train, "demo (training split)", "csv"),
        LabelledData(evaluated, "demo (evaluation split)", "csv"),
    )


def drop_overlap(train: Sequence[Example], evaluated: Sequence[Example]) -> tuple[list[Example], int]:
    """The training rows whose sentence (case and spacing ignored) is not an evaluated one, and how many
    were dropped: a model must never be scored on a sentence it was trained on."""
    seen = {_norm(e.text) for e in evaluated}
    kept = [e for e in train if _norm(e.text) not in seen]
    return kept, len(train) - len(kept)


def pick_training(examples: Sequence[Example], n: int | None, labels: Sequence[str], seed: int) -> list[Example]:
    """``n`` rows (all when ``n`` is None or larger than the file) balanced across ``labels``.

    Each label's rows are shuffled by ``seed``; rows are then taken one label at a time in turn, so every
    prefix of the result is as balanced as the file allows and a smaller ``n`` picks a subset of a larger
    one. Rows whose label is not in ``labels`` are skipped.
    """
    if n is not None and n < 1:
        raise data_error("Train on at least one example.")
    rng = random.Random(f"finetune-train:{seed}")
    queues: list[list[Example]] = []
    for label in labels:
        rows = [e for e in examples if e.label == label]
        rng.shuffle(rows)
        queues.append(rows)
    out: list[Example] = []
    want = sum(len(q) for q in queues) if n is None else n
    depth = 0
    while len(out) < want and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < want:
                out.append(q[depth])
        depth += 1
    if not out:
        raise data_error("No training rows carry the evaluated labels.")
    return out


def check_labels(train: Sequence[Example], labels: Sequence[str]) -> None:
    """Raise a clear error when the training rows miss a label the evaluation uses."""
    have = {e.label for e in train}
    missing = [lab for lab in labels if lab not in have]
    if missing:
        raise data_error(
            f"The training data has no rows labelled {', '.join(map(repr, missing))}: "
            "a fine-tune cannot learn a label it never sees."
        )
