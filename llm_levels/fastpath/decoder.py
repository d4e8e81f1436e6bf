"""FastDecoder: token-by-token generation for one request on the fast weights of :mod:`.llama`."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

from .llama import LlamaFast, unsupported_reason
from .qlinear import available_kinds

_NAMES = {
    "int8": "int8 weights + int8 activations (fbgemm) + custom decode loop",
    "int8wo": "int8 weight-only (bf16 activations) + custom decode loop",
    "float32": "float32 + custom decode loop",
}


class FastDecoder:
    """Fast CPU decode path for Llama-family causal LMs (``LlamaForCausalLM``).

    Built once from a loaded transformers model: the weights are copied out, fused (q/k/v, gate/up)
    and quantized (``quantize="int8"``: int8 weights, activations quantized per call, integer
    matmuls; ``"int8wo"``: int8 weights with bfloat16 activations; ``"float32"``: an exact copy).
    :meth:`generate` then runs its own decode loop (see :mod:`.llama`): one prefill of the prompt,
    one step per new token, with a private key/value cache per call and logits for the last
    position only. Greedy decoding and sampling (temperature, top-k, top-p, repetition penalty,
    seed) follow transformers' ``generate`` semantics (see :mod:`.sampling`).

    Memory: the fast copy keeps no reference to the model's float32 weights. For SmolLM2-135M it
    is ~175 MB with ``int8`` (the prepacked matrices plus the int8 embedding table) — drop the
    transformers model afterwards to get its ~540 MB back, or keep it for the naive path.

    Threads: the weights are read-only after construction and every :meth:`generate` call owns its
    cache, so calls from several threads at once are safe (they share the CPU, not state). To decode
    several requests *together* (one weight pass per step for all of them), use
    :class:`~llm_levels.fastpath.BatchScheduler`.
    """

    @classmethod
    def supports(cls, model: Any) -> bool:
        """Whether ``model`` can run on this path (``LlamaForCausalLM`` without biases, on the CPU)."""
        return unsupported_reason(model) is None

    @staticmethod
    def unsupported_reason(model: Any) -> str | None:
        """Why ``model`` cannot run on this path, or ``None``."""
        return unsupported_reason(model)

    @staticmethod
    def available_quantizations() -> list[str]:
        """The ``quantize`` values this torch build can run (checked with a tiny matrix)."""
        return available_kinds()

    def __init__(self, model: Any, *, quantize: str = "int8") -> None:
        t0 = time.perf_counter()
        self.impl = LlamaFast(model, quantize=quantize)
        self.quantize = quantize
        self.name: str = _NAMES.get(quantize, quantize)
        #: Seconds it took to build the fast weights.
        self.build_s: float = time.perf_counter() - t0
        self.max_positions = self.impl.max_positions
        eos = getattr(model.config, "eos_token_id", None)
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) or eos
        self.default_eos: tuple[int, ...] = _as_ids(eos)

    @property
    def nbytes(self) -> int:
        """Bytes held by the fast weights (not counting a request's cache)."""
        return self.impl.nbytes

    def generate(
        self,
        input_ids: Iterable[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[int]:
        """Yield new token ids one at a time.

        Stops after an end-of-sequence token (which is yielded, so the caller can tell "stop" from
        "length"), after ``max_new_tokens``, or as soon as ``should_stop()`` is true (checked before
        the prompt and before every step, so at most one step of work happens after it turns true).
        ``eos_token_ids=None`` uses the model's own. Raises ``ValueError`` when the prompt is empty or
        prompt + ``max_new_tokens`` exceeds the model's context window.
        """
        from .sampling import Sampler  # transformers' processors: imported only when generating

        ids = [int(i) for i in input_ids]
        if not ids:
            raise ValueError("the prompt has no tokens")
        if max_new_tokens < 1:
            return
        if len(ids) + max_new_tokens > self.max_positions:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's "
                f"context window of {self.max_positions} tokens"
            )
        eos = set(self.default_eos if eos_token_ids is None else _as_ids(eos_token_ids))
        sampler = Sampler(ids, temperature=temperature, top_p=top_p, top_k=top_k,
                          repetition_penalty=repetition_penalty, seed=seed)
        if should_stop():
            return
        # The cache only needs what this call can fill: prompt + new tokens.
        cache = self.impl.new_cache(1, len(ids) + max_new_tokens)
        logits = self.impl.prefill(ids, cache)
        for step in range(max_new_tokens):
            token = sampler(logits)
            yield token
            if token in eos or step == max_new_tokens - 1 or should_stop():
                return
            logits = self.impl.decode([token], cache)[0]


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)
