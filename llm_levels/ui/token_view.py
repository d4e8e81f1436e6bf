"""An answer as tokens shaded by probability (HTML), each with its alternatives on hover.

Confident tokens are pale, unlikely ones strongly tinted, so a reader sees at once where the model hesitated.
Each token is a ``<span class="tok" data-i="N">``; its ``title`` lists the alternatives with their
probabilities. Everything from the model is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..core import TokenLogprob

CSS = """
.tok-answer { line-height: 2.0; white-space: pre-wrap; }
.tok-answer .tok { border-radius: 4px; padding: 1px 0; cursor: pointer; }
.tok-answer .tok:hover { outline: 2px solid var(--color-accent); }
.tok-legend { font-size: 0.85rem; color: var(--body-text-color-subdued); margin-top: 6px; }
"""


def shade(probability: float) -> str:
    """The token's background: transparent at 100 %, a strong orange near 0 %."""
    alpha = max(0.0, min(1.0, 1.0 - probability)) * 0.85
    return f"rgba(249, 115, 22, {alpha:.2f})"


def alternatives_text(token: TokenLogprob, limit: int = 20) -> str:
    """``'Paris' 92.1% · 'the' 3.0% · ...``: the token's alternatives, most likely first."""
    top = token.top or ((token.token, token.logprob),)
    import math

    return " · ".join(f"{t!r} {math.exp(lp) * 100:.1f}%" for t, lp in top[:limit])


def tokens_html(tokens: Sequence[TokenLogprob], *, legend: bool = True) -> str:
    """The shaded answer; empty string when there are no tokens."""
    if not tokens:
        return ""
    spans = []
    for i, t in enumerate(tokens):
        p = t.probability
        title = html.escape(f"{t.token!r}: {p * 100:.1f}%\n" + alternatives_text(t), quote=True)
        spans.append(
            f'<span class="tok" data-i="{i}" data-p="{p:.4f}" style="background:{shade(p)}" title="{title}">'
            f"{html.escape(t.token)}</span>"
        )
    out = '<div class="tok-answer">' + "".join(spans) + "</div>"
    if legend:
        mean = sum(t.probability for t in tokens) / len(tokens)
        out += (
            f'<div class="tok-legend">{len(tokens)} tokens · mean probability {mean * 100:.1f}% · '
            "darker = less likely; hover a token for its alternatives</div>"
        )
    return out
