"""The fast local inference path for Llama-family models on a CPU.

:class:`FastDecoder` builds int8 copies of a loaded ``LlamaForCausalLM``'s weights once and decodes
with its own lean loop (``llama.py``) instead of ``model.generate``. Modules, one job each:

- ``qlinear.py``  — quantized linear layers (int8 dynamic, int8 weight-only, float32 reference);
- ``llama.py``    — the Llama forward pass: fused weights, rotary table, key/value cache;
- ``sampling.py`` — greedy / sampled choice of the next token (transformers' semantics);
- ``decoder.py``  — :class:`FastDecoder`, one request at a time per call;
- ``batch.py``    — :class:`BatchScheduler`, concurrent requests decoded together.

Nothing heavy is imported here until a class is used (torch only).
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
