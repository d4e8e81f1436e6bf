"""Benchmark of the ICL lab on the shipped demo set with the embedded SmolLM2-135M: speed and quality.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/icl_bench.py [--shots 0,1,3,5] [--templates instruct,list,article]
        [--generate-limit 24] [--out bench/ICL_RESULTS.md]

1. Speed: sentences/s of the score method (batched, shared prefix), zero-shot and 5-shot, on 64 rows.
2. Quality, score method: every template x k on all 150 rows, one scoring pass each, decided three ways
   (calibration none / content-free / batch) from the same log-probabilities.
3. Quality, generate method (greedy, max 10 new tokens, parsed): templates x k on a stratified sample.
Writes a Markdown report with the tables (and prints it).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llm_levels.config import Settings
from llm_levels.icl.data import load_demo, sample_eval
from llm_levels.icl.metrics import compute_metrics
from llm_levels.icl.prompts import get_template, select_examples
from llm_levels.icl.runner import CALIBRATIONS, CONTENT_FREE, LabConfig, _decide, run_lab
from llm_levels.icl.scoring import LabelScorer

ARTICLE = "Seed article (Flan-T5-base, Financial PhraseBank): accuracy 0.45 → 0.49, weighted F1 0.40 → 0.44 (k=0 → 1)."


def speed(loaded, rows, pool, labels, k: int, batch: int) -> float:
    import torch

    ex = select_examples(pool, k, labels, 0, exclude=rows)
    prompts = [get_template("instruct").messages(e.text, ex, labels) for e in rows]
    sc = LabelScorer(loaded, batch_size=batch)
    t0 = time.perf_counter()
    sc.set_prefix(prompts)
    sc.score(prompts, labels)
    return len(rows) / (time.perf_counter() - t0), torch.get_num_threads()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", default="0,1,3,5")
    ap.add_argument("--templates", default="instruct,list,article")
    ap.add_argument("--generate-limit", type=int, default=24)
    ap.add_argument("--generate-shots", default="0,1,3")
    ap.add_argument("--out", default=str(Path(__file__).with_name("ICL_RESULTS.md")))
    args = ap.parse_args()
    shots = [int(x) for x in args.shots.split(",")]
    templates = args.templates.split(",")

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from llm_levels.backends.local_hf import LocalBackend
    from llm_levels.models import load_model

    t0 = time.perf_counter()
    loaded = load_model("embedded", Settings.from_env())
    load_s = time.perf_counter() - t0
    ev, pool = load_demo()
    labels, rows, pool_rows = ev.labels, ev.examples, pool.examples
    lines = [
        "# ICL lab benchmark (embedded SmolLM2-135M-Instruct, shipped demo set)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}; model load {load_s:.1f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "The machine is shared with other jobs: timings are noisy (load average at the start: "
        f"{os.getloadavg()[0]:.1f}).",
        "",
        ARTICLE,
        "",
        "Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/icl_bench.py`",
        "",
        "## Speed (score method)",
        "",
        "| k | batch | prompt tokens | sentences/s | torch threads |",
        "|---|---|---|---|---|",
    ]
    sample = rows[:64]
    for k in (0, 5):
        for batch in (8, 16):
            rate, threads = speed(loaded, sample, pool_rows, labels, k, batch)
            ntok = len(
                LabelScorer(loaded).prompt_ids(
                    get_template("instruct").messages(
                        sample[0].text, select_examples(pool_rows, k, labels, 0, exclude=rows), labels
                    )
                )
            )
            lines.append(f"| {k} | {batch} | {ntok} | {rate:.1f} | {threads} |")
            print(lines[-1], flush=True)

    lines += [
        "",
        "## Quality, score method (all 150 rows; weighted F1, accuracy in brackets)",
        "",
        "| template | k | " + " | ".join(f"calibrate={c}" for c in CALIBRATIONS) + " | neutral recall (batch) | s |",
        "|---|---|" + "---|" * len(CALIBRATIONS) + "---|---|",
    ]
    best = (0.0, "")
    scorer = LabelScorer(loaded, batch_size=16)
    for t in templates:
        cfg = LabConfig(shots=tuple(shots), method="score", template=t, calibrate="none")
        final = list(run_lab(rows, pool_rows, labels, cfg, scorer=scorer))[-1]
        for run in final.runs:
            cells = []
            for cal in CALIBRATIONS:
                rr = copy.deepcopy(run.rows)
                base = {}
                if cal == "content-free":
                    free = get_template(t).messages(CONTENT_FREE, run.examples, labels)
                    base = scorer.score([free], labels)[0].logprobs
                _decide(rr, labels, cal, base)
                m = compute_metrics([r.gold for r in rr], [r.pred for r in rr], labels)
                cells.append(f"{m.weighted_f1:.3f} ({m.accuracy:.3f})")
                if cal == "batch":
                    nrec = m.per_class["neutral"].recall
                if m.weighted_f1 > best[0]:
                    best = (
                        m.weighted_f1,
                        f"score, template={t}, k={run.shots}, calibrate={cal} "
                        f"(accuracy {m.accuracy:.3f}, macro F1 {m.macro_f1:.3f})",
                    )
            lines.append(f"| {t} | {run.shots} | " + " | ".join(cells) + f" | {nrec:.2f} | {run.elapsed_s:.0f} |")
            print(lines[-1], flush=True)

    if args.generate_limit > 0:
        gen_rows = sample_eval(rows, args.generate_limit, 0)
        lines += [
            "",
            f"## Quality, generate method (greedy, max 10 new tokens; {len(gen_rows)} stratified rows)",
            "",
            "| template | k | weighted F1 | accuracy | invalid % | s |",
            "|---|---|---|---|---|---|",
        ]
        backend = LocalBackend(loaded)
        for t in ("instruct", "article"):
            cfg = LabConfig(
                shots=tuple(int(x) for x in args.generate_shots.split(",")),
                method="generate",
                template=t,
                max_new_tokens=10,
            )
            final = list(run_lab(gen_rows, pool_rows, labels, cfg, backend=backend))[-1]
            for run in final.runs:
                m = run.metrics
                lines.append(
                    f"| {t} | {run.shots} | {m.weighted_f1:.3f} | {m.accuracy:.3f} | "
                    f"{100 * m.invalid_rate:.0f} | {run.elapsed_s:.0f} |"
                )
                print(lines[-1], flush=True)

    lines += ["", f"**Best configuration:** weighted F1 {best[0]:.3f} — {best[1]}.", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
