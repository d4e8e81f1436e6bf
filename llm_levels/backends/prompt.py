"""A conversation as one prompt that fits the model's context window (both local engines).

Each engine renders and tokenizes in its own way (``encode``); fitting is the same for both: when the
prompt plus the answer's budget does not fit, the oldest turns are left out (system messages and the
last message are always kept, and the kept history never starts with an assistant turn). The longest
history that fits is found by galloping back from the newest turns, then bisecting: a handful of renders,
each about the size of what fits the window, however long the conversation is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core import BackendError, Chunk, Message, Usage


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
    messages: Sequence[Message],
    encode: Encode,
    *,
    window: int | None,
    max_new_tokens: int | None,
    model: str,
    cancel: threading.Event | None = None,
) -> Prompt:
    """The prompt for ``messages`` with as many of the newest turns as fit ``window - max_new_tokens`` tokens.

    The whole conversation is rendered once when it may fit; when it does not, the search starts from the
    newest turns and doubles how many it takes back (then bisects), so the work follows what fits the
    window, not how long the conversation is. Setting ``cancel`` stops the search at its next render.
    Raises :class:`BackendError` (400) when even the system messages and the last message do not fit.
    """
    messages = list(messages)
    if window is None or max_new_tokens is None:
        return encode(messages, 0)
    budget = window - max_new_tokens
    # Every message costs at least one token: a conversation with more messages than the budget cannot fit.
    whole = encode(messages, 0) if len(messages) <= budget else None
    if whole is not None and len(whole.ids) <= budget:
        return whole
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    # Where the kept history may start: a user turn, or the last message itself. Position 0 stands for the
    # whole conversation, known not to fit by now.
    starts = [0] + [i for i, m in enumerate(turns) if i > 0 and (m.role == "user" or i == len(turns) - 1)]

    def at(position: int) -> Prompt:
        if cancel is not None and cancel.is_set():
            raise BackendError("The request was stopped.", kind="cancelled", status=499)
        return encode(system + turns[starts[position] :], starts[position])

    # Later starts only get shorter: find the earliest that fits, between lo (does not fit) and hi (fits).
    lo, hi = 0, len(starts) - 1
    best = at(hi) if hi > 0 else (whole or encode(messages, 0))
    if hi == 0 or len(best.ids) > budget:
        raise _too_long(best, max_new_tokens, window, model)
    step = 1
    while hi - step > lo:  # gallop back from the newest turns: 1, 2, 4... more
        candidate = at(hi - step)
        if len(candidate.ids) > budget:
            lo = hi - step
            break
        best, hi, step = candidate, hi - step, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = at(mid)
        if len(candidate.ids) <= budget:
            best, hi = candidate, mid
        else:
            lo = mid
    return best


#: A backend's ``prepare(messages, max_new_tokens, cancel)``: the fitted prompt.
Prepare = Callable[[Sequence[Message], int, "threading.Event | None"], Prompt]


def fitted_or_stopped(
    prepare: Prepare, messages: Sequence[Message], max_new_tokens: int, cancel: threading.Event | None
) -> Prompt | None:
    """``prepare``'s prompt, or None when Stop ended the fitting (a long conversation takes a while)."""
    try:
        return prepare(messages, max_new_tokens, cancel)
    except BackendError as e:
        if e.kind != "cancelled":
            raise
        return None


def stopped_in_line(prompt: Prompt, **raw: str) -> Chunk:
    """The one chunk of a turn stopped while it waited for a generation slot: its prompt was counted, nothing
    was generated."""
    return Chunk(
        usage=Usage(len(prompt.ids), 0),
        finish_reason="cancelled",
        raw={"truncated_turns": prompt.truncated_turns, **raw},
    )


def _too_long(shortest: Prompt, max_new_tokens: int, window: int, model: str) -> BackendError:
    return BackendError(
        f"The message is too long for {model}: the prompt is {len(shortest.ids):,} tokens and up to "
        f"{max_new_tokens:,} new tokens are asked for, but the model reads at most {window:,} tokens. "
        "Shorten the message or the system prompt, or lower max new tokens.",
        kind="bad_request",
        status=400,
    )
