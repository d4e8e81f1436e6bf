"""A saved fine-tuned adapter as a local model: ``adapter:<name>`` in the model manager, and one backend option per
adapter (``local:adapter:<name>``) in the runtime's pickers, on the transformers engine (tiny random Llama)."""

from __future__ import annotations

import pytest

from llm_levels.core import BackendError, GenParams, Message
from llm_levels.engine import LLAMA_CPP, TRANSFORMERS
from llm_levels.engine.manager import adapter_display_name
from llm_levels.engine.resolve import adapter_name
from llm_levels.finetune import FinetuneConfig, adapters_root
from llm_levels.finetune.adapters import save_adapter
from llm_levels.finetune.train import seeded_classifier, train_adapter
from llm_levels.icl.data import Example
from llm_levels.runtime import AppRuntime
from llm_levels.turns import Done, Started, TurnRequest, run_turn
from tests.fixtures.models import cpu_settings

LABELS = ("negative", "positive")
NAME = "Tiny + test adapter"
SLUG = "tiny-test-adapter"


@pytest.fixture(scope="module")
def settings(tiny_causal_dir, tmp_path_factory):
    """Settings whose cache holds one adapter trained on the tiny model."""
    from llm_levels.models import load_model

    s = cpu_settings(cache_dir=tmp_path_factory.mktemp("cache"), local_model=str(tiny_causal_dir))
    config = FinetuneConfig(examples=None, epochs=1, batch_size=4, learning_rate=1e-2)
    rows = [Example(f"sales rose {i}", "positive", i, "t") for i in range(4)]
    rows += [Example(f"sales fell {i}", "negative", 10 + i, "t") for i in range(4)]
    clf = seeded_classifier(load_model(str(tiny_causal_dir), s), LABELS, config)
    train_adapter(clf, rows, config)
    save_adapter(clf, adapters_root(s), name=NAME, metrics={"weighted_f1": 0.5}, training={})
    return s


def test_adapter_specs_are_recognised():
    assert adapter_name("adapter:x") == "x" and adapter_name(" adapter: my one ") == "my one"
    assert adapter_name("adapter:") == "" and adapter_name("embedded") is None and adapter_name(None) is None
    assert adapter_display_name("SmolLM2 + financial-sentiment adapter", "SmolLM2-135M") == (
        "SmolLM2 + financial-sentiment adapter"
    )
    assert adapter_display_name("sentiment", "SmolLM2-135M-Instruct (embedded GGUF)") == "SmolLM2 + sentiment adapter"


def test_each_saved_adapter_is_a_transformers_backend_option(settings):
    rt = AppRuntime(settings)
    opts = {o.id: o.label for o in rt.backend_options()}
    option = f"local:adapter:{SLUG}"
    assert opts[option] == f"{NAME} (transformers)"
    assert rt.engine_of(option) == TRANSFORMERS and rt.spec_of(option) == f"adapter:{SLUG}"
    assert rt.spec_of("local") is None and rt.engine_of("local:transformers") == TRANSFORMERS


def test_no_adapters_no_options(tmp_path):
    rt = AppRuntime(cpu_settings(cache_dir=tmp_path))
    assert not [o for o in rt.backend_options() if o.id.startswith("local:adapter:")]


def test_the_manager_loads_an_adapter_by_name_or_folder_on_transformers_only(settings):
    rt = AppRuntime(settings)
    loaded = rt.models.get(f"adapter:{NAME}", engine=TRANSFORMERS)
    assert loaded.display_name == NAME and loaded.spec == settings.local_model  # the base model's files
    assert not any("lora" in n for n, _ in loaded.model.named_modules())  # merged into the weights
    assert rt.models.status(f"adapter:{NAME}", engine=TRANSFORMERS).state == "ready"
    with pytest.raises(BackendError, match="transformers engine only"):
        rt.models.get(f"adapter:{SLUG}", engine=LLAMA_CPP)
    with pytest.raises(BackendError, match="No saved adapter called 'nope'"):
        rt.models.get("adapter:nope", engine=TRANSFORMERS)
    with pytest.raises(BackendError, match="Name the adapter"):
        rt.models.get("adapter:", engine=TRANSFORMERS)


def test_a_turn_on_the_adapter_option_answers_with_the_adapter_model(settings):
    rt = AppRuntime(settings)
    option = f"local:adapter:{SLUG}"
    assert rt.backend(option).loaded.display_name == NAME
    events = list(
        run_turn(rt, TurnRequest(option, [Message("user", "hello")], GenParams(max_new_tokens=3, temperature=0.0)))
    )
    started = next(e for e in events if isinstance(e, Started))
    assert started.backend.loaded.display_name == NAME  # not the base model (the opener passes the option's spec)
    assert isinstance(events[-1], Done)
