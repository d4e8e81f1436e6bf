"""The learning curve as a PNG, drawn with Pillow (matplotlib is not installed with the app).

The x axis is the number of labelled examples on a log scale (``log2(1 + n)``, so k = 0 has a place);
prompting and fine-tuning are two coloured lines with their points labelled, the article's scores dashed
grey lines. The y axis is weighted F1 from 0 to 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .curve import FINETUNING, PROMPTING, Curve

WIDTH, HEIGHT = 960, 540
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 90, 70
COLOURS = {PROMPTING: "#2f6fb3", FINETUNING: "#b3452f"}
REFERENCE_COLOUR = "#8a8a8a"


def _fonts() -> tuple[Any, Any]:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=16), ImageFont.load_default(size=13)
    except TypeError:  # an older Pillow without sizes
        font = ImageFont.load_default()
        return font, font


def _x(n: float, x_max: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * math.log2(1 + n) / math.log2(1 + x_max)


def _y(f1: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - f1)


def draw_curve(curve: Curve, path: str | Path, *, title: str = "") -> Path:
    """Draw ``curve`` into a PNG at ``path``; returns the path."""
    from PIL import Image, ImageDraw

    font, small = _fonts()
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    d.text(
        (LEFT, 14), title or "Weighted F1 against labelled examples: prompting vs fine-tuning", fill="black", font=font
    )
    d.text(
        (LEFT, 38),
        f"evaluated on {curve.eval_source} ({curve.n_eval} rows); higher is better",
        fill="#555555",
        font=small,
    )
    xs = sorted({p.examples for p in curve.points}) or [0, 1]
    x_max = max(max(xs), 1)
    _axes(d, xs, x_max, small)
    # The highest reference is labelled above its line, the others below theirs: close lines stay readable.
    for i, ref in enumerate(sorted(curve.references, key=lambda r: -r.weighted_f1)):
        y = _y(ref.weighted_f1)
        for x0 in range(LEFT, WIDTH - RIGHT, 12):  # dashed
            d.line([(x0, y), (min(x0 + 6, WIDTH - RIGHT), y)], fill=REFERENCE_COLOUR, width=1)
        label_y = y - 17 if i == 0 else y + 3
        d.text((WIDTH - RIGHT - 290, label_y), f"{ref.label}: {ref.weighted_f1:.2f}", fill=REFERENCE_COLOUR, font=small)
    for series, colour in COLOURS.items():
        pts = sorted((p for p in curve.points if p.series == series), key=lambda p: p.examples)
        xy = [(_x(p.examples, x_max), _y(p.weighted_f1)) for p in pts]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=3)
        for (x, y), p in zip(xy, pts):
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
            d.text((x - 10, y - 24), f"{p.weighted_f1:.2f}", fill=colour, font=small)
    _legend(d, small)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out


def _axes(d: Any, xs: list[int], x_max: float, small: Any) -> None:
    d.line([(LEFT, TOP), (LEFT, HEIGHT - BOTTOM), (WIDTH - RIGHT, HEIGHT - BOTTOM)], fill="black", width=1)
    for i in range(0, 11, 2):
        y = _y(i / 10)
        d.line([(LEFT - 4, y), (WIDTH - RIGHT, y)], fill="#e6e6e6", width=1)
        d.text((LEFT - 36, y - 7), f"{i / 10:.1f}", fill="black", font=small)
    for n in xs:
        x = _x(n, x_max)
        d.line([(x, HEIGHT - BOTTOM), (x, HEIGHT - BOTTOM + 4)], fill="black", width=1)
        d.text((x - 6, HEIGHT - BOTTOM + 8), str(n), fill="black", font=small)
    d.text(
        (LEFT, HEIGHT - BOTTOM + 30),
        "labelled examples (k in the prompt, or n to train on; log scale)",
        fill="black",
        font=small,
    )
    d.text((8, TOP - 22), "weighted F1", fill="black", font=small)


def _legend(d: Any, small: Any) -> None:
    x, y = LEFT + 12, TOP + 8
    for series, colour in COLOURS.items():
        d.line([(x, y + 7), (x + 24, y + 7)], fill=colour, width=3)
        d.text((x + 32, y), series, fill="black", font=small)
        y += 20
    d.line([(x, y + 7), (x + 24, y + 7)], fill=REFERENCE_COLOUR, width=1)
    d.text((x + 32, y), "seed article (Flan-T5-base, Financial PhraseBank)", fill="black", font=small)
