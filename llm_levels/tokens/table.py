"""A finished answer's per-token probabilities as a table, and the conversation that continues it from a token.

The tokens are :attr:`~llm_levels.core.Chunk.logprobs` of an answer (all of them together:
``turns.Done.tokens``). Everything here is pure data shaping: no model, no Gradio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core import BackendError, Message, TokenLogprob, split_prefix

#: Columns of :func:`table_rows` (for a ``gr.Dataframe``).
TABLE_COLUMNS = ["#", "Token", "Probability", "Alternatives"]


@dataclass(frozen=True)
class TokenRow:
    """One generated token: its text, its probability, and the most likely tokens at that step.

    ``alternatives`` are ``(token, probability)`` pairs, most likely first (the chosen token among them when
    it was one of the most likely). ``rank`` is the chosen token's place among them (1: the most likely
    one, as greedy decoding picks it), None when it was not among them (sampling picked a rarer one).
    """

    index: int
    token: str
    probability: float
    logprob: float
    alternatives: tuple[tuple[str, float], ...]
    rank: int | None


def visible(token: str) -> str:
    """A token's text with its whitespace made visible: ``" Paris"`` → ``"␣Paris"``, a newline → ``"↵"``."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def token_rows(tokens: Sequence[TokenLogprob]) -> list[TokenRow]:
    """One :class:`TokenRow` per token of an answer."""
    rows = []
    for i, t in enumerate(tokens):
        alternatives = tuple((a, math.exp(lp)) for a, lp in t.top)
        rank = next((r for r, (a, _) in enumerate(t.top, 1) if a == t.token), None)
        rows.append(TokenRow(i, t.token, t.probability, t.logprob, alternatives, rank))
    return rows


def table_rows(tokens: Sequence[TokenLogprob], *, alternatives: int = 5) -> list[list[Any]]:
    """Rows for a table (:data:`TABLE_COLUMNS`): index, visible token, probability in percent, and the first
    ``alternatives`` alternatives as ``token 12.3%`` (the chosen one marked with ``✓``)."""
    out: list[list[Any]] = []
    for row in token_rows(tokens):
        alts = " · ".join(
            f"{'✓' if a == row.token else ''}{visible(a)} {p * 100:.1f}%" for a, p in row.alternatives[:alternatives]
        )
        out.append([row.index, visible(row.token), round(row.probability * 100, 2), alts])
    return out


def token_table(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The per-token data of an answer as JSON (what the Gradio API ``token_probabilities`` returns).

    ``{"tokens": [{"index", "token", "probability", "logprob", "rank", "alternatives": [{"token",
    "probability", "logprob"}]}], "count", "mean_probability", "perplexity"}``: probabilities are the model's
    own (before any sampling setting reshaped them); perplexity is ``exp(-mean logprob)``, None without tokens.
    """
    rows = token_rows(tokens)
    items = [
        {
            "index": r.index,
            "token": r.token,
            "probability": r.probability,
            "logprob": r.logprob,
            "rank": r.rank,
            "alternatives": [{"token": a, "probability": math.exp(lp), "logprob": lp} for a, lp in tokens[r.index].top],
        }
        for r in rows
    ]
    n = len(rows)
    return {
        "tokens": items,
        "count": n,
        "mean_probability": sum(r.probability for r in rows) / n if n else None,
        "perplexity": math.exp(-sum(r.logprob for r in rows) / n) if n else None,
    }


def continue_with(
    messages: Sequence[Message], tokens: Sequence[TokenLogprob], index: int, alternative: int | str
) -> list[Message]:
    """The conversation that continues an answer from its token ``index`` with another token in its place.

    ``messages`` is the conversation the answer was given to, ``tokens`` the answer's tokens. The answer is
    cut before token ``index``, and ``alternative`` goes in its place: an index into that token's
    alternatives (0: the most likely) or any text. The result ends with the assistant message to continue
    (prefix = the answer's text before the token + the alternative); a local backend streams only what
    comes after it. When ``messages`` itself ends with a started answer (this answer continued it), that
    text stays in front.
    """
    if not 0 <= index < len(tokens):
        raise BackendError(
            f"There is no token {index} in this answer (it has {len(tokens)}).", kind="bad_request", status=400
        )
    if isinstance(alternative, str):
        chosen = alternative
    else:
        top = tokens[index].top
        if not 0 <= alternative < len(top):
            raise BackendError(
                f"Token {index} has {len(top)} alternatives: pick one from 0 to {len(top) - 1}.",
                kind="bad_request",
                status=400,
            )
        chosen = top[alternative][0]
    history, started = split_prefix(messages)
    prefix = (started or "") + "".join(t.token for t in tokens[:index]) + chosen
    return [*history, Message("assistant", prefix)]
