"""The fast weights on disk: a round trip gives the same decoder, bad files are ignored, warm loads use them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llm_levels.fastpath import store
from llm_levels.fastpath.decoder import FastDecoder
from llm_levels.fastpath.llama import LlamaFast
from llm_levels.fastpath.qlinear import available_kinds
from llm_levels.models import apply_fast_path, load_model
from tests.fixtures.models import cpu_settings

pytestmark = pytest.mark.skipif("int8" not in available_kinds(), reason="no int8 kernels in this torch build")


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir):
    return load_model(str(tiny_causal_dir), cpu_settings(local_fast_path=False))


def decode_two(fast: LlamaFast) -> torch.Tensor:
    cache = fast.new_cache(12)
    first = int(torch.argmax(fast.prefill([5, 6, 7, 8], cache)))
    return torch.stack([fast.decode([first], [cache])[0], fast.decode([3], [cache])[0]])


def test_stored_weights_decode_exactly_like_freshly_built_ones(tiny, tmp_path):
    built = LlamaFast(tiny.model, quantize="int8")
    path = store.store_path(tmp_path, "ab" * 32, "int8")
    store.save(built, path)
    assert path.is_file() and not list(path.parent.glob(".tmp-*"))  # written atomically
    stored = store.load(path, len(built.layers))
    assert stored is not None
    again = LlamaFast(tiny.model, quantize="int8", stored=stored)
    assert torch.equal(decode_two(again), decode_two(built))


def test_the_file_name_carries_what_the_weights_depend_on(tmp_path):
    path = store.store_path(tmp_path, "c0ffee" * 10, "int8")
    name = path.name
    assert name.startswith("c0ffee") and "-int8-" in name and "torch" in name and ("vnni" in name)
    assert path.parent == tmp_path / "fast"


def test_missing_damaged_or_foreign_files_are_ignored(tiny, tmp_path):
    built = LlamaFast(tiny.model, quantize="int8")
    path = tmp_path / "w.safetensors"
    assert store.load(path, len(built.layers)) is None  # missing
    path.write_bytes(b"not a safetensors file")
    assert store.load(path, len(built.layers)) is None  # damaged
    store.save(built, path)
    assert store.load(path, len(built.layers) + 1) is None  # another layout
    with pytest.raises(ValueError, match="int8"):
        store.save(LlamaFast(tiny.model, quantize="float32"), path)


def test_a_warm_load_takes_the_stored_weights_and_skips_the_self_check(tiny, tmp_path, monkeypatch):
    settings = cpu_settings(cache_dir=tmp_path, local_fast_path=True)
    first = apply_fast_path(replace(tiny, fast=None, weights_key="12" * 32), settings)
    try:
        assert first.fast is not None and not first.fast.decoder.from_store
    finally:
        first.fast.close()
    assert len(list((tmp_path / "fast").glob("*.safetensors"))) == 1

    def no_check(self, steps=3):
        raise AssertionError("stored weights passed the check when they were written")

    monkeypatch.setattr(FastDecoder, "self_check", no_check)
    second = apply_fast_path(replace(tiny, fast=None, weights_key="12" * 32), settings)
    try:
        assert second.fast is not None and second.fast.decoder.from_store
        assert second.fast_path == first.fast_path
        assert torch.equal(decode_two(second.fast.decoder.impl), decode_two(first.fast.decoder.impl))
    finally:
        second.fast.close()


def test_models_without_a_weights_key_are_not_stored(tiny, tmp_path):
    loaded = apply_fast_path(replace(tiny, fast=None, weights_key=""), cpu_settings(cache_dir=tmp_path))
    try:
        assert loaded.fast is not None and not loaded.fast.decoder.from_store
    finally:
        loaded.fast.close()
    assert not (tmp_path / "fast").exists()
