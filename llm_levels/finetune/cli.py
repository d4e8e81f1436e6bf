"""The command line of fine-tuning: ``python -m llm_levels icl --method finetune`` and ``--learning-curve``.

    python -m llm_levels icl --method finetune [--train FILE] [--data FILE] [--format ...] [--examples N]
        [--epochs E] [--seed S] [--save-adapter [NAME]] [--json OUT] [--csv OUT]
    python -m llm_levels icl --learning-curve OUT.png [--train FILE] [--data FILE] [--shots 0,1,3,5]
        [--sizes 8,16,32,64,128] [--json OUT]

Without ``--data`` the demo set's evaluation split is scored and its training split trains; with
``--data`` and no ``--train``, the whole demo set trains. Rows whose sentence is evaluated never train.
The fine-tune prints the same table and writes the same JSON (``runs`` with ``weighted_f1``...) as the
prompting methods; the curve writes the chart and its points. Both run on the transformers engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..core import BackendError
from ..icl.data import Example, load_labelled, sample_eval
from ..icl.runner import Progress, parse_shots, results_dict, write_predictions_csv
from .curve import DEFAULT_SIZES, Curve, CurveProgress
from .data import demo_split, demo_training
from .lora_model import LoraSettings
from .train import FinetuneConfig, TrainProgress

CURVE_SHOTS = "0,1,3,5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fine-tuning options of ``icl`` (the rest are the prompting methods')."""
    g = p.add_argument_group("fine-tuning (--method finetune, --learning-curve)")
    g.add_argument(
        "--train",
        default=None,
        metavar="FILE",
        help="Labelled training file (same formats as --data). Default: the demo set (its training split "
        "when --data is not given either). Rows also in --data are never trained on.",
    )
    g.add_argument("--examples", type=int, default=128, metavar="N", help="Training rows, balanced (default 128).")
    g.add_argument("--epochs", type=int, default=5, metavar="E", help="Passes over the training rows (default 5).")
    g.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR", help="AdamW step size (default 1e-3).")
    g.add_argument("--lora-rank", type=int, default=8, metavar="R", help="Adapter rank (default 8).")
    g.add_argument(
        "--lora-layers", type=int, default=6, metavar="L", help="Adapters in the last L layers (default 6; 0 = all)."
    )
    g.add_argument(
        "--save-adapter",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="Save the adapter with its metrics (default name: '<model> + <task> adapter').",
    )
    g.add_argument("--adapters-dir", default=None, metavar="DIR", help="Where adapters are saved (default: cache).")
    g.add_argument(
        "--learning-curve",
        default=None,
        metavar="PNG",
        help=f"Draw weighted F1 against labelled examples: prompting at --shots (default {CURVE_SHOTS}) beside "
        "fine-tuning at --sizes; writes the PNG (and --json, default PNG with .json).",
    )
    g.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="Training sizes of the learning curve (capped at the training file's size).",
    )


@dataclass
class Sets:
    """The rows a fine-tune trains on and is evaluated on, with their names."""

    train: list[Example]
    evaluated: list[Example]
    labels: tuple[str, ...]
    train_source: str
    eval_source: str


def load_sets(args: argparse.Namespace, err: TextIO) -> Sets:
    """Read ``--data`` / ``--train`` (or the demo set's splits), warning about skipped lines."""
    if args.data:
        data = load_labelled(args.data, args.format, text_column=args.text_column, label_column=args.label_column)
        train = load_labelled(args.train, "auto") if args.train else demo_training()
    elif args.train:
        train = load_labelled(args.train, "auto")
        data = demo_split(args.seed)[1]
    else:
        train, data = demo_split(args.seed)
    for d in (data, train):
        if d.problems:
            err.write(f"warning: {' '.join(d.problem_summary().split())}\n")
    rows = sample_eval(data.examples, args.limit, args.seed)
    return Sets(list(train.examples), rows, data.labels, train.source, data.source)


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of the command's options."""
    return FinetuneConfig(
        examples=args.examples,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
        template=args.template,
        lora=LoraSettings(rank=args.lora_rank, alpha=2 * args.lora_rank, layers=args.lora_layers),
    )


