"""Per-token probabilities as HTML: an answer as tokens shaded by probability, and bar charts of probabilities.

- :func:`tokens_html`: the answer; confident tokens pale, unlikely ones strongly tinted, so a reader sees at
  once where the model hesitated. Each token is a ``<span class="tok" data-i="N">`` whose ``title`` lists
  its alternatives; with :data:`SELECT_JS` on the ``gr.HTML`` a click on one is the component's ``select``
  event (``evt.index``: the token's number).
- :func:`alternatives_html`: one token's alternatives as bars (the chosen token marked; ``data-a`` on each
  bar, so a click on one picks it the same way).
- :func:`bars_html`: the bar chart both use, also the next-token explorer's.

Everything from the model is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..core import TokenLogprob
from ..tokens import visible

CSS = """
.tok-answer { line-height: 2.0; white-space: pre-wrap; }
.tok-answer .tok { border-radius: 4px; padding: 1px 0; cursor: pointer; }
.tok-answer .tok:hover, .tok-answer .tok:focus { outline: 2px solid var(--color-accent); }
.tok-answer .tok.sel { outline: 3px solid var(--color-accent); }
.tok-legend, .tok-empty, .tok-note { font-size: 0.9rem; color: var(--body-text-color-subdued); margin-top: 6px; }
.tok-note { border-left: 3px solid #f59e0b; padding-left: 8px; }
.tok-bars { display: grid; grid-template-columns: minmax(70px, max-content) minmax(80px, 1fr) max-content;
  gap: 3px 10px;  align-items: center; font-size: 0.95rem; }
.tok-bars-title { font-weight: 600; margin: 6px 0; }
.tok-bars .tok-label { font-family: var(--font-mono); white-space: pre; text-align: right; }
.tok-bars .tok-track { position: relative; height: 18px; background: var(--neutral-100); border-radius: 3px; }
.tok-bars .tok-raw { position: absolute; inset: 0 auto 0 0; border: 1px dashed var(--neutral-400); border-radius: 3px; }
.tok-bars .tok-fill { position: absolute; inset: 0 auto 0 0; background: var(--color-accent); border-radius: 3px; }
.tok-bars .tok-value { font-variant-numeric: tabular-nums; white-space: nowrap; }
.tok-bars .cut .tok-fill { background: var(--neutral-300); }
.tok-bars .cut, .tok-bars .cut .tok-label { color: var(--body-text-color-subdued); text-decoration: line-through; }
.tok-bars .chosen .tok-label { font-weight: 700; }
.tok-bars .picked .tok-fill { background: #16a34a; }
.tok-bars .picked .tok-label::before { content: "▶ "; }
.tok-bars [data-a] { cursor: pointer; }
.tok-bars .tok-row { display: contents; }
"""

#: ``js_on_load`` of a ``gr.HTML`` holding :func:`tokens_html` or a clickable :func:`bars_html`: a click (or
#: Enter) on a token or a bar is the component's ``select`` event, its number as ``index``. One listener on
#: the component itself, so it keeps working when the content is replaced.
SELECT_JS = """
const pick = (e) => {
  const t = e.target.closest('[data-i], [data-a]');
  if (!t || !element.contains(t)) return;
  const i = t.dataset.i !== undefined ? t.dataset.i : t.dataset.a;
  trigger('select', {index: Number(i), value: t.dataset.v || t.textContent});
};
element.addEventListener('click', pick);
element.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(e); }
});
"""


def shade(probability: float) -> str:
    """The token's background: transparent at 100 %, a strong orange near 0 %."""
    alpha = max(0.0, min(1.0, 1.0 - probability)) * 0.85
    return f"rgba(249, 115, 22, {alpha:.2f})"


def percent(p: float) -> str:
    """``12.3%``; ``<0.1%`` for what rounds to nothing but is not zero."""
    if 0 < p < 0.0005:
        return "<0.1%"
    return f"{p * 100:.1f}%"


def alternatives_text(token: TokenLogprob, limit: int = 20) -> str:
    """``'Paris' 92.1% · 'the' 3.0% · ...``: the token's alternatives, most likely first."""
    top = token.top or ((token.token, token.logprob),)
    return " · ".join(f"{t!r} {percent(math.exp(lp))}" for t, lp in top[:limit])


