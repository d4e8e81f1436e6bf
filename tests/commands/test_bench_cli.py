"""``python -m llm_levels bench`` runs end to end with tiny settings (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quick_run_writes_its_table_and_json(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "llm_levels", "bench", "--quick", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| configuration | decode tok/s" in proc.stdout
    data = json.loads(out.read_text())
    names = [r["config"] for r in data["decode"]]
    assert names[0].startswith("naive") and any(n.startswith("app:") for n in names)
    for row in data["decode"]:
        assert row["tokens"] >= 2 and row["tokens_per_s"] > 0 and row["reply"].strip()
    conc = data["concurrency"]
    assert conc["many"]["users"] == 2 and conc["many"]["tokens"] > 0
    assert data["machine"]["cores"] >= 1 and data["settings"]["tokens"] == 8


def test_bench_rejects_bad_numbers():
    proc = subprocess.run([sys.executable, "-m", "llm_levels", "bench", "--tokens", "1", "--no-app"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--tokens" in proc.stderr


@pytest.mark.slow
def test_the_gradio_floor_is_measured_with_both_consumers():
    """The do-nothing Gradio app is served, both consumers see its first word, and the figures are read
    from its own report (no timing is asserted beyond their order)."""
    from llm_levels.commands import gradio_floor

    floor = gradio_floor.measure(runs=2)
    assert floor["runs"] == 2
    for name in ("gradio_client", "http"):
        f = floor[name]
        assert f["min_ms"] <= f["extra_ttft_ms"] <= f["max_ms"]
