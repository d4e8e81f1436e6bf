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


def test_a_prefetch_reads_what_load_reads_and_the_warm_load_takes_it(tiny, tmp_path, monkeypatch):
    settings = cpu_settings(cache_dir=tmp_path, local_fast_path=True)
    key = "34" * 32
    first = apply_fast_path(replace(tiny, fast=None, weights_key=key), settings)
    first.fast.close()
    path = store.store_path(tmp_path, key, "int8")
    n_layers = len(tiny.model.model.layers)

    assert store.Prefetch(tmp_path / "missing.safetensors", n_layers).result() is None
    prefetched = store.Prefetch(path, n_layers)
    layers = prefetched.result()
    assert layers is not None and set(layers) == set(store.load(path, n_layers))

    # The warm load uses the prefetched layers: it does not read the file again, nor check them.
    def no_read(*a, **k):
        raise AssertionError("read the store again")

    monkeypatch.setattr(store, "load", no_read)
    monkeypatch.setattr(FastDecoder, "self_check", no_read)
    second = apply_fast_path(replace(tiny, fast=None, weights_key=key), settings, prefetched=prefetched)
    try:
        assert second.fast is not None and second.fast.decoder.from_store
        assert torch.equal(decode_two(second.fast.decoder.impl), decode_two(first.fast.decoder.impl))
    finally:
        second.fast.close()


def test_a_prefetch_for_another_file_is_ignored(tiny, tmp_path):
    settings = cpu_settings(cache_dir=tmp_path, local_fast_path=True)
    other = store.Prefetch(tmp_path / "other.safetensors", len(tiny.model.model.layers))
    loaded = apply_fast_path(replace(tiny, fast=None, weights_key="56" * 32), settings, prefetched=other)
    try:
        # Not the store file of this model: built and checked as without a prefetch (and stored).
        assert loaded.fast is not None and not loaded.fast.decoder.from_store
    finally:
        loaded.fast.close()
    assert store.store_path(tmp_path, "56" * 32, "int8").is_file()


def test_the_loader_prefetches_only_a_stored_file_it_will_use(tiny, tmp_path):
    from llm_levels.models import _prefetch_fast_store

    key = "78" * 32
    converted = tmp_path / "converted" / key
    converted.mkdir(parents=True)
    (converted / "config.json").write_text(f'{{"num_hidden_layers": {len(tiny.model.model.layers)}}}')
    on = cpu_settings(cache_dir=tmp_path, local_fast_path=True)
    assert _prefetch_fast_store(on, key, converted) is None  # nothing stored yet
    apply_fast_path(replace(tiny, fast=None, weights_key=key), on).fast.close()
    prefetched = _prefetch_fast_store(on, key, converted)
    assert prefetched is not None and prefetched.path == store.store_path(tmp_path, key, "int8")
    assert prefetched.result() is not None
    assert _prefetch_fast_store(replace(on, local_fast_path=False), key, converted) is None
    assert _prefetch_fast_store(replace(on, local_dtype="bfloat16"), key, converted) is None