def run(args: argparse.Namespace) -> int:
    """Run the fine-tune or the learning curve; the exit status (0, 1 failed, 2 usage, 130 interrupted)."""
    err = sys.stderr
    try:
        config = finetune_config(args)
        curve_args = (parse_shots(args.shots or CURVE_SHOTS), parse_sizes(args.sizes))
        sets = load_sets(args, err)
    except BackendError as e:
        err.write(f"error: {' '.join(e.message.split())}\n")
        return 2
    cancel = threading.Event()
    try:
        loaded, settings = _load(args)
        if args.learning_curve:
            return _curve(args, loaded, sets, config, curve_args, cancel, err)
        return _finetune(args, loaded, settings, sets, config, cancel, err)
    except KeyboardInterrupt:
        cancel.set()
        err.write("\nerror: interrupted: nothing was written\n")
        return 130
    except BackendError as e:
        err.write(f"\nerror: {' '.join(e.message.split())}\n")
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (unless --verbose)
        if args.verbose:
            traceback.print_exc(file=err)
        err.write(f"\nerror: unexpected failure ({type(e).__name__}): {e}. Run again with --verbose for details.\n")
        return 1


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model on the transformers engine (loaded for this command), and the settings."""
    from ..config import Settings
    from ..engine.transformers_loader import load_model

    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    settings = Settings.from_env()
    return load_model(args.model or settings.local_model, settings), settings


def _bar(err: TextIO, fraction: float, text: str, quiet: bool) -> None:
    if quiet:
        return
    filled = int(30 * min(max(fraction, 0.0), 1.0))
    err.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}   ")
    err.flush()


def _finetune(
    args: argparse.Namespace,
    loaded: Any,
    settings: Any,
    sets: Sets,
    config: FinetuneConfig,
    cancel: threading.Event,
    err: TextIO,
) -> int:
    from .adapters import adapters_root, default_name
    from .run import run_finetune, training_facts

    if not args.quiet:
        err.write(
            f"fine-tune on {sets.train_source} ({min(len(sets.train), config.examples or len(sets.train))} rows), "
            f"evaluate on {sets.eval_source} ({len(sets.evaluated)} rows) · {loaded.display_name}\n"
        )
    save_as = (
        None if args.save_adapter is None else (args.save_adapter or default_name(loaded.display_name, sets.labels))
    )
    root = Path(args.adapters_dir) if args.adapters_dir else adapters_root(settings)

    def show(p: TrainProgress) -> None:
        _bar(err, p.fraction, p.describe(), args.quiet)

    out = run_finetune(
        loaded,
        sets.train,
        sets.evaluated,
        sets.labels,
        config,
        on_progress=show,
        cancel=cancel,
        save_as=save_as,
        adapters_dir=root,
        train_source=sets.train_source,
    )
    if not args.quiet:
        err.write("\n")
    if out.run is None:
        err.write("error: stopped: nothing was saved\n")
        return 130
    from ..commands.icl import format_table

    doc = results_dict(
        [out.run], source=sets.eval_source, backend="local", model=f"local · {loaded.display_name} · transformers"
    )
    doc["config"] = {"method": "finetune", "template": config.template, "limit": args.limit, "seed": config.seed}
    doc["training"] = training_facts(config, out.train, sets.train_source)
    doc["training"]["dropped_overlap"] = out.dropped_overlap
    doc["adapter"] = out.adapter.to_dict() if out.adapter else None
    table = format_table(Progress(len(out.run.rows), out.run.total, out.run.elapsed_s, [out.run], finished=True))
    t = doc["training"]
    note = (
        f"fine-tuned on {t['examples']} rows × {t['epochs']} epochs in {t['train_s']:.1f} s "
        f"(loss {t['loss_first']} → {t['loss_last']})"
    )
    if out.adapter:
        note += f"; adapter saved: {out.adapter.name} ({out.adapter.folder})"
    _write(args, doc, table + "\n" + note, err)
    if args.csv:
        write_predictions_csv([out.run], args.csv)
    return 0


def _curve(
    args: argparse.Namespace,
    loaded: Any,
    sets: Sets,
    config: FinetuneConfig,
    curve_args: tuple[tuple[int, ...], list[int]],
    cancel: threading.Event,
    err: TextIO,
) -> int:
    from .chart import draw_curve
    from .curve import learning_curve

    shots, sizes = curve_args

    def show(p: CurveProgress) -> None:
        eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
        loss = f" · loss {p.loss:.3f}" if p.loss is not None else ""
        _bar(err, p.fraction, f"{p.stage}{eta}{loss}", args.quiet)

    curve = learning_curve(
        loaded,
        sets.train,
        sets.evaluated,
        sets.labels,
        shots=shots,
        sizes=sizes,
        config=config,
        calibrate=args.calibrate,
        on_progress=show,
        cancel=cancel,
        eval_source=sets.eval_source,
        train_source=sets.train_source,
    )
    if not args.quiet:
        err.write("\n")
    png = draw_curve(curve, args.learning_curve)
    doc = {"learning_curve": curve.to_dict(), "model": loaded.display_name, "chart": str(png)}
    if not args.json:
        args.json = str(Path(args.learning_curve).with_suffix(".json"))
    _write(args, doc, curve_table(curve) + f"\nchart: {png}", err)
    return 130 if curve.stopped else 0


def parse_sizes(text: str) -> list[int]:
    """``"8,16,32"`` -> ``[8, 16, 32]``; raises BackendError for anything but positive whole numbers."""
    try:
        sizes = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        sizes = []
    if not sizes or any(n < 1 for n in sizes):
        raise BackendError(
            "--sizes takes positive whole numbers separated by commas, e.g. 8,16,32.", kind="bad_request"
        )
    return sizes


def curve_table(curve: Curve) -> str:
    """The curve's points as a plain-text table."""
    lines = [f"{'series':<12} {'examples':>8} {'weighted F1':>11} {'accuracy':>8} {'s':>7}"]
    for p in curve.points:
        name = "prompting" if p.series.startswith("prompting") else "fine-tuning"
        lines.append(f"{name:<12} {p.examples:>8} {p.weighted_f1:>11.3f} {p.accuracy:>8.3f} {p.seconds:>7.1f}")
    for r in curve.references:
        lines.append(f"{'reference':<12} {'':>8} {r.weighted_f1:>11.2f}   {r.label}")
    if curve.stopped:
        lines.append("(stopped early: only the points finished are shown)")
    return "\n".join(lines)


def _write(args: argparse.Namespace, doc: dict[str, Any], table: str, err: TextIO) -> None:
    out = err if args.json == "-" else sys.stdout
    out.write(table + "\n")
    out.flush()
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
