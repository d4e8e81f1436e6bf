"""Saved adapters: written atomically with their metadata, listed newest first, loaded (merged) onto a fresh
base model that then answers as the trained classifier did (tiny random Llama)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from llm_levels.core import BackendError
from llm_levels.finetune import FinetuneConfig, default_name, find_adapter, list_adapters, load_adapter_model
from llm_levels.finetune.adapters import META_FILE, save_adapter, slugify
from llm_levels.finetune.train import seeded_classifier, train_adapter
from tests.fixtures.models import cpu_settings

from .conftest import LABELS

CONFIG = FinetuneConfig(examples=None, epochs=1, batch_size=7, learning_rate=1e-2)


@pytest.fixture()
def trained(tiny_loaded, tiny_train):
    clf = seeded_classifier(tiny_loaded, LABELS, CONFIG)
    train_adapter(clf, tiny_train, CONFIG)
    return clf


def test_save_list_and_load_merged_gives_the_trained_answers(trained, tiny_train, tmp_path):
    info = save_adapter(trained, tmp_path, name="Tiny + test adapter", metrics={"weighted_f1": 0.5}, training={})
    assert info.folder == tmp_path / "tiny-test-adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", META_FILE} <= {p.name for p in info.folder.iterdir()}
    meta = json.loads((info.folder / META_FILE).read_text())
    assert meta["labels"] == list(LABELS) and meta["template"] == "instruct" and meta["metrics"]["weighted_f1"] == 0.5
    assert list_adapters(tmp_path) == [info] and find_adapter(tmp_path, "tiny-test-adapter") == info

    merged = load_adapter_model(info, cpu_settings())
    assert merged.display_name.endswith("+ Tiny + test adapter") and merged.spec == info.base_spec
    assert not any("lora" in n for n, _ in merged.model.named_modules())  # folded into the weights
    with torch.inference_mode():
        want = trained.label_logits(trained.encode(tiny_train[:3]))
        got = torch.stack(
            [
                merged.model(input_ids=torch.tensor([trained.prompt_ids(e.text)])).logits[0, -1, trained.label_ids]
                for e in tiny_train[:3]
            ]
        )
    assert torch.allclose(got, want, atol=1e-4)


def test_a_failed_save_leaves_nothing_and_broken_folders_are_not_listed(trained, tmp_path, monkeypatch):
    def crash(folder):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        raise OSError("disk full")

    monkeypatch.setattr(trained, "save", crash)
    with pytest.raises(OSError):
        save_adapter(trained, tmp_path, name="half", metrics={}, training={})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "no-metadata").mkdir()
    (tmp_path / "no-metadata" / "adapter_config.json").write_text("{}")
    assert list_adapters(tmp_path) == [] and list_adapters(tmp_path / "missing") == []
    with pytest.raises(BackendError, match="No saved adapter"):
        find_adapter(tmp_path, "half")


def test_saving_again_under_the_same_name_replaces_it(trained, tmp_path):
    first = save_adapter(trained, tmp_path, name="A", metrics={"weighted_f1": 0.1}, training={})
    second = save_adapter(trained, tmp_path, name="A", metrics={"weighted_f1": 0.9}, training={})
    assert first.folder == second.folder and list_adapters(tmp_path) == [second]


def test_an_adapter_for_other_weights_is_refused(trained, tmp_path, monkeypatch):
    import llm_levels.engine.transformers_loader as loader

    info = save_adapter(trained, tmp_path, name="A", metrics={}, training={})
    # The tiny model is a folder (no GGUF key): pretend the adapter came from one GGUF and the base now from another.
    other = dataclasses.replace(info, base_key="0" * 64)
    real = loader.load_model
    monkeypatch.setattr(
        loader,
        "load_model",
        lambda spec, settings, progress=None: dataclasses.replace(real(spec, settings), weights_key="1" * 64),
    )
    with pytest.raises(BackendError, match="other weights"):
        load_adapter_model(other, cpu_settings())


def test_names():
    assert default_name("SmolLM2-135M-Instruct (embedded GGUF)", ("negative", "neutral", "positive")) == (
        "SmolLM2 + financial-sentiment adapter"
    )
    assert default_name("Qwen2.5 0.5B", ("spam", "ham")) == "Qwen2.5 + spam-ham classifier adapter"
    assert slugify("SmolLM2 + financial-sentiment adapter") == "smollm2-financial-sentiment-adapter"
    with pytest.raises(BackendError):
        slugify("+++")
