"""The fast local inference path for Llama-family models on a CPU.

:func:`llm_levels.models.apply_fast_path` builds a :class:`FastDecoder` (int8 copies of a loaded
``LlamaForCausalLM``'s matrices, checked against the float32 model) and a :class:`BatchScheduler` on
it; the local backend then decodes there instead of ``model.generate``. Modules, one job each:

- ``qlinear.py``  — quantized linear layers (int8 dynamic with per-row scales, int8/int4 weight-only,
  float32 reference);
- ``llama.py``    — the Llama prompt pass and decode step: fused weights, rotary, key/value cache;
- ``sampling.py`` — greedy / sampled choice of the next token (transformers' semantics);
- ``decoder.py``  — :class:`FastDecoder`: the fast weights, single-request generation, a self-check;
- ``batch.py``    — :class:`BatchScheduler`: concurrent requests decoded together;
- ``pages.py``    — gives back the memory of float32 pages (memory-mapped) the fast path no longer reads;
- ``store.py``    — the int8 matrices saved next to the converted model, so warm starts skip building them.

Nothing heavy is imported here until a class is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .batch import BatchScheduler
    from .decoder import FastDecoder

__all__ = ["FastDecoder", "BatchScheduler"]


def __getattr__(name: str) -> Any:
    if name == "FastDecoder":
        from .decoder import FastDecoder

        return FastDecoder
    if name == "BatchScheduler":
        from .batch import BatchScheduler

        return BatchScheduler
    raise AttributeError(name)
