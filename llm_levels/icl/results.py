"""Saving and summarising a lab's runs: the JSON document, the per-row predictions CSV, the summary table.

Split out of :mod:`llm_levels.icl.runner`, which still exports every name here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import INVALID

if TYPE_CHECKING:
    from .runner import LabConfig, RunResult


def results_dict(
    runs: Sequence[RunResult], *, source: str = "", backend: str = "", model: str = "", config: LabConfig | None = None
) -> dict[str, Any]:
    """The JSON document of a lab: ``{"runs": [...], "data", "backend", "model", "config"}``."""
    out: dict[str, Any] = {"runs": [r.to_dict() for r in runs], "data": source, "backend": backend, "model": model}
    if config is not None:
        out["config"] = {
            "shots": list(config.shots),
            "method": config.method,
            "template": config.template,
            "limit": config.limit,
            "seed": config.seed,
            "max_new_tokens": config.max_new_tokens,
            "calibrate": config.calibrate if config.method == "score" else None,
        }
    return out


CSV_COLUMNS = ("shots", "method", "template", "line", "text", "gold", "pred", "correct", "answer")


def write_predictions_csv(runs: Sequence[RunResult], path: str | Path) -> Path:
    """One row per (run, evaluated row): the gold label, the prediction (``(invalid)``), the answer, scores."""
    labels: list[str] = []
    for r in runs:
        labels.extend(lab for lab in r.labels if lab not in labels)
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(CSV_COLUMNS) + [f"logprob_{lab}" for lab in labels])
        for run in runs:
            for row in run.rows:
                scores = row.scores or {}
                w.writerow(
                    [
                        run.shots,
                        run.method,
                        run.template,
                        row.line,
                        row.text,
                        row.gold,
                        row.pred if row.pred is not None else INVALID,
                        int(row.correct),
                        row.answer,
                    ]
                    + [scores.get(lab, "") for lab in labels]
                )
    return p


def save_results(
    runs: Sequence[RunResult], folder: str | Path, stem: str = "icl_results", **meta: Any
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (:func:`results_dict`) and ``<stem>.csv`` (per-row predictions) into ``folder``."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    json_path = d / f"{stem}.json"
    json_path.write_text(json.dumps(results_dict(runs, **meta), indent=2, ensure_ascii=False), encoding="utf-8")
    return json_path, write_predictions_csv(runs, d / f"{stem}.csv")


def results_table(runs: Sequence[RunResult]) -> list[list[Any]]:
    """Rows of the summary table: k, method, template, n, accuracy, macro F1, weighted F1, invalid %."""
    out = []
    for r in runs:
        m = r.metrics
        out.append(
            [
                r.shots,
                r.method,
                r.template,
                m.n if r.complete else f"{m.n}/{r.total}",
                round(m.accuracy, 3),
                round(m.macro_f1, 3),
                round(m.weighted_f1, 3),
                round(100 * m.invalid_rate, 1),
            ]
        )
    return out


TABLE_HEADERS = ["k", "method", "template", "n", "accuracy", "macro F1", "weighted F1", "invalid %"]
