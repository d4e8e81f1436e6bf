"""The pieces the transformers engine plugs into ``model.generate``: when to stop, and how to sample.

- :class:`StopOnEvent` ends generation as soon as the request's stop event or the caller's cancel is set.
- :class:`StopOnText` ends it right after the token that completes a stop string.
- :func:`sampling_processors`: temperature, top-k and top-p warpers and a draw from a private,
  per-request ``torch.Generator`` (:class:`DrawToken`), so concurrent requests never disturb each other
  and a seed always reproduces its answer.
- :func:`logits_processors`: the whole list one request gives ``generate``, in order: the probability
  capture (when asked for), the repetition penalty, then sampling. The penalty is applied here rather than
  by ``generate`` itself (which would run it before any processor of ours) so that the captured
  probabilities are the model's own, before anything reshapes them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..core import GenParams


class StopOnEvent(StoppingCriteria):
    """Ends generation as soon as the request's stop event or the caller's cancel event is set."""

    def __init__(self, stop: threading.Event, cancel: threading.Event | None, prefix_len: int) -> None:
        self.stop = stop
        self.cancel = cancel
        self.prefix_len = prefix_len
        self.generated = 0
        self.fired_by_cancel = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        self.generated = int(input_ids.shape[1]) - self.prefix_len
        cancelled = self.cancel is not None and self.cancel.is_set()
        if cancelled:
            self.fired_by_cancel = True
        fired = cancelled or self.stop.is_set()
        return torch.full((input_ids.shape[0],), fired, dtype=torch.bool, device=input_ids.device)


class StopOnText(StoppingCriteria):
    """Ends generation right after the token that completes a stop string (checked on decoded text)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prefix_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prefix_len = prefix_len
        # Decoding only the last few tokens is enough: a stop string is found the step it completes,
        # and a token is at least one character (a few spare tokens cover empty special ones).
        self.tail = max(len(s) for s in self.stops) + 8
        self.hit: str | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        new = input_ids[0, self.prefix_len :][-self.tail :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        hit = next((s for s in self.stops if s in text), None)
        if hit is not None:
            self.hit = hit
        return torch.full((input_ids.shape[0],), hit is not None, dtype=torch.bool, device=input_ids.device)


def logits_processors(params: GenParams, device: Any, capture: LogitsProcessor | None = None) -> list[Any]:
    """What one request adds to ``generate``'s logits processors: ``capture`` (it must see the model's own
    scores), the repetition penalty, then :func:`sampling_processors`. ``generate`` itself must then be told
    ``repetition_penalty=1.0``."""
    out: list[Any] = [capture] if capture is not None else []
    if params.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=params.repetition_penalty))
    return out + sampling_processors(params, device)


def sampling_processors(params: GenParams, device: Any) -> list[Any]:
    """Temperature, top-k and top-p warpers and a draw from a private generator; none for greedy."""
    if params.greedy:
        return []
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    # The same warpers, in the same order, as transformers' own sampling.
    out: list[Any] = []
    if params.temperature != 1.0:
        out.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        out.append(TopKLogitsWarper(top_k=params.top_k))
    if params.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=params.top_p))
    out.append(DrawToken(generator))
    return out


class DrawToken(LogitsProcessor):
    """Draws the next token from the (warped) distribution with a private generator and leaves only it.

    Every other score becomes -inf, so generate's greedy selection picks exactly the drawn token.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        probs = torch.nn.functional.softmax(scores, dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn, 0.0)