def tokens_html(
    tokens: Sequence[TokenLogprob],
    *,
    legend: bool = True,
    selected: int | None = None,
    hint: str = "hover a token for its alternatives",
) -> str:
    """The shaded answer; empty string when there are no tokens. ``selected``: the token drawn outlined."""
    if not tokens:
        return ""
    spans = []
    for i, t in enumerate(tokens):
        p = t.probability
        title = html.escape(f"#{i} {t.token!r}: {percent(p)}\n" + alternatives_text(t), quote=True)
        sel = " sel" if i == selected else ""
        spans.append(
            f'<span class="tok{sel}" data-i="{i}" data-p="{p:.4f}" tabindex="0" role="button" '
            f'style="background:{shade(p)}" title="{title}">{html.escape(t.token)}</span>'
        )
    out = '<div class="tok-answer">' + "".join(spans) + "</div>"
    if legend:
        mean = sum(t.probability for t in tokens) / len(tokens)
        out += (
            f'<div class="tok-legend">{len(tokens)} tokens · mean probability {percent(mean)} · '
            f"darker = less likely; {html.escape(hint)}</div>"
        )
    return out


@dataclass(frozen=True)
class BarRow:
    """One bar: the token (as :func:`~llm_levels.tokens.visible` shows it), the probability drawn solid, an
    optional second one drawn dashed behind it (e.g. the model's own, before the settings), the text beside
    the bar, and classes (``chosen``, ``cut``, ``picked``)."""

    label: str
    value: float
    text: str
    behind: float | None = None
    classes: str = ""
    #: When set, the bar is clickable: a click is the chart's ``select`` event with this index.
    pick: int | None = None


def bars_html(rows: Sequence[BarRow], *, title: str = "", footer: str = "") -> str:
    """A horizontal bar chart (each bar's width: its probability)."""
    parts = [f'<div class="tok-bars-title">{html.escape(title)}</div>'] if title else []
    parts.append('<div class="tok-bars">')
    for r in rows:
        attrs = f' data-a="{r.pick}" tabindex="0" role="button"' if r.pick is not None else ""
        behind = f'<span class="tok-raw" style="width:{_width(r.behind)}"></span>' if r.behind is not None else ""
        parts.append(
            f'<div class="tok-row {html.escape(r.classes)}"{attrs}>'
            f'<span class="tok-label">{html.escape(r.label)}</span>'
            f'<span class="tok-track">{behind}<span class="tok-fill" style="width:{_width(r.value)}"></span></span>'
            f'<span class="tok-value">{html.escape(r.text)}</span></div>'
        )
    parts.append("</div>")
    if footer:
        parts.append(f'<div class="tok-legend">{html.escape(footer)}</div>')
    return "".join(parts)


def _width(p: float | None) -> str:
    return f"{max(0.0, min(1.0, p or 0.0)) * 100:.1f}%"


def alternatives_html(token: TokenLogprob, index: int, *, picked: int | None = None, clickable: bool = False) -> str:
    """Token ``index``'s alternatives as bars, most likely first: the token the answer has is marked "chosen";
    ``picked`` (an alternative's number) is drawn as the one to continue with; ``clickable``: a click on a bar
    picks it."""
    top = token.top or ((token.token, token.logprob),)
    rows = []
    for a, (text, lp) in enumerate(top):
        p = math.exp(lp)
        chosen = text == token.token
        classes = " ".join(c for c, on in (("chosen", chosen), ("picked", a == picked)) if on)
        note = " ✓ in the answer" if chosen else ""
        rows.append(BarRow(visible(text), p, percent(p) + note, classes=classes, pick=a if clickable else None))
    listed = sum(math.exp(lp) for _, lp in top)
    title = f"Token #{index}: {visible(token.token)} ({percent(token.probability)}) and the alternatives"
    footer = f"all other tokens together: {percent(max(0.0, 1.0 - listed))}"
    if token.token not in {t for t, _ in top}:
        footer += f" · the answer's token {visible(token.token)} was not among the most likely (sampling picked it)"
    if clickable:
        footer += " · click a bar to pick the token to continue with"
    return bars_html(rows, title=title, footer=footer)


def empty_html(text: str) -> str:
    """A placeholder line (what to do to see something here)."""
    return f'<div class="tok-empty">{html.escape(text)}</div>'


def note_html(text: str) -> str:
    """A remark about missing probabilities (e.g. a server that refused them), shown where they would be."""
    return f'<div class="tok-note">{html.escape(text)}</div>'
