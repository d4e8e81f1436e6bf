"""Training and one fine-tune end to end on a tiny random Llama: seeded, reported step by step, Stop saves
nothing, the results have the prompting methods' shape."""

from __future__ import annotations

import threading

import pytest
import torch

from llm_levels.core import BackendError
from llm_levels.finetune import FinetuneConfig, list_adapters, run_finetune
from llm_levels.finetune.train import seeded_classifier, train_adapter

from .conftest import LABELS

CONFIG = FinetuneConfig(examples=None, epochs=2, batch_size=4, learning_rate=1e-2, seed=3)


def _adapter_weights(clf):
    return [p.detach().clone() for p in clf.trainable_parameters]


def test_same_seed_same_adapter_other_seed_another(tiny_loaded, tiny_train):
    runs = []
    for seed in (3, 3, 4):
        config = FinetuneConfig(examples=None, epochs=2, batch_size=4, learning_rate=1e-2, seed=seed)
        clf = seeded_classifier(tiny_loaded, LABELS, config)
        train_adapter(clf, tiny_train, config)
        runs.append(_adapter_weights(clf))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_progress_reports_every_step_with_rate_time_left_and_loss(tiny_loaded, tiny_train):
    seen = []
    clf = seeded_classifier(tiny_loaded, LABELS, CONFIG)
    result = train_adapter(clf, tiny_train, CONFIG, on_progress=seen.append)
    assert [p.done for p in seen] == [4, 8, 12, 14, 18, 22, 26, 28]  # 14 rows, batches of 4, two epochs
    assert all(p.total == 28 and p.examples_per_s > 0 and p.loss > 0 for p in seen)
    assert seen[-1].eta_s == 0 and seen[0].eta_s > 0 and [p.epoch for p in seen] == [1] * 4 + [2] * 4
    assert result.losses == [p.loss for p in seen]
    assert "epoch 2/2 · 28/28 examples" in seen[-1].describe()


def test_run_finetune_scores_like_the_prompting_methods_and_saves_the_adapter(
    tiny_loaded, tiny_train, tiny_eval, tmp_path
):
    out = run_finetune(
        tiny_loaded,
        tiny_train + tiny_eval,
        tiny_eval,
        LABELS,
        CONFIG,
        save_as="Tiny + test adapter",
        adapters_dir=tmp_path,
    )
    assert out.dropped_overlap == len(tiny_eval)  # evaluated sentences never train
    doc = out.run.to_dict()
    assert doc["method"] == "finetune" and doc["n"] == len(tiny_eval) and doc["invalid_rate"] == 0
    assert doc["train_examples"] == len(tiny_train) and doc["epochs"] == 2 and doc["seed"] == 3
    assert sum(map(sum, doc["confusion"])) == len(tiny_eval) and 0 <= doc["weighted_f1"] <= 1
    assert [a.name for a in list_adapters(tmp_path)] == ["Tiny + test adapter"]
    assert out.adapter.metrics["weighted_f1"] == doc["weighted_f1"] and out.adapter.training["examples"] == 14


def test_stop_during_training_saves_nothing(tiny_loaded, tiny_train, tiny_eval, tmp_path):
    cancel = threading.Event()

    def stop_after_first_step(p):
        if p.phase == "training":
            cancel.set()

    out = run_finetune(
        tiny_loaded,
        tiny_train,
        tiny_eval,
        LABELS,
        CONFIG,
        on_progress=stop_after_first_step,
        cancel=cancel,
        save_as="never",
        adapters_dir=tmp_path,
    )
    assert out.stopped and out.run is None and out.train.steps == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_refused_before_any_work():
    with pytest.raises(BackendError):
        FinetuneConfig(epochs=0)
    with pytest.raises(BackendError):
        FinetuneConfig(examples=0)
    with pytest.raises(BackendError):
        FinetuneConfig(template="nope")


def test_both_losses_train_and_the_answer_loss_also_teaches_the_end_of_the_reply(tiny_loaded, tiny_train):
    import dataclasses

    from llm_levels.finetune.train import encode_for_training

    for kind in ("answer", "labels"):
        config = dataclasses.replace(CONFIG, loss=kind, epochs=4)
        clf = seeded_classifier(tiny_loaded, LABELS, config)
        result = train_adapter(clf, tiny_train, config)
        assert result.losses[-1] < result.losses[0], kind
    # After the answer loss, the reply's end is the likeliest token right after the label.
    config = dataclasses.replace(CONFIG, epochs=8)
    clf = seeded_classifier(tiny_loaded, LABELS, config)
    train_adapter(clf, tiny_train, config)
    with torch.inference_mode():
        _, after = clf.answer_states(encode_for_training(clf, tiny_train, 8), after=True)
        assert (clf.vocab_logits(after).argmax(-1) == clf.end_id).all()
    with pytest.raises(BackendError):
        FinetuneConfig(loss="nope")
