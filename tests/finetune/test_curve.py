"""The learning curve: prompting at k beside fine-tuning at n on the same rows, its table and its PNG (tiny
random Llama: mechanics only)."""

from __future__ import annotations

import threading

from PIL import Image

from llm_levels.finetune import FinetuneConfig, curve_frame, learning_curve
from llm_levels.finetune.chart import draw_curve
from llm_levels.finetune.curve import FINETUNING, PROMPTING, REFERENCES, Curve, CurvePoint, curve_sizes

from .conftest import LABELS

CONFIG = FinetuneConfig(epochs=1, batch_size=8, learning_rate=1e-2)


def test_curve_sizes_are_capped_at_the_file():
    assert curve_sizes([8, 16, 32, 64, 128], 186) == [8, 16, 32, 64, 128]
    assert curve_sizes([8, 16, 32, 64, 128], 40) == [8, 16, 32, 40]
    assert curve_sizes([8, 16], 16) == [8, 16]


def test_learning_curve_points_progress_and_chart(tiny_loaded, tiny_train, tiny_eval, tmp_path):
    seen = []
    curve = learning_curve(
        tiny_loaded,
        tiny_train,
        tiny_eval,
        LABELS,
        shots=(0, 1),
        sizes=(4, 100),
        config=CONFIG,
        min_steps=2,
        on_progress=seen.append,
        eval_source="tiny eval",
    )
    assert [(p.series, p.examples) for p in curve.points] == [
        (PROMPTING, 0),
        (PROMPTING, 1),
        (FINETUNING, 4),
        (FINETUNING, 14),  # the file's size: 100 asked, 14 rows there
    ]
    assert all(0 <= p.weighted_f1 <= 1 and p.seconds >= 0 for p in curve.points) and not curve.stopped
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(p.loss is not None and p.stage.startswith("fine-tuning on") for p in seen)

    frame = curve_frame(curve)
    assert list(frame.columns) == ["examples", "weighted_f1", "series"]
    assert str(frame["examples"].dtype) == "int64" and str(frame["weighted_f1"].dtype) == "float64"
    assert set(frame["series"]) == {PROMPTING, FINETUNING} | {r.label for r in REFERENCES}

    png = draw_curve(curve, tmp_path / "curve.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == (960, 540)
    assert curve.to_dict()["references"][0]["weighted_f1"] == 0.40


def test_stop_keeps_the_points_finished(tiny_loaded, tiny_train, tiny_eval):
    cancel = threading.Event()

    def stop_when_training_starts(p):
        if p.stage.startswith("fine-tuning"):
            cancel.set()

    curve = learning_curve(
        tiny_loaded,
        tiny_train,
        tiny_eval,
        LABELS,
        shots=(0,),
        sizes=(4, 8),
        config=CONFIG,
        min_steps=2,
        on_progress=stop_when_training_starts,
        cancel=cancel,
    )
    assert curve.stopped and [(p.series, p.examples) for p in curve.points] == [(PROMPTING, 0)]


def test_an_empty_curve_still_draws(tmp_path):
    curve = Curve(points=[CurvePoint(PROMPTING, 0, 0.5, 0.5, 1.0)], eval_source="x", n_eval=3)
    assert draw_curve(curve, tmp_path / "c.png").stat().st_size > 1000
    assert len(curve_frame(Curve())) == 2 * len(REFERENCES)
