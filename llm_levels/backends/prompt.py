"""A conversation as one prompt that fits the model's context window (both local engines).

Each engine renders and tokenizes in its own way (``encode``); fitting is the same for both: when the
prompt plus the answer's budget does not fit, the oldest turns are left out (system messages and the
last message are always kept, and the kept history never starts with an assistant turn). The shortest
history that fits is found by bisection, so a long conversation costs a handful of renders, not one per
turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core import BackendError, Message


@dataclass(frozen=True)
class Prompt:
    """A prompt ready for the model: the text, its token ids, the messages it holds, and how many old turns
    were left out to fit."""

    text: str
    ids: list[int]
    truncated_turns: int
    add_special_tokens: bool
    messages: tuple[Message, ...] = ()


#: Renders and tokenizes kept messages; the int is how many turns were left out.
Encode = Callable[[list[Message], int], Prompt]


def fit_prompt(
    messages: Sequence[Message], encode: Encode, *, window: int | None, max_new_tokens: int | None, model: str
) -> Prompt:
    """The prompt for ``messages`` with as many of the newest turns as fit ``window - max_new_tokens`` tokens.

    Raises :class:`BackendError` (400) when even the system messages and the last message do not fit.
    """
    messages = list(messages)
    prompt = encode(messages, 0)
    if window is None or max_new_tokens is None:
        return prompt
    budget = window - max_new_tokens
    if len(prompt.ids) <= budget:
        return prompt
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    # Where the kept history may start: a user turn, or the last message itself.
    starts = [i for i, m in enumerate(turns) if i > 0 and (m.role == "user" or i == len(turns) - 1)]

    def at(start: int) -> Prompt:
        return encode(system + turns[start:], start)

    best: Prompt | None = None
    lo, hi = 0, len(starts) - 1
    while lo <= hi:  # the earliest start whose prompt fits (later starts only get shorter)
        mid = (lo + hi) // 2
        candidate = at(starts[mid])
        if len(candidate.ids) <= budget:
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return best
    shortest = at(starts[-1]) if starts else prompt
    raise BackendError(
        f"The message is too long for {model}: the prompt is {len(shortest.ids):,} tokens and up to "
        f"{max_new_tokens:,} new tokens are asked for, but the model reads at most {window:,} tokens. "
        "Shorten the message or the system prompt, or lower max new tokens.",
        kind="bad_request",
        status=400,
    )
