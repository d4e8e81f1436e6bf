"""The embedded SmolLM2 fine-tuned for real (small: 16 demo rows, one epoch): the same seed and data give the
same adapter metrics, and the saved adapter, loaded merged for generation, answers as the classifier did."""

from __future__ import annotations

import pytest
import torch

from llm_levels.backends.local_hf import LocalBackend
from llm_levels.config import Settings
from llm_levels.finetune import FinetuneConfig, demo_split, list_adapters, load_adapter_model, run_finetune
from llm_levels.icl.prompts import get_template

pytestmark = pytest.mark.slow
LABELS = ("negative", "neutral", "positive")
CONFIG = FinetuneConfig(examples=16, epochs=1, seed=7)


def test_same_seed_same_data_same_adapter_metrics_and_the_saved_adapter_answers_alike(embedded_model, tmp_path):
    train, evaluated = demo_split(seed=0)
    rows = evaluated.examples[:9]
    first = run_finetune(embedded_model, train.examples, rows, LABELS, CONFIG, save_as="a", adapters_dir=tmp_path)
    again = run_finetune(embedded_model, train.examples, rows, LABELS, CONFIG)
    assert first.train.losses == again.train.losses and first.train.steps == 2
    assert [r.scores for r in first.run.rows] == [r.scores for r in again.run.rows]
    one, two = first.run.to_dict(), again.run.to_dict()
    assert one["weighted_f1"] == two["weighted_f1"] and one["confusion"] == two["confusion"]

    (saved,) = list_adapters(tmp_path)
    assert saved.base_key == embedded_model.weights_key and saved.metrics["n"] == 9
    merged = load_adapter_model(saved, Settings.from_env())  # its own copy, adapter folded in
    assert merged.model is not embedded_model.model
    backend = LocalBackend(merged)
    label_ids = [embedded_model.tokenizer(lab, add_special_tokens=False)["input_ids"][0] for lab in LABELS]
    with torch.inference_mode():
        for row in first.run.rows[:2]:
            ids = backend.prepare(get_template("instruct").messages(row.text, [], LABELS)).ids
            logits = merged.model(input_ids=torch.tensor([ids])).logits[0, -1, label_ids]
            got = dict(zip(LABELS, torch.log_softmax(logits, -1).tolist()))
            assert all(abs(got[lab] - row.scores[lab]) < 2e-3 for lab in LABELS)
