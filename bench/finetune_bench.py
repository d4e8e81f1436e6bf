"""Fine-tuning against prompting on a held-apart set: quality, training time, peak memory, reproducibility.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/finetune_bench.py [--data bench/data/financial_heldout.csv]
        [--examples 128] [--epochs E] [--repeat] [--curve docs/finetune_curve.png] [--report bench/FINETUNE.md]
        [--report-only]

1. Fine-tunes the embedded SmolLM2 (LoRA, ``llm_levels.finetune.run_finetune``) on the demo set only (its
   186 rows; a row also in ``--data`` would be dropped) and scores ``--data``; records the training time
   (wall and this process's CPU seconds) and the peak resident memory of the process (``ru_maxrss``) after
   training, before anything else runs. ``--repeat`` trains again with the same seed and compares.
2. Scores ``--data`` by prompting (the Lab's score method, template ``instruct``, batch calibration, the
   best configuration of bench/ICL_RESULTS.md) at k = 0, 1, 3, 5 with examples from the demo pool.
3. ``--curve PNG``: the learning curve (prompting at k beside fine-tuning at 8...128) as PNG + JSON.

Writes ``bench/finetune_results.json`` and the results block of ``--report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- finetune-bench:begin -->", "<!-- finetune-bench:end -->"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finetune(loaded, train, rows, labels, config, adapters_dir=None) -> dict:
    from llm_levels.finetune import run_finetune

    wall, cpu = time.perf_counter(), time.process_time()
    out = run_finetune(
        loaded,
        train,
        rows,
        labels,
        config,
        train_source="demo (all 186 rows)",
        save_as="bench adapter" if adapters_dir else None,
        adapters_dir=adapters_dir,
    )
    doc = out.run.to_dict()
    return {
        "weighted_f1": doc["weighted_f1"],
        "accuracy": doc["accuracy"],
        "per_class_recall": {k: v["recall"] for k, v in doc["per_class"].items()},
        "confusion": doc["confusion"],
        "train_examples": out.train.examples,
        "epochs": out.train.epochs,
        "steps": out.train.steps,
        "encode_s": round(out.train.encode_s, 1),
        "train_s": round(out.train.train_s, 1),
        "eval_s": round(out.run.elapsed_s, 1),
        "total_wall_s": round(time.perf_counter() - wall, 1),
        "total_cpu_s": round(time.process_time() - cpu, 1),
        "loss_first": round(out.train.losses[0], 4),
        "loss_last": round(out.train.losses[-1], 4),
        "scores": [r.scores for r in out.run.rows],
        "adapter": out.adapter,
    }


def generation(adapter, rows, labels) -> dict:
    """The saved adapter merged into a fresh copy of the model, asked each row greedily (the instruct prompt,
    as the Lab asks it): how often the answer is exactly one label, and how often the right one."""
    from llm_levels.backends.local_hf import LocalBackend
    from llm_levels.config import Settings
    from llm_levels.core import GenParams, ReplyBuilder
    from llm_levels.finetune import load_adapter_model
    from llm_levels.icl.prompts import get_template

    t0 = time.perf_counter()
    backend = LocalBackend(load_adapter_model(adapter, Settings.from_env()))
    exact = right = 0
    answers = []
    for e in rows:
        reply = ReplyBuilder()
        for chunk in backend.stream(
            get_template("instruct").messages(e.text, [], labels), GenParams(temperature=0.0, max_new_tokens=6)
        ):
            reply.add(chunk)
        text = reply.text.strip()
        answers.append(text)
        exact += text in labels
        right += text == e.label
    return {
        "exact_label_rate": round(exact / len(rows), 3),
        "accuracy": round(right / len(rows), 3),
        "examples": answers[:5],
        "s": round(time.perf_counter() - t0, 1),
    }


def prompting(loaded, pool, rows, labels) -> list[dict]:
    from llm_levels.icl.runner import LabConfig, run_lab
    from llm_levels.icl.scoring import LabelScorer

    config = LabConfig(shots=(0, 1, 3, 5), method="score", template="instruct", calibrate="batch")
    last = list(run_lab(rows, pool, labels, config, scorer=LabelScorer(loaded)))[-1]
    return [
        {"k": r.shots, "weighted_f1": r.metrics.weighted_f1, "accuracy": r.metrics.accuracy, "s": round(r.elapsed_s, 1)}
        for r in last.runs
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "bench/data/financial_heldout.csv"))
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None, help="default: FinetuneConfig's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", action="store_true", help="train again with the same seed and compare")
    ap.add_argument("--curve", default=None, metavar="PNG")
    ap.add_argument("--json", default=str(ROOT / "bench/finetune_results.json"))
    ap.add_argument("--report", default=str(ROOT / "bench/FINETUNE.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite --report from --json, run nothing")
    args = ap.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.json).read_text()), Path(args.report))
        return 0

    import torch

    from llm_levels.config import Settings
    from llm_levels.finetune import FinetuneConfig, demo_training
    from llm_levels.icl.data import load_demo, load_labelled
    from llm_levels.models import load_model

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    loaded = load_model("embedded", Settings.from_env())
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    data = load_labelled(args.data)
    rows, labels = data.examples, data.labels
    config = FinetuneConfig(examples=args.examples, seed=args.seed)
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    train = demo_training().examples
    print(f"fine-tuning on {args.examples} demo rows × {config.epochs} epochs, scoring {len(rows)} rows", flush=True)
    with tempfile.TemporaryDirectory() as adapters:
        ft = finetune(loaded, train, rows, labels, config, Path(adapters))
        ft["peak_rss_mb"] = round(peak_rss_mb())
        print({k: v for k, v in ft.items() if k != "scores"}, flush=True)
        ft["generation"] = generation(ft.pop("adapter"), rows, labels)
        print("generation with the merged adapter:", ft["generation"], flush=True)
    results = {
        "started": started,
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "load_average_at_start": round(load_avg, 2),
        "model_load_s": round(load_s, 1),
        "rss_after_load_mb": round(rss_loaded),
        "data": Path(args.data).name,
        "n": len(rows),
        "config": dataclasses.asdict(config),
        "finetune": ft,
    }
    if args.repeat:
        again = finetune(loaded, train, rows, labels, config)
        again.pop("adapter")
        results["repeat_identical"] = again["scores"] == ft["scores"] and again["weighted_f1"] == ft["weighted_f1"]
        print("same seed again, identical:", results["repeat_identical"], flush=True)
    print("prompting (score, instruct, batch calibration)…", flush=True)
    results["prompting"] = prompting(loaded, load_demo()[1].examples, rows, labels)
    print(results["prompting"], flush=True)
    if args.curve:
        results["curve"] = curve(loaded, train, rows, labels, config, args.curve, data.source)
    ft.pop("scores", None)
    Path(args.json).write_text(json.dumps(results, indent=2))
    write_report(results, Path(args.report))
    return 0


def curve(loaded, train, rows, labels, config, png, source) -> dict:
    from llm_levels.finetune import learning_curve
    from llm_levels.finetune.chart import draw_curve

    t0 = time.perf_counter()
    c = learning_curve(loaded, train, rows, labels, config=config, eval_source=source, train_source="demo set")
    draw_curve(c, ROOT / png)
    doc = c.to_dict()
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(ROOT / png).with_suffix(".json").write_text(json.dumps(doc, indent=2))
    print(doc["points"], flush=True)
    return doc


def report_block(r: dict) -> str:
    ft = r["finetune"]
    best = max(r["prompting"], key=lambda p: p["weighted_f1"])
    lines = [
        f"Run of {r['started']}: {r['machine']['cores']} cores, {r['machine']['torch_threads']} torch threads, "
        f"load average {r['load_average_at_start']} at the start (the machine was shared: times are pessimistic).",
        "",
        f"Evaluated on `{r['data']}` ({r['n']} rows, never seen in training).",
        "",
        "| method | examples | weighted F1 | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for p in r["prompting"]:
        lines.append(
            f"| prompting (score, instruct, batch calibration) | k = {p['k']} | "
            f"{p['weighted_f1']:.3f} | {p['accuracy']:.3f} |"
        )
    lines.append(
        f"| **fine-tuned (LoRA r={r['config']['lora']['rank']}, last {r['config']['lora']['layers']} layers)** | "
        f"n = {ft['train_examples']} × {ft['epochs']} epochs | **{ft['weighted_f1']:.3f}** | {ft['accuracy']:.3f} |"
    )
    lines += [
        "",
        f"Fine-tuned − best prompting (k = {best['k']}): {ft['weighted_f1'] - best['weighted_f1']:+.3f} weighted F1.",
        "",
        f"Training: {ft['train_examples']} examples × {ft['epochs']} epochs ({ft['steps']} steps): frozen layers "
        f"{ft['encode_s']} s + training {ft['train_s']} s; evaluation {ft['eval_s']} s; whole fine-tune "
        f"{ft['total_wall_s']} s wall, {ft['total_cpu_s']} s CPU of this process. Peak RSS of the process after "
        f"training: {ft['peak_rss_mb']} MB (model loaded: {r['rss_after_load_mb']} MB).",
    ]
    g = ft.get("generation")
    if g:
        lines.append(
            f"The saved adapter merged into a fresh copy of the model, asked greedily with the same prompt: "
            f"{100 * g['exact_label_rate']:.0f}% of the answers are exactly one label word, "
            f"{100 * g['accuracy']:.0f}% the right one ({g['s']} s for {r['n']} answers; e.g. {g['examples'][:3]})."
        )
    if "repeat_identical" in r:
        lines.append(f"Same seed, same data, trained again: identical scores = {r['repeat_identical']}.")
    c = r.get("curve")
    if c:
        lines += [
            "",
            "### Learning curve",
            "",
            f"Prompting examples and training rows both drawn from the demo set; {c['n_eval']} rows scored "
            f"({c['wall_s']} s in all). The prompting points draw their k examples from the 186 training rows, "
            "not from the demo pool as in the table above, so k = 5 differs: which examples matters.",
            "",
            "| | examples | weighted F1 | accuracy | s |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in c["points"]:
            name = "prompting" if p["series"].startswith("prompting") else "fine-tuning"
            lines.append(
                f"| {name} | {p['examples']} | {p['weighted_f1']:.3f} | {p['accuracy']:.3f} | {p['seconds']:.1f} |"
            )
        for ref in c["references"]:
            lines.append(f"| {ref['label']} | | {ref['weighted_f1']:.2f} | | |")
        lines += ["", "![Weighted F1 against labelled examples](../docs/finetune_curve.png)"]
    return "\n".join(lines)


def write_report(results: dict, path: Path) -> None:
    block = f"{BEGIN}\n{report_block(results)}\n{END}"
    text = path.read_text() if path.exists() else "# Fine-tuning vs prompting\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
