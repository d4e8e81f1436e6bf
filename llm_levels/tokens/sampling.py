"""What the sampling settings do to a next-token distribution: pure functions for the explorer's bars.

:func:`reshape` takes the model's own probabilities of the most likely next tokens (a
:class:`~.next_token.Distribution`) and applies temperature, top-k and top-p the way the engine does, marking
the tokens each setting cuts; :func:`sample` then draws one token from what is left, reproducibly with a seed.

Only the tokens listed take part (the rest of the vocabulary, ``Distribution.other``, is left out), so the
bars are exact for the listed tokens whenever the cuts keep only listed ones, and an approximation for a
high temperature that lifts the unlisted tail.

The order differs between the engines, and :func:`reshape` follows the distribution's own engine:
transformers divides by the temperature first, then cuts (top-k, then top-p on the tempered
probabilities); llama.cpp cuts first (top-k, then top-p on the model's own probabilities) and applies the
temperature last, to what is left. Temperature 0 is greedy: one bar, the most likely token, at 100%.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..core import GenParams
from ..engine import LLAMA_CPP
from .next_token import Distribution, NextToken

#: Which comes first: temperature (transformers) or the top-k / top-p cuts (llama.cpp).
Order = Literal["temperature_first", "cuts_first"]


@dataclass(frozen=True)
class Bar:
    """One token's bar. ``raw``: the model's probability; ``probability``: the chance that sampling picks it
    with these settings (0 when cut); ``cut``: what removed it -- ``"top_k"``, ``"top_p"``, ``"greedy"``
    (temperature 0 keeps only the most likely token) -- or None when it stays."""

    token: str
    raw: float
    probability: float
    cut: str | None
    id: int | None = None
    special: bool = False


@dataclass(frozen=True)
class Reshaped:
    """The bars after temperature, top-k and top-p (in the distribution's order: most likely first)."""

    bars: tuple[Bar, ...]
    temperature: float
    top_k: int
    top_p: float
    order: Order

    @property
    def kept(self) -> tuple[Bar, ...]:
        return tuple(b for b in self.bars if b.cut is None)

    def to_json(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "order": self.order,
            "bars": [
                {"token": b.token, "raw": b.raw, "probability": b.probability, "cut": b.cut, "id": b.id}
                for b in self.bars
            ],
        }


def reshape(
    dist: Distribution | Sequence[NextToken],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    *,
    order: Order | None = None,
) -> Reshaped:
    """The bars of ``dist`` after ``temperature``, ``top_k`` (0: off) and ``top_p`` (1: off).

    ``order`` defaults to the engine's (see the module doc); a plain list of tokens gets transformers'.
    Settings out of range raise :class:`~llm_levels.core.BackendError` (the same ranges as a request's).
    """
    GenParams(temperature=temperature, top_k=top_k, top_p=top_p)  # one message naming every bad value
    tokens = list(dist.tokens if isinstance(dist, Distribution) else dist)
    if order is None:
        llama = isinstance(dist, Distribution) and dist.engine == LLAMA_CPP
        order = "cuts_first" if llama else "temperature_first"
    tokens.sort(key=lambda t: -t.probability)
    raw = [t.probability for t in tokens]
    if not tokens:
        return Reshaped((), temperature, top_k, top_p, order)
    if temperature == 0:
        probs = [1.0] + [0.0] * (len(tokens) - 1)
        cuts: list[str | None] = [None] + ["greedy"] * (len(tokens) - 1)
    elif order == "temperature_first":
        tempered = _normalize(_temper(raw, temperature))
        cuts = _cuts(tempered, top_k, top_p)
        probs = _normalize([p if c is None else 0.0 for p, c in zip(tempered, cuts)])
    else:
        cuts = _cuts(_normalize(raw), top_k, top_p)
        probs = _normalize(_temper([p if c is None else 0.0 for p, c in zip(raw, cuts)], temperature))
    bars = tuple(Bar(t.token, t.probability, p, c, t.id, t.special) for t, p, c in zip(tokens, probs, cuts))
    return Reshaped(bars, temperature, top_k, top_p, order)


def sample(reshaped: Reshaped, seed: int | None = None) -> Bar:
    """Draw one token from the bars' probabilities (a seed makes the draw reproducible)."""
    kept = [b for b in reshaped.bars if b.probability > 0]
    if not kept:
        raise ValueError("nothing to sample from: the distribution is empty")
    rng = random.Random(seed)
    return rng.choices(kept, weights=[b.probability for b in kept], k=1)[0]


def _temper(probs: Sequence[float], temperature: float) -> list[float]:
    """``p ** (1 / T)``, i.e. ``softmax(logits / T)`` up to its normalization (zeros stay zero)."""
    out = []
    for p in probs:
        out.append(math.exp(math.log(p) / temperature) if p > 0 else 0.0)
    top = max(out) if out else 0.0
    return [p / top for p in out] if top > 0 else out  # scaled to avoid underflow before normalizing


def _normalize(probs: Sequence[float]) -> list[float]:
    total = sum(probs)
    return [p / total for p in probs] if total > 0 else list(probs)


def _cuts(probs: Sequence[float], top_k: int, top_p: float) -> list[str | None]:
    """Which tokens (sorted, most likely first; ``probs`` normalized) top-k and then top-p remove."""
    cuts: list[str | None] = [None] * len(probs)
    if top_k:
        for i in range(top_k, len(probs)):
            cuts[i] = "top_k"
    if top_p < 1.0:
        kept = [i for i, c in enumerate(cuts) if c is None]
        total = sum(probs[i] for i in kept)
        cumulative = 0.0
        for n, i in enumerate(kept):
            if n > 0 and cumulative >= top_p * total:  # the smallest set that reaches p stays, the rest goes
                cuts[i] = "top_p"
            cumulative += probs[i]
    return cuts
