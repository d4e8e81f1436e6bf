"""``python -m llm_levels icl`` end to end: the real embedded model (score, on transformers; generate, on the
default engine llama.cpp), a real OpenAI-compatible server (generate), the JSON shape, bad input reported by
line number, score refused for openai and for llama.cpp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUN_KEYS = {
    "shots",
    "method",
    "template",
    "n",
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "invalid_rate",
    "per_class",
    "confusion",
}


def icl(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llm_levels", "icl", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_score_on_the_demo_set_writes_json_and_csv(tmp_path):
    out, rows_csv = tmp_path / "r.json", tmp_path / "rows.csv"
    p = icl("--shots", "0,1", "--limit", "6", "--template", "list", "--json", str(out), "--csv", str(rows_csv))
    assert p.returncode == 0, p.stderr
    assert "weighted F1" in p.stdout and "score" in p.stdout
    doc = json.loads(out.read_text())
    assert [r["shots"] for r in doc["runs"]] == [0, 1]
    for r in doc["runs"]:
        assert set(r) >= RUN_KEYS and r["n"] == 6 and r["method"] == "score" and r["template"] == "list"
        assert r["invalid_rate"] == 0 and sum(map(sum, r["confusion"])) == 6
        assert set(r["per_class"]) == {"negative", "neutral", "positive"}
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["weighted_f1"] <= 1
    lines = rows_csv.read_text().splitlines()
    assert len(lines) == 1 + 12 and lines[0].startswith("shots,method,template,line,text,gold,pred")
    assert "transformers" in doc["model"]  # score reads the probabilities through transformers


def test_generate_locally_runs_on_llama_cpp_and_exits_cleanly(tmp_path):
    out = tmp_path / "r.json"
    env = {"LOCAL_ENGINE": "", "LOCAL_MODEL": ""}  # the defaults: the embedded GGUF on llama.cpp
    p = icl("--method", "generate", "--shots", "0,1", "--limit", "4", "--json", str(out), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "terminate called" not in p.stderr and "Traceback" not in p.stderr
    assert "llama.cpp" in p.stderr  # the header names the engine
    doc = json.loads(out.read_text())
    assert "llama.cpp" in doc["model"]
    assert [r["shots"] for r in doc["runs"]] == [0, 1]
    for r in doc["runs"]:
        # Greedy answers, parsed: only the shape is checked (a small model may answer off the label set).
        assert set(r) >= RUN_KEYS and r["n"] == 4 and r["method"] == "generate"
        assert 0 <= r["invalid_rate"] <= 1 and 0 <= r["accuracy"] <= 1


def test_phrasebank_file_generate_via_openai_server_and_bad_lines(tmp_path, katan_echo):
    data = tmp_path / "bank.txt"
    lines = [
        f"Sentence number {i} about profits .@{lab}" for i, lab in enumerate(["positive", "negative", "neutral"] * 3)
    ]
    lines.insert(4, "a line without the separator")
    data.write_bytes("\n".join(lines).encode("latin-1"))
    out = tmp_path / "r.json"
    p = icl(
        "--data",
        str(data),
        "--backend",
        "openai",
        "--shots",
        "0",
        "--json",
        str(out),
        env=katan_echo.env(),
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "line 5" in p.stderr  # the bad line is reported, with its number
    (run,) = json.loads(out.read_text())["runs"]
    assert run["method"] == "generate" and run["n"] == 9
    # The echo server repeats the prompt, which names every label: an ambiguous answer counts as invalid.
    assert run["invalid_rate"] == 1.0 and run["accuracy"] == 0.0


def test_usage_errors():
    p = icl("--backend", "openai", "--method", "score")
    assert p.returncode == 2 and "--method score needs --backend local" in p.stderr
    p = icl("--method", "score", "--engine", "llama.cpp")
    assert p.returncode == 2 and "transformers engine" in p.stderr and "Traceback" not in p.stderr
    p = icl("--shots", "0,x")
    assert p.returncode == 2 and "whole numbers" in p.stderr
    p = icl("--data", "/nonexistent.csv")
    assert p.returncode == 2 and "No file" in p.stderr
