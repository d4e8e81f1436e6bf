"""One fine-tune from start to end, for the Lab tab and the command line: train, evaluate, save.

:func:`run_finetune` trains fresh adapters on the training rows, scores the evaluation rows with the same
metrics as the prompting methods, and (when asked) saves the adapter with those metrics. It reports a
:class:`~llm_levels.finetune.train.TrainProgress` through ``on_progress`` (phase ``preparing``,
``training`` after every step, ``evaluating`` after every batch) and stops between two steps when
``cancel`` is set: a stopped fine-tune saves nothing and reports no metrics, only the losses so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..icl.data import Example, data_error
from .adapters import AdapterInfo, save_adapter
from .data import check_labels, drop_overlap, pick_training
from .evaluate import FinetuneRun, make_run, score_rows
from .train import FinetuneConfig, OnProgress, TrainProgress, TrainResult, seeded_classifier, train_adapter


@dataclass
class FinetuneOutcome:
    """What a fine-tune produced: the evaluated run (None when stopped), training facts, the saved adapter."""

    run: FinetuneRun | None
    train: TrainResult
    adapter: AdapterInfo | None = None
    dropped_overlap: int = 0

    @property
    def stopped(self) -> bool:
        return self.run is None


def run_finetune(
    loaded: Any,
    train_rows: Sequence[Example],
    eval_rows: Sequence[Example],
    labels: Sequence[str],
    config: FinetuneConfig,
    *,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
    slots: Any = None,
    save_as: str | None = None,
    adapters_dir: Path | None = None,
    train_source: str = "",
) -> FinetuneOutcome:
    """Fine-tune ``loaded`` (a transformers-engine model; it is not modified) on ``train_rows`` and
    evaluate on ``eval_rows``.

    Training rows whose sentence is also evaluated are dropped first; ``config.examples`` rows are then
    picked, balanced across ``labels`` (seeded). With ``save_as`` (an adapter name) and ``adapters_dir``,
    the finished adapter is saved there with its metrics. ``slots`` (the transformers engine's admission
    line) is held for each step and batch. Raises BackendError for unusable data or models.
    """
    labels = tuple(labels)
    if not eval_rows:
        raise data_error("No rows to evaluate.")
    kept, dropped = drop_overlap(train_rows, eval_rows)
    rows = pick_training(kept, config.examples, labels, config.seed)
    check_labels(rows, labels)
    report = on_progress or (lambda p: None)
    epochs = config.epochs_for(len(rows))
    report(TrainProgress(0, epochs * len(rows), 0.0, None, float("nan"), 0, epochs, phase="preparing"))
    clf = seeded_classifier(loaded, labels, config)
    train = train_adapter(clf, rows, config, on_progress=report, cancel=cancel, slots=slots)
    if train.stopped:
        return FinetuneOutcome(None, train, dropped_overlap=dropped)
    last_loss = train.losses[-1] if train.losses else float("nan")

    def on_rows(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        report(TrainProgress(done, total, rate, (total - done) / rate, last_loss, epochs, epochs, phase="evaluating"))

    t0 = time.perf_counter()
    scored = score_rows(clf, eval_rows, cancel=cancel, on_rows=on_rows, slots=slots)
    if len(scored) < len(eval_rows):  # stopped while evaluating: nothing is reported or saved
        return FinetuneOutcome(None, train, dropped_overlap=dropped)
    run = make_run(
        clf,
        scored,
        len(eval_rows),
        time.perf_counter() - t0,
        train=train,
        seed=config.seed,
        train_source=train_source,
    )
    adapter = None
    if save_as and adapters_dir is not None:
        adapter = save_adapter(
            clf,
            adapters_dir,
            name=save_as,
            metrics={k: v for k, v in run.to_dict().items() if k not in ("examples",)},
            training=training_facts(config, train, train_source),
        )
    return FinetuneOutcome(run, train, adapter, dropped)


def training_facts(config: FinetuneConfig, train: TrainResult, source: str) -> dict[str, Any]:
    """How an adapter was trained, for its metadata and the JSON results."""
    return {
        "source": source,
        "examples": train.examples,
        "epochs": train.epochs,
        "steps": train.steps,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lora_rank": config.lora.rank,
        "lora_alpha": config.lora.alpha,
        "lora_layers": config.lora.layers,
        "train_s": round(train.train_s + train.encode_s, 3),
        "loss_first": round(train.losses[0], 4) if train.losses else None,
        "loss_last": round(train.losses[-1], 4) if train.losses else None,
    }
