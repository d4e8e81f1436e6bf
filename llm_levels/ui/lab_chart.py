"""The Lab's chart: accuracy, weighted F1 and macro F1 per number of shots, as grouped bars in inline SVG.

Why not Gradio's native plots (Vega-Lite): with k as a number the axis reads 0.0, 0.2, … 3.0; the three
metrics are often equal (weighted and macro F1 are the same on a balanced set), so their lines or points
cover each other; and a run of one k leaves a single dot or nothing. Here every k is one group of three
bars side by side, labelled with its whole-number k, each bar with its value on top and its own colour
(colour-blind-safe), so equal scores show as equal bars, never as one, and a single k is a readable chart.

The SVG carries data attributes (``data-k``, ``data-metric``, ``data-value`` on each bar, class ``k-tick``
on each k label) so a browser test can read what is drawn.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..icl.runner import RunResult

#: (metric, colour): the Okabe-Ito palette, told apart with any colour vision.
SERIES = (("accuracy", "#0072B2"), ("weighted F1", "#E69F00"), ("macro F1", "#009E73"))
TITLE = "Accuracy and F1 per number of shots (k)"
EMPTY = "The chart of accuracy and F1 per k appears here after the first batch."

# Drawing units (the SVG scales to the width of its column).
W, H = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 54, 46
BAR_MAX_W = 44


def _values(run: RunResult) -> tuple[float, float, float]:
    m = run.metrics
    return m.accuracy, m.weighted_f1, m.macro_f1


def _y(value: float) -> float:
    return TOP + (1.0 - max(0.0, min(1.0, value))) * (H - TOP - BOTTOM)


def _axes() -> list[str]:
    """The y grid (0 to 1 by 0.2) with its labels, the title and the legend."""
    out = [
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="15" font-weight="600" '
        f'fill="currentColor">{TITLE}</text>'
    ]
    for i in range(6):
        v = i / 5
        y = _y(v)
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
            f'stroke-opacity="{0.35 if i == 0 else 0.12}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="currentColor" '
            f'fill-opacity="0.75">{v:.1f}</text>'
        )
    x = LEFT
    for name, colour in SERIES:
        out.append(
            f'<rect x="{x}" y="29" width="11" height="11" rx="2" fill="{colour}"/>'
            f'<text class="legend" x="{x + 16}" y="39" font-size="12" fill="currentColor">{name}</text>'
        )
        x += 16 + 8 * len(name) + 18
    return out


def _group(run: RunResult, cx: float, group_w: float) -> list[str]:
    """One k: three bars side by side around ``cx``, their values on top, the k under them."""
    bar_w = min(BAR_MAX_W, group_w * 0.8 / len(SERIES))
    x0 = cx - bar_w * len(SERIES) / 2
    base = _y(0.0)
    partial = "" if run.complete else f" ({len(run.rows)}/{run.total} rows)"
    out = []
    for i, ((name, colour), value) in enumerate(zip(SERIES, _values(run))):
        x, y = x0 + i * bar_w, _y(value)
        tip = html.escape(f"k={run.shots}{partial} · {name} {value:.3f}")
        out.append(
            f'<rect class="bar" data-k="{run.shots}" data-metric="{name}" data-value="{value:.4f}" '
            f'x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{max(base - y, 0.0):.1f}" '
            f'fill="{colour}"><title>{tip}</title></rect>'
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="10.5" '
            f'fill="currentColor">{value:.2f}</text>'
        )
    out.append(
        f'<text class="k-tick" x="{cx:.1f}" y="{base + 17:.1f}" text-anchor="middle" font-size="13" '
        f'fill="currentColor">{run.shots}</text>'
    )
    if partial:
        out.append(
            f'<text x="{cx:.1f}" y="{base + 30:.1f}" text-anchor="middle" font-size="10" fill="currentColor" '
            f'fill-opacity="0.7">{html.escape(partial.strip())}</text>'
        )
    return out


def chart_html(runs: Sequence[RunResult]) -> str:
    """The chart for the runs so far (k in increasing order; a run stopped early is marked partial)."""
    shown = sorted((r for r in runs if r.metrics.n), key=lambda r: r.shots)
    if not shown:
        return f'<div class="lab-chart lab-chart-empty">{EMPTY}</div>'
    group_w = (W - LEFT - RIGHT) / len(shown)
    parts = _axes()
    for i, run in enumerate(shown):
        parts += _group(run, LEFT + group_w * (i + 0.5), group_w)
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 4}" text-anchor="middle" font-size="12" '
        f'fill="currentColor">shots (k)</text>'
    )
    # What a screen reader says instead of the picture: every value.
    values = "; ".join(
        f"k={r.shots} " + ", ".join(f"{name} {v:.2f}" for (name, _c), v in zip(SERIES, _values(r))) for r in shown
    )
    label = html.escape(f"{TITLE}: {values}")
    return (
        f'<div class="lab-chart"><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{label}" '
        f'xmlns="http://www.w3.org/2000/svg" style="max-height:{H + 40}px">' + "".join(parts) + "</svg></div>"
    )
