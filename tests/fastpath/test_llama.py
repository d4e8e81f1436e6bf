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

    def step(rows):
        caches = [fast.new_cache(16) for _ in rows]
        firsts = [int(torch.argmax(fast.prefill(prompts[r], c))) for r, c in zip(rows, caches)]
        return fast.decode(firsts, caches), firsts

    batched, firsts = step([0, 1, 2])
    # A row's result does not depend on the other rows of its batch: bit for bit the same in another batch...
    assert torch.equal(step([2, 0])[0][1], batched[0])
    assert torch.equal(step([1, 2])[0][0], batched[1])
    # ...and alone (the one-row int8 form, see qlinear: its own rounding) close to it.
    for r in range(3):
        alone = fast.new_cache(16)
        fast.prefill(prompts[r], alone)
        solo = fast.decode([firsts[r]], [alone])[0]
        assert (solo - batched[r]).norm() <= 0.05 * batched[r].norm(), r


def test_unsupported_models_are_named(tiny_seq2seq, tiny, tiny_causal_dir):
    assert unsupported_reason(tiny) is None
    assert "Llama" in unsupported_reason(tiny_seq2seq.model)
    with pytest.raises(ValueError, match="cannot run"):
        LlamaFast(tiny_seq2seq.model)
    half = load_model(str(tiny_causal_dir), cpu_settings(local_fast_path=False, local_dtype="bfloat16"))
    assert "bfloat16" in unsupported_reason(half.model)
