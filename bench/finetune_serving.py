"""Does the app keep serving while the Lab fine-tunes? Chat time-to-first-token before and during training.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/finetune_serving.py [--turns 8] [--examples 128] [--epochs 5]
        [--report bench/FINETUNE.md]

Starts the real app (``app.py``) on a free port with an empty cache, then, side by side in one run:

1. **Before**: ``--turns`` short chat turns (each a new prompt) through the app's ``/v1`` with the ``openai`` client, streamed,
   greedy, one after the other, on each local engine (``local-llama.cpp``, the default, and
   ``local-transformers``, the engine training runs on): the time to the first token and to the last.
2. **During**: the Lab's **Fine-tune** event is started through ``gradio_client`` (``/train``, the demo set,
   ``--examples`` rows x ``--epochs``, nothing saved), and the same turns run again while it trains; each
   turn is counted only if training was still running when it ended.
3. The fine-tune's own figures (its status line) and the app's peak memory.

Training runs in its own event lane (``lab-finetune``, one at a time) and holds the transformers engine's
admission line for one optimiser step at a time: a transformers turn waits at most one step; the llama.cpp
engine has its own line and shares only the CPU. Writes ``bench/finetune_serving.json`` and the block
between the ``finetune-serving`` markers of ``--report``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from served_app import AppProcess  # noqa: E402

BEGIN, END = "<!-- finetune-serving:begin -->", "<!-- finetune-serving:end -->"
ENGINES = ("local-llama.cpp", "local-transformers")
#: A new prompt every turn (numbered), so no turn reuses the engine's cached prompt.
PROMPT = "Question {n}: name three primary colours."
COUNTER = iter(range(1_000_000))


def chat_turn(client: Any, model: str) -> tuple[float, float]:
    """One streamed greedy turn: (seconds to the first content token, seconds to the end)."""
    t0 = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT.format(n=next(COUNTER))}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - t0, end - t0


def turns(client: Any, model: str, n: int, still: Any = None) -> list[tuple[float, float]]:
    """``n`` turns one after the other; with ``still`` (a callable), only those that ended while it was true."""
    out = []
    for _ in range(n):
        ttft, total = chat_turn(client, model)
        if still is None or still():
            out.append((ttft, total))
        time.sleep(0.2)
    return out


def summary(rows: list[tuple[float, float]]) -> dict[str, Any]:
    if not rows:
        return {"turns": 0}
    ttfts = sorted(r[0] for r in rows)
    return {
        "turns": len(rows),
        "ttft_median_s": round(statistics.median(ttfts), 3),
        "ttft_max_s": round(ttfts[-1], 3),
        "total_median_s": round(statistics.median(r[1] for r in rows), 3),
    }


def start_training(url: str, examples: int, epochs: int) -> tuple[Any, threading.Event]:
    """Submit the Lab's Fine-tune event; a thread reads its updates and sets the event when it ends."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    job = client.submit(None, examples, epochs, 0, 0, "", False, api_name="/train")
    done = threading.Event()
    box: dict[str, Any] = {"status": ""}

    def follow() -> None:
        try:
            for out in job:
                text = next((o for o in out if isinstance(o, str) and ("⏳" in o or "✅" in o)), None)
                if text:
                    box["status"] = text
        finally:
            done.set()

    threading.Thread(target=follow, daemon=True).start()
    return box, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "bench" / "finetune_serving.json"))
    ap.add_argument("--report", default=None)
    args = ap.parse_args()
    from openai import OpenAI

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any] = {
        "run_at": when,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "args": vars(args),
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llm-levels-serving-") as cache:
        app = AppProcess(Path(cache), users=2)
        try:
            app.wait_page(180)
            client = OpenAI(base_url=app.url + "/v1", api_key="none", max_retries=0, timeout=300)
            for model in ENGINES:  # warm both engines (the transformers one loads on first use)
                chat_turn(client, model)
            results["before"] = {m: summary(turns(client, m, args.turns)) for m in ENGINES}
            status, done = start_training(app.url, args.examples, args.epochs)
            while "training" not in status["status"].lower() and not done.is_set():
                time.sleep(0.5)  # wait past loading and preparing: measure while it trains
            t_train = time.perf_counter()
            results["during"] = {
                m: summary(turns(client, m, args.turns, still=lambda: not done.is_set())) for m in ENGINES
            }
            results["training_running_after_turns"] = not done.is_set()
            done.wait(900)
            results["training_wall_s_from_first_step"] = round(time.perf_counter() - t_train, 1)
            results["training_status"] = status["status"].split("\n")[0][:300]
            peak = app.peak_rss_mb()
            results["app_peak_rss_mb"] = round(peak) if peak else None
        finally:
            app.stop()
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results["bench_wall_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.json).write_text(json.dumps(results, indent=1))
    block = report_block(results)
    print(block)
    if args.report:
        write_report(Path(args.report), block)


def report_block(r: dict[str, Any]) -> str:
    lines = [
        "| engine | TTFT median before | TTFT median during training | TTFT max during | turn median before / during |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in ENGINES:
        b, d = r["before"][m], r["during"][m]
        if not d.get("turns"):
            lines.append(f"| {m} | {b['ttft_median_s']} s | (training ended before a turn did) | | |")
            continue
        lines.append(
            f"| {m} | {b['ttft_median_s']} s | {d['ttft_median_s']} s ({d['turns']} turns) | {d['ttft_max_s']} s "
            f"| {b['total_median_s']} / {d['total_median_s']} s |"
        )
    lines += [
        "",
        f"Run of {r.get('run_at', '?')}, 2 cores.",
        f"Fine-tune in the app: {r['training_status']}",
        f"App peak memory (VmHWM): {r['app_peak_rss_mb']} MB. Load average {r['load_average_at_start']} at the "
        f"start, {r['load_average_at_end']} at the end; bench wall time {r['bench_wall_s']} s.",
    ]
    return "\n".join(lines)


def write_report(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    full = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + full + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + full + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
