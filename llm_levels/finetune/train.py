"""The training loop: a few epochs of AdamW on the adapters, seeded, with progress and Stop.

:func:`train_adapter` trains a :class:`~llm_levels.finetune.lora_model.LoraClassifier` on labelled rows
and reports a :class:`TrainProgress` after every step (examples done, total, examples/s, seconds left, the
current loss), so a page can draw the loss as it falls. Setting ``cancel`` stops it between two steps.

Reproducible: the adapters' initial weights come from ``torch.manual_seed(seed)`` (inside a forked RNG, so
the process's own random state is left alone) and the data order of every epoch from a generator seeded
with the same seed; the same rows, settings and seed give the same adapter.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..icl.data import Example, data_error
from ..icl.prompts import DEFAULT_TEMPLATE, get_template
from .lora_model import LoraSettings

MAX_EPOCHS = 50
LOSSES = ("answer", "labels")


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: how many training rows, epochs, the optimiser's step, the adapters, the seed."""

    #: Training rows used (balanced across labels); None: all of the training file.
    examples: int | None = 128
    epochs: int = 5
    #: At least this many optimiser steps (a small set repeats epochs to reach it); 0: exactly ``epochs``.
    min_steps: int = 0
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    lora: LoraSettings = field(default_factory=LoraSettings)
    #: The loss, read at the answer position only (never at the prompt's tokens). ``answer`` (default):
    #: cross-entropy of the gold label's token over the whole vocabulary (the classification loss over the
    #: labels plus -log P(the answer is a label at all)), plus that of the end-of-reply token right after
    #: it, so the adapted model also *says* just the label when it generates. ``labels``: the
    #: classification loss over the label tokens alone (generation is left untrained).
    loss: str = "answer"

    def __post_init__(self) -> None:
        if self.examples is not None and self.examples < 1:
            raise data_error("Train on at least one example.")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise data_error(f"Epochs must be between 1 and {MAX_EPOCHS}.")
        if self.batch_size < 1 or self.learning_rate <= 0:
            raise data_error("The batch size and the learning rate must be positive.")
        get_template(self.template)  # raises for an unknown name
        if self.loss not in LOSSES:
            raise data_error(f"Unknown loss {self.loss!r}: use {' or '.join(LOSSES)}.")

    def epochs_for(self, n: int) -> int:
        """The epochs run on ``n`` rows: ``epochs``, or more for a small set, to reach ``min_steps`` steps."""
        steps_per_epoch = math.ceil(n / self.batch_size)
        return min(MAX_EPOCHS, max(self.epochs, math.ceil(self.min_steps / steps_per_epoch)))


@dataclass(frozen=True)
class TrainProgress:
    """Where a fine-tune stands: what a progress bar and a live loss chart need.

    ``phase`` is ``preparing`` (once, before the frozen layers run over the training rows), ``training``
    (after every step: ``done``/``total`` count example passes over all epochs, ``loss`` is the step's) or
    ``evaluating`` (after every batch: ``done``/``total`` count evaluation rows, ``loss`` is the last step's).
    """

    done: int
    total: int
    examples_per_s: float
    eta_s: float | None
    loss: float
    epoch: int
    epochs: int
    phase: str = "training"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def describe(self) -> str:
        """``training · epoch 2/3 · 160/384 examples · 21.3 examples/s · about 11 s left · loss 0.412``."""
        if self.phase == "preparing":
            return f"preparing · {self.total} example passes to train"
        left = f" · about {self.eta_s:.0f} s left" if self.eta_s is not None else ""
        loss = f" · loss {self.loss:.3f}" if math.isfinite(self.loss) else ""
        unit = "rows" if self.phase == "evaluating" else "examples"
        epoch = "" if self.phase == "evaluating" else f" · epoch {self.epoch}/{self.epochs}"
        rate = f"{self.examples_per_s:.1f} {unit}/s"
        return f"{self.phase}{epoch} · {self.done}/{self.total} {unit} · {rate}{left}{loss}"


#: ``on_progress(progress)``: called after every training step.
OnProgress = Callable[[TrainProgress], None]


