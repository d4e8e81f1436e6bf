"""Choosing the next token from logits: greedy, or sampling as transformers' ``generate`` does it.

The order and the arithmetic are transformers' own (its logits processors are reused, not copied):
repetition penalty over every token seen so far (prompt included), then temperature, top-k, top-p,
then one draw from a private ``torch.Generator``. So with the same logits and the same seed, a
request picks the same tokens here as on the naive ``model.generate`` path of the local backend.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


class Sampler:
    """Picks tokens for one sequence. ``temperature == 0`` is greedy (argmax after the penalty)."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or repetition_penalty <= 0:
            raise ValueError("temperature >= 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0 are needed")
        self.greedy = temperature == 0.0
        self.penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
        # Only the penalty looks at earlier tokens; keep them only when it is on.
        self.seen: list[int] = list(prompt_ids) if self.penalty else []
        self.warpers: list = []
        self.generator: torch.Generator | None = None
        if not self.greedy:
            if temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                self.warpers.append(TopKLogitsWarper(top_k=top_k))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=top_p))
            if seed is None:
                seed = int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
            self.generator = torch.Generator()
            self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """The next token for ``logits [V]`` (float32)."""
        scores = logits[None, :]
        if self.penalty is not None:
            scores = self.penalty(torch.tensor([self.seen], dtype=torch.long), scores)
        if self.greedy:
            token = int(torch.argmax(scores[0]))
        else:
            for w in self.warpers:
                scores = w(None, scores)
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=self.generator)[0, 0])
        if self.penalty is not None:
            self.seen.append(token)
        return token
