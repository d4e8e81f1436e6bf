"""The lean Llama decode step against transformers' own forward, on a tiny random Llama (exact in float32)."""

from __future__ import annotations

import pytest
import torch

from llm_levels.fastpath.llama import LlamaFast, unsupported_reason
from llm_levels.models import load_model
from tests.fixtures.models import cpu_settings


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir):
    return load_model(str(tiny_causal_dir), cpu_settings(local_fast_path=False)).model


def reference_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_float32_copy_matches_transformers_step_by_step(tiny):
    fast = LlamaFast(tiny, quantize="float32")
    ids = [5, 17, 42, 9, 100, 3]
    cache = fast.new_cache(len(ids) + 6)
    logits = fast.prefill(ids, cache)
    seq = list(ids)
    assert torch.allclose(logits, reference_logits(tiny, seq), atol=1e-4)
    for _ in range(5):
        token = int(torch.argmax(logits))
        seq.append(token)
        logits = fast.decode([token], [cache])[0]
        assert torch.allclose(logits, reference_logits(tiny, seq), atol=1e-4)
    assert cache.length == len(seq)


def test_rows_at_different_positions_decode_as_if_alone(tiny):
    fast = LlamaFast(tiny, quantize="int8")
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    caches = [fast.new_cache(16) for _ in prompts]
    firsts = [int(torch.argmax(fast.prefill(p, c))) for p, c in zip(prompts, caches)]
    batched = fast.decode(firsts, caches)
    for p, first, row in zip(prompts, firsts, batched):
        alone = fast.new_cache(16)
        fast.prefill(p, alone)
        assert torch.equal(fast.decode([first], [alone])[0], row)


def test_unsupported_models_are_named(tiny_seq2seq, tiny, tiny_causal_dir):
    assert unsupported_reason(tiny) is None
    assert "Llama" in unsupported_reason(tiny_seq2seq.model)
    with pytest.raises(ValueError, match="cannot run"):
        LlamaFast(tiny_seq2seq.model)
    half = load_model(str(tiny_causal_dir), cpu_settings(local_fast_path=False, local_dtype="bfloat16"))
    assert "bfloat16" in unsupported_reason(half.model)
