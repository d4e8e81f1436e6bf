"""``bench --logprobs-only``: per-token information off vs on, both engines, side by side (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_logprobs_only_measures_both_engines_off_and_on(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "llm_levels", "bench", "--logprobs-only", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["logprobs"]
    assert [r["engine"] for r in rows] == ["llama.cpp", "transformers"]
    for r in rows:
        assert r["top"] == 5 and r["same_answer"] and r["all_tokens_had_info"]
        assert set(r["runs"]) == {"off", "on"} and all(len(v) == 1 for v in r["runs"].values())
        for key in ("off_tokens_per_s", "on_tokens_per_s", "off_cpu_ms_per_token", "on_cpu_ms_per_token", "ratio"):
            assert r[key] > 0
    assert "decode with per-token info (top 5) ≥ 0.85× without" in proc.stdout