@dataclass
class TrainResult:
    """What training did: the loss after every step, the epochs, time, and whether Stop ended it early."""

    examples: int
    epochs: int
    steps: int
    losses: list[float]
    train_s: float
    encode_s: float
    stopped: bool = False


def train_adapter(
    clf: Any,
    rows: Sequence[Example],
    config: FinetuneConfig,
    *,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
    slots: Any = None,
    states: Any = None,
) -> TrainResult:
    """Train ``clf``'s adapters on ``rows`` (label strings must be among ``clf.labels``).

    ``states`` (from :func:`encode_for_training`) may be given when the caller already has them (a learning curve
    reuses one encoding for every training size). ``slots`` (the engine's admission line), when given, is
    held for each step so chat requests can run between two steps.
    """
    import torch

    t0 = time.perf_counter()
    if states is None:
        states = hold_line(slots, encode_for_training, clf, rows, config.batch_size)
    encode_s = time.perf_counter() - t0
    targets = torch.tensor([clf.labels.index(e.label) for e in rows], dtype=torch.long)
    epochs = config.epochs_for(len(rows))
    total = epochs * len(rows)
    steps_total = epochs * math.ceil(len(rows) / config.batch_size)
    params = clf.trainable_parameters
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, steps_total // 10)
    # Linear warm-up, then linear decay to zero: no step size to tune per training size.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps_total))
    order_rng = torch.Generator().manual_seed(config.seed)
    result = TrainResult(len(rows), epochs, 0, [], 0.0, encode_s)
    started = time.perf_counter()
    done = 0
    clf.peft.train()
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(rows), generator=order_rng).tolist()
            for i in range(0, len(order), config.batch_size):
                if cancel is not None and cancel.is_set():
                    result.stopped = True
                    return result
                idx = order[i : i + config.batch_size]
                loss = hold_line(slots, _step, clf, opt, states.take(idx), targets[idx], config.loss)
                sched.step()
                done += len(idx)
                result.steps += 1
                result.losses.append(loss)
                result.train_s = time.perf_counter() - started
                if on_progress is not None:
                    rate = done / result.train_s if result.train_s > 0 else 0.0
                    eta = (total - done) / rate if rate > 0 else None
                    on_progress(TrainProgress(done, total, rate, eta, loss, epoch, epochs))
    finally:
        clf.peft.eval()
        result.train_s = time.perf_counter() - started
    return result


def _step(clf: Any, opt: Any, batch: Any, targets: Any, loss_kind: str) -> float:
    import torch

    ce = torch.nn.functional.cross_entropy
    if loss_kind == "labels" or clf.end_id is None or not batch.with_answers:
        states = clf.answer_states(batch)
        if loss_kind == "labels":  # a softmax over the label tokens only
            loss = ce(states @ clf.label_rows.T, targets)
        else:
            loss = ce(clf.vocab_logits(states), torch.tensor(clf.label_ids, device=targets.device)[targets])
    else:  # the label over the whole vocabulary at the answer position, then the end of the reply after it
        answer, after = clf.answer_states(batch, after=True)
        loss = ce(clf.vocab_logits(answer), torch.tensor(clf.label_ids, device=targets.device)[targets])
        loss = loss + ce(clf.vocab_logits(after), torch.full_like(targets, clf.end_id))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def encode_for_training(clf: Any, rows: Sequence[Example], batch_size: int) -> Any:
    """``rows`` through the frozen layers once, each followed by its gold label (see ``LoraClassifier.encode``)."""
    return clf.encode(rows, batch_size, with_answers=True)


def hold_line(slots: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, holding the engine's line (when there is one) while it runs."""
    if slots is None:
        return fn(*args)
    slots.acquire()
    try:
        return fn(*args)
    finally:
        slots.release()


def seeded_classifier(loaded: Any, labels: Sequence[str], config: FinetuneConfig) -> Any:
    """A :class:`LoraClassifier` whose fresh adapters are initialised from ``config.seed``."""
    import torch

    from .lora_model import LoraClassifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LoraClassifier(loaded, labels, config.lora, config.template)
