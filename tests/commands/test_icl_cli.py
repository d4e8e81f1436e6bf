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


def test_finetune_prints_the_same_table_and_writes_the_same_json(tmp_path):
    out, rows_csv = tmp_path / "r.json", tmp_path / "rows.csv"
    p = icl(
        *("--method", "finetune", "--examples", "16", "--epochs", "1", "--limit", "6"),
        *("--json", str(out), "--csv", str(rows_csv)),
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "weighted F1" in p.stdout and "finetune" in p.stdout and "fine-tuned on 16 rows × 1 epochs" in p.stdout
    assert "training · epoch 1/1" in p.stderr and "Traceback" not in p.stderr
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]
    assert set(run) >= RUN_KEYS and run["method"] == "finetune" and run["n"] == 6 and run["invalid_rate"] == 0
    assert run["train_examples"] == 16 and run["epochs"] == 1 and sum(map(sum, run["confusion"])) == 6
    assert doc["data"] == "demo (evaluation split)" and doc["training"]["source"] == "demo (training split)"
    assert "transformers" in doc["model"] and doc["adapter"] is None  # saved only when asked
    assert len(rows_csv.read_text().splitlines()) == 1 + 6


def test_learning_curve_writes_the_chart_and_its_points(tmp_path, tiny_causal_dir):
    # The tiny random model (mechanics only) with two labels whose first tokens differ in its tokenizer.
    train, data = tmp_path / "train.csv", tmp_path / "eval.csv"
    words = ["rose", "grew", "jumped", "climbed", "fell", "shrank", "dropped", "slid"]
    train.write_text(
        "text,label\n"
        + "".join(f"sales {w} a lot,{'positive' if i < 4 else 'negative'}\n" for i, w in enumerate(words))
    )
    data.write_text("text,label\nprofit rose,positive\nprofit fell,negative\n")
    png = tmp_path / "curve.png"
    p = icl(
        *("--learning-curve", str(png), "--model", str(tiny_causal_dir), "--train", str(train), "--data", str(data)),
        *("--shots", "0,1", "--sizes", "4,100", "--epochs", "1"),
        env={"LOCAL_DEVICE": "cpu", "LOCAL_DTYPE": "float32"},
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(png.with_suffix(".json").read_text())
    points = [(q["series"].split()[0], q["examples"]) for q in doc["learning_curve"]["points"]]
    assert points == [("prompting", 0), ("prompting", 1), ("fine-tuning", 4), ("fine-tuning", 8)]
    assert "fine-tuning" in p.stdout and "Flan-T5-base one-shot (article)" in p.stdout


def test_finetune_usage_errors(tmp_path):
    p = icl("--method", "finetune", "--backend", "openai")
    assert p.returncode == 2 and "--backend local" in p.stderr
    p = icl("--method", "finetune", "--epochs", "0")
    assert p.returncode == 2 and "Epochs" in p.stderr
    p = icl("--learning-curve", str(tmp_path / "c.png"), "--sizes", "8,x")
    assert p.returncode == 2 and "--sizes" in p.stderr
    p = icl("--method", "finetune", "--train", "/nonexistent.csv")
    assert p.returncode == 2 and "No file" in p.stderr and "Traceback" not in p.stderr
