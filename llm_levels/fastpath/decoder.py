"""FastDecoder: the fast weights of one model, plus single-request generation and a self-check."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .llama import LlamaFast, unsupported_reason
from .qlinear import available_kinds

_NAMES = {
    "int8": "int8 weights+activations",
    "int8wo": "int8 weights, bf16 activations",
    "int4": "int4 weights, bf16 activations",
    "float32": "float32",
}


class FastDecoder:
    """Fast CPU decode path for Llama-family causal LMs (``LlamaForCausalLM``, float32, on the CPU).

    Built once from a loaded transformers model: the projection matrices are copied out, fused
    (q/k/v, gate/up) and quantized (``quantize="int8"``: int8 weights, activations quantized per
    call, integer matmuls; ``"int8wo"``/``"int4"``: weight-only with bfloat16 activations;
    ``"float32"``: an exact copy). The prompt takes one :meth:`LlamaFast.prefill` pass, each new token
    one :meth:`LlamaFast.decode` step, both on the quantized weights.

    ``threads`` is the number of CPU threads a decode uses (set per thread, so the rest of the
    process keeps its own setting). One, the default, is the robust choice on a small shared machine:
    measured on 2 cores, two threads decode 55 tok/s when nothing else runs (vs 48 with one), but
    only 25-34 in the app's worker thread next to other torch work, and ~3 tok/s when another process
    holds a core (OpenMP threads wait for each other), where one thread still does ~20. ``None``
    (auto, :meth:`pick_threads`) uses every core when the load average says the machine is idle.

    Thread safety: the weights are read-only after construction and every request owns its cache, so
    :meth:`generate` may run in several threads at once. To decode concurrent requests *together*
    (one pass over the weights per step for all of them) use :class:`~llm_levels.fastpath.BatchScheduler`.
    """

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether ``model`` can run on this path."""
        return unsupported_reason(model) is None

    @staticmethod
    def unsupported_reason(model: Any) -> str | None:
        """Why ``model`` cannot run on this path, or ``None``."""
        return unsupported_reason(model)

    @staticmethod
    def available_quantizations() -> list[str]:
        """The ``quantize`` values this torch build can run (checked with a tiny matrix)."""
        return available_kinds()

    def __init__(self, model: Any, *, quantize: str = "int8", head_quantize: str | None = None,
                 threads: int | None = 1, stored: Any = None) -> None:
        import torch

        t0 = time.perf_counter()
        #: Whether the int8 matrices came from disk (:mod:`.store`) rather than being quantized now.
        self.from_store = stored is not None
        self.impl = LlamaFast(model, quantize=quantize, head_quantize=head_quantize, stored=stored)
        self.quantize = quantize
        self.auto_threads = threads is None
        self.threads = 1 if threads is None else max(1, int(threads))
        how = "threads: all cores when idle, else 1" if self.auto_threads else f"{self.threads} thread(s)"
        self.name: str = f"fast: {_NAMES.get(quantize, quantize)}, {how}"
        #: Seconds it took to build the fast weights.
        self.build_s: float = time.perf_counter() - t0
        self.max_positions = self.impl.max_positions
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = getattr(model.config, "eos_token_id", None)
        self.default_eos: tuple[int, ...] = _as_ids(eos)
        self._torch = torch

    @property
    def nbytes(self) -> int:
        """Bytes held by the fast weights (not counting a request's cache)."""
        return self.impl.nbytes

    def pick_threads(self) -> int:
        """With auto threads: all cores when the 1-minute load average leaves them free, else 1."""
        if self.auto_threads:
            import os

            cores = os.cpu_count() or 1
            try:
                busy = os.getloadavg()[0]
            except (AttributeError, OSError):
                busy = float(cores)
            # This process's own decoding counts about one in the load average.
            self.threads = cores if cores > 1 and busy <= 1.5 else 1
        return self.threads

    def use_threads(self) -> None:
        """Apply :attr:`threads` to the calling thread for good (torch's setting is per thread)."""
        if self._torch.get_num_threads() != self.threads:
            self._torch.set_num_threads(self.threads)

    @contextmanager
    def threads_scope(self) -> Iterator[None]:
        """Apply :attr:`threads` to the calling thread for a block, then restore its setting."""
        before = self._torch.get_num_threads()
        if before != self.threads:
            self._torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if before != self.threads:
                self._torch.set_num_threads(before)

    def check_prompt(self, n_prompt: int, max_new_tokens: int) -> None:
        """Raise ``ValueError`` for an empty prompt or one that does not fit with ``max_new_tokens``."""
        if n_prompt < 1:
            raise ValueError("the prompt has no tokens")
        if n_prompt + max_new_tokens > self.max_positions:
            raise ValueError(
                f"prompt ({n_prompt} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's "
                f"context window of {self.max_positions} tokens"
            )

    def prompt_ids(self, input_ids: Iterable[int], max_new_tokens: int) -> list[int]:
        """A request's prompt as a list of ints, checked with :meth:`check_prompt` (``ValueError``)."""
        ids = [int(i) for i in input_ids]
        self.check_prompt(len(ids), max_new_tokens)
        return ids

    def eos_ids(self, eos_token_ids: Iterable[int] | int | None = None) -> set[int]:
        """A request's end-of-sequence ids: ``eos_token_ids``, or the model's own when it is None."""
        return set(self.default_eos if eos_token_ids is None else _as_ids(eos_token_ids))

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
        """Yield new token ids one at a time, in the calling thread.

        Stops after an end-of-sequence token (which is yielded, so the caller can tell "stop" from
        "length"), after ``max_new_tokens``, or as soon as ``should_stop()`` is true (checked before
        the prompt and after every token, so no step runs after it turns true). ``eos_token_ids=None``
        uses the model's own. Raises ``ValueError`` for an empty or too long prompt.
        """
        from .sampling import Sampler

        ids = self.prompt_ids(input_ids, max_new_tokens)
        if max_new_tokens < 1:
            return
        eos = self.eos_ids(eos_token_ids)
        sampler = Sampler(ids, temperature=temperature, top_p=top_p, top_k=top_k,
                          repetition_penalty=repetition_penalty, seed=seed)
        if should_stop():
            return
        self.pick_threads()
        cache = self.impl.new_cache(len(ids) + max_new_tokens)
        # One thread setting for the whole generation: switching it every step costs more than a step.
        with self.threads_scope():
            logits = self.impl.prefill(ids, cache)
            for step in range(max_new_tokens):
                token = sampler(logits)
                yield token
                if token in eos or step == max_new_tokens - 1 or should_stop():
                    return
                logits = self.impl.decode([token], [cache])[0]

    def self_check(self, steps: int = 3) -> None:
        """Compare the prompt pass and a few decode steps with the model's own float32 forward.

        Raises ``RuntimeError`` unless every step's fast logits are finite, point the same way as the
        reference (cosine similarity at least 0.99; measured on SmolLM2: 0.9993 or more) and pick a
        token the reference rates within 2 logits of its best. A wrong kernel or layout fails this;
        int8 rounding does not.
        """
        from .llama import release_layer_pages

        torch = self._torch
        vocab = self.impl.vocab
        ids = [(37 + 7919 * i) % vocab for i in range(6)]
        cache = self.impl.new_cache(len(ids) + steps + 1)
        seq = list(ids)
        # The reference forward reads every float32 matrix again; give each layer's pages back as soon
        # as it has run, so the check does not bring the whole float copy back into memory.
        def after_layer(module: Any, args: Any, output: Any) -> None:  # None: keep the layer's output
            release_layer_pages(self.impl, module)

        hooks = [layer.register_forward_hook(after_layer) for layer in self.impl.model.model.layers]
        try:
            self._compare(ids, seq, cache, steps)
        finally:
            for h in hooks:
                h.remove()

    def _compare(self, ids: list[int], seq: list[int], cache: Any, steps: int) -> None:
        torch = self._torch
        with self.threads_scope(), torch.inference_mode():
            logits = self.impl.prefill(ids, cache)
            for step in range(steps + 1):
                ref = self.impl.model(input_ids=torch.tensor([seq])).logits[0, -1].float()
                if not bool(torch.isfinite(logits).all()):
                    raise RuntimeError("the fast path produced non-finite logits")
                cos = float(torch.nn.functional.cosine_similarity(logits, ref, dim=0))
                best = int(torch.argmax(logits))
                if cos < 0.99 or float(ref.max() - ref[best]) > 2.0:
                    raise RuntimeError(f"the fast path's next token disagrees with the float32 model "
                                       f"(step {step}, cosine {cos:.3f})")
                if step == steps:
                    break
                seq.append(best)
                logits = self.impl.decode([best], [cache])[0]


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)
