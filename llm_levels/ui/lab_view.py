"""What the Lab tab shows for a run: the status line and bar, the results table, the latest run's confusion
matrix, per-class scores and examples (the accuracy / F1 chart: lab_chart.py). Pure functions of the results."""

from __future__ import annotations

import pandas as pd

from ..icl.metrics import INVALID
from ..icl.runner import TABLE_HEADERS, Progress, RunResult, results_table


def status_text(p: Progress, backend: str, notes: str, prefix: str = "") -> str:
    """The status line (the run's state, backend and progress) with a progress bar under it."""
    pct = p.fraction * 100
    head = prefix or (
        "✅ Done" if p.finished else "⏹ Stopped: the rows done so far are kept" if p.stopped else "⏳ Running"
    )
    bar = (
        f'<div style="height:10px;border-radius:5px;background:var(--neutral-200);overflow:hidden">'
        f'<div style="width:{pct:.1f}%;height:100%;background:var(--color-accent)"></div></div>'
    )
    return f"{notes}**{head}** · {backend} · {p.describe()}\n\n{bar}"


#: The Lab's results table: the summary table without method and template (one run has one of each, named in
#: the status line), so its columns fit the tab's column, also with a partial "80/150" n.
LAB_TABLE_HEADERS = [h for h in TABLE_HEADERS if h not in ("method", "template")]


def results_frame(runs: list[RunResult]) -> pd.DataFrame:
    """The results table: one line per k."""
    return pd.DataFrame(results_table(runs), columns=TABLE_HEADERS)[LAB_TABLE_HEADERS]


def confusion_frame(last: RunResult) -> pd.DataFrame:
    """The latest run's confusion matrix (rows = gold); the invalid column only when some answers were."""
    m = last.metrics
    conf = pd.DataFrame(
        [[lab] + row for lab, row in zip(m.labels, m.confusion)],
        columns=["gold \\ predicted"] + m.confusion_columns,
    )
    if not m.n_invalid:
        conf = conf.drop(columns=[INVALID])
    return conf


def per_class_frame(last: RunResult) -> pd.DataFrame:
    """The latest run's precision, recall, F1 and support per label."""
    return pd.DataFrame(
        [
            [lab, round(s.precision, 3), round(s.recall, 3), round(s.f1, 3), s.support]
            for lab, s in last.metrics.per_class.items()
        ],
        columns=["label", "precision", "recall", "F1", "support"],
    )


def examples_text(run: RunResult) -> str:
    """The examples shown to the model in a run (none for zero-shot), as Markdown."""
    if not run.examples:
        return f"**k={run.shots}**: no examples (zero-shot)."
    lines = [f"**k={run.shots}** examples (from the pool, never evaluated):"]
    lines += [f"- *{e.label}*: {e.text}" for e in run.examples]
    return "\n".join(lines)
