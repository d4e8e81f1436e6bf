"""``python -m llm_levels bench`` runs end to end with tiny settings (no timing is asserted, ever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_quick_run_writes_its_tables_json_report_and_chart(tmp_path):
    out, report, chart = tmp_path / "results.json", tmp_path / "RESULTS.md", tmp_path / "perf.png"
    report.write_text("# Kept title\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nKept text.\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_levels",
            "bench",
            "--quick",
            "--json",
            str(out),
            "--report",
            str(report),
            "--chart",
            str(chart),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| configuration | decode tok/s" in proc.stdout and "| goal | measured |" in proc.stdout
    data = json.loads(out.read_text())
    # 1-3: naive transformers, llama.cpp standalone and the app's backend, on the same prompt.
    assert [r["key"] for r in data["decode"]][:3] == ["naive", "standalone", "app"]
    for row in data["decode"]:
        assert row["tokens"] >= 2 and row["tokens_per_s"] > 0 and row["ttft_s"] > 0 and row["reply"].strip()
    assert {
        "app_over_standalone",
        "app_ttft_extra_ms",
        "standalone_over_naive",
        "app_over_naive",
        "app_text_equals_standalone",
        "app_prepare_ms",
    } <= data["ratios"].keys()
    assert {"standalone_s", "app_s", "extra_ms"} <= data["cached_ttft"].keys()
    assert {"transformers_s", "llama_cpp_app_s", "llama_cpp_standalone_s"} <= data["load"].keys()
    sp = data["standalone_process"]
    assert sp["load_s"] > 0 and sp["rss_loaded_mb"] > 0 and sp["peak_rss_mb"] >= sp["rss_loaded_mb"]
    # 4: concurrency through the app's backend (2 users in quick mode).
    conc = data["concurrency"]
    assert conc["many"]["users"] == 2 and conc["many"]["tokens"] > 0 and conc["ratio"] > 0
    assert "app" not in data  # --quick skips the running app
    assert data["machine"]["cores"] >= 1 and data["machine"]["xllamacpp"]
    assert data["settings"]["tokens"] == 8 and data["settings"]["gguf"].endswith(".gguf")
    assert data["goals"] and all({"goal", "value", "ok"} <= g.keys() for g in data["goals"])
    # The report replaces only its own block; the chart is a PNG.
    text = report.read_text()
    assert text.startswith("# Kept title") and text.rstrip().endswith("Kept text.") and "\nold\n" not in text
    assert "### Goals" in text and "### The same prompt, naive transformers and llama.cpp" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --from-json measures nothing and prints the same tables.
    again = subprocess.run(
        [sys.executable, "-m", "llm_levels", "bench", "--from-json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "| configuration | decode tok/s" in again.stdout


def test_bench_rejects_bad_numbers():
    proc = subprocess.run(
        [sys.executable, "-m", "llm_levels", "bench", "--tokens", "1", "--no-app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--tokens" in proc.stderr


def test_the_bench_command_imports_nothing_heavy():
    """``--help`` stays fast: the command module leaves torch, transformers, gradio and llama.cpp alone."""
    code = (
        "import sys, llm_levels.commands.bench as b; "
        "print(sorted(m for m in ('torch', 'transformers', 'gradio', 'xllamacpp') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_the_local_tab_inputs_are_found_by_label():
    """The page's inputs are built from the Gradio config by label, so a new input (e.g. the engine) or a
    new order does not break the streaming section."""
    sys.path.insert(0, str(ROOT / "bench"))
    import served_app

    comps = [
        {"id": 1, "type": "textbox", "props": {"label": "Message"}},
        {"id": 2, "type": "state", "props": {}},
        {"id": 3, "type": "textbox", "props": {"label": "System prompt"}},
        {"id": 4, "type": "checkbox", "props": {"label": "do_sample", "value": True}},
        {"id": 5, "type": "slider", "props": {"label": "temperature", "value": 0.7}},
        {"id": 6, "type": "slider", "props": {"label": "max_new_tokens", "value": 128}},
        {"id": 7, "type": "textbox", "props": {"label": "seed", "value": "1"}},
        {"id": 8, "type": "radio", "props": {"label": "Engine", "value": "transformers"}},
    ]
    cfg = {"components": comps}
    dep = {"inputs": [1, 2, 3, 4, 5, 6, 7, 8]}
    assert served_app.local_inputs("Hi", 16)(cfg, dep) == ["Hi", None, "", False, 0.7, 16, "", "llama.cpp"]
    final = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        {"headers": ["Turn", "Out tokens", "TTFT (s)", "Tokens/s"], "data": [[1, 16, 0.05, 90.0]]},
    ]
    fig = served_app.turn_figures((0.0, 0.1, 0.3, final))
    assert fig["app"] == {"ttft_s": 0.05, "tokens_per_s": 90.0, "tokens": 16} and fig["text"] == "Hello"


@pytest.mark.slow
def test_the_gradio_floor_is_measured_with_both_consumers():
    """The do-nothing Gradio app is served, both consumers see its first word, and the figures are read
    from its own report (no timing is asserted beyond their order)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import gradio_floor

    floor = gradio_floor.measure(runs=2)
    assert floor["runs"] == 2
    for name in ("gradio_client", "http"):
        f = floor[name]
        assert f["min_ms"] <= f["extra_ttft_ms"] <= f["max_ms"]
