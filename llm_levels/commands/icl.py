"""``python -m llm_levels icl``: zero-/one-/few-shot classification of a labelled file, scored.

    python -m llm_levels icl [--data FILE] [--format auto|csv|jsonl|phrasebank] [--pool FILE]
        [--shots 0,1,3] [--backend local|openai] [--method generate|score|finetune] [--engine llama.cpp|transformers]
        [--template NAME] [--limit N] [--seed S] [--calibrate batch|content-free|none] [--json OUT] [--csv OUT]
        [--train FILE] [--examples N] [--epochs E] [--save-adapter [NAME]] [--learning-curve PNG] [--sizes ...]

Without ``--data`` the demo set shipped with the project is used (150 rows + a separate example pool). A
results table goes to stdout, progress to stderr. ``--json OUT`` writes
``{"runs": [{"shots", "method", "template", "n", "accuracy", "macro_f1", "weighted_f1", "invalid_rate",
"per_class": {...}, "confusion": [[...]], ...}], ...}`` (``-`` = stdout, then the table goes to stderr).

``--method finetune`` trains low-rank adapters on ``--train`` (default: the demo set, never the evaluated
rows) and scores ``--data`` with the same table and JSON; ``--learning-curve PNG`` draws prompting at
k examples beside fine-tuning on n (see :mod:`llm_levels.finetune.cli`). Both run on the transformers engine.

``--method score`` reads the model's probability of each label, so it always runs on the transformers
engine; ``--method generate`` with ``--backend local`` writes its answers on the default local engine
(``LOCAL_ENGINE``, llama.cpp unless set otherwise), or the one ``--engine`` names. Each generate prompt is
one turn of the app's turn service (``llm_levels.turns.run_turn``), as in the Lab tab; the per-session
request limit of the web app (``REQUESTS_PER_MINUTE``) does not apply to whoever runs the command.

Exit status: 0 when every run finished, 1 when it failed, 2 for a usage error (bad file, unknown template,
score with a hosted backend or on llama.cpp), 130 when interrupted (the rows done so far are still reported
and saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import traceback
from typing import Any, TextIO

from ..core import BackendError, GenParams, Message
from ..engine import ENGINES, TRANSFORMERS
from ..finetune import cli as finetune_cli
from ..icl.data import FORMATS, Example, LabelledData, load_demo, load_labelled
from ..icl.prompts import DEFAULT_TEMPLATE, TEMPLATES
from ..icl.runner import (
    CALIBRATIONS,
    METHODS,
    TABLE_HEADERS,
    LabConfig,
    Progress,
    parse_shots,
    prepare_data,
    results_dict,
    results_table,
    run_lab,
    write_predictions_csv,
)

FINETUNE = "finetune"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="Labelled file: CSV/TSV (text,label columns), JSONL, or Financial PhraseBank "
        "(sentence@label per line, Latin-1). Default: the demo set shipped with the project.",
    )
    p.add_argument("--format", default="auto", choices=FORMATS, help="File format (default: auto).")
    p.add_argument(
        "--pool",
        default=None,
        metavar="FILE",
        help="Separate file of few-shot examples (default: split off --data, never evaluated).",
    )
    p.add_argument("--text-column", default=None, help="CSV/JSONL column with the text (default: guessed).")
    p.add_argument("--label-column", default=None, help="CSV/JSONL column with the label (default: guessed).")
    p.add_argument(
        "--shots", default=None, help="Comma-separated shot counts (default 0,1,3; 0,1,3,5 for --learning-curve)."
    )
    p.add_argument(
        "--backend",
        choices=("local", "openai"),
        default="local",
        help="local: the model in this process (LOCAL_MODEL); openai: an OpenAI-compatible server "
        "(OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL).",
    )
    p.add_argument("--model", default=None, help="Model id (openai) or local model spec (default from env).")
    p.add_argument(
        "--method",
        choices=METHODS + (FINETUNE,),
        default=None,
        help="score: compare each label's log-likelihood (local only, never invalid); generate: "
        "greedy free-text answer, parsed; finetune: train low-rank adapters on --train, then score "
        "(local only). Default: score for local, generate for openai.",
    )
    p.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        choices=list(TEMPLATES),
        help=f"Prompt template (default {DEFAULT_TEMPLATE}; 'article' = the seed article's prompts).",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="Evaluate N rows (stratified sample).")
    p.add_argument("--seed", type=int, default=0, help="Seed for the example draw and the row sample.")
    p.add_argument("--max-new-tokens", type=int, default=10, metavar="N", help="generate: answer length cap.")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="score: rows per forward pass.")
    p.add_argument(
        "--calibrate",
        choices=CALIBRATIONS,
        default="batch",
        help="score: remove the model's bias to one label: batch (subtract each label's mean score over "
        "the rows; default), content-free (subtract the scores for 'N/A'), none.",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="local generate: the engine that writes the answers (default: LOCAL_ENGINE, else llama.cpp). "
        "score always runs on transformers (it reads the model's probabilities).",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="Write the results as JSON ('-' = stdout).")
    p.add_argument("--csv", default=None, metavar="OUT", help="Write the per-row predictions as CSV.")
    p.add_argument("--quiet", action="store_true", help="No progress on stderr.")
    p.add_argument("--verbose", action="store_true", help="Tracebacks on unexpected failures.")
    finetune_cli.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    method = args.method or ("score" if args.backend == "local" else "generate")
    if method == FINETUNE or args.learning_curve:
        if args.backend != "local" or args.engine not in (None, TRANSFORMERS):
            _error(err, "fine-tuning trains the local model on the transformers engine: use --backend local.")
            return EXIT_USAGE
        return finetune_cli.run(args)
    try:
        config, data, rows, pool_rows = _prepare(args, method, err)
    except BackendError as e:
        _error(err, e.message)
        return EXIT_USAGE
    cancel = threading.Event()
    last: Progress | None = None
    runtime = None
    try:
        runtime, opened = _open(args, method, cancel)
        name = opened["name"]
        if not args.quiet:
            err.write(
                f"{len(rows)} rows × k in {list(config.shots)} · {method} · template {config.template} · {name}\n"
            )
        for last in run_lab(
            rows,
            pool_rows,
            data.labels,
            config,
            ask=opened.get("ask"),
            scorer=opened.get("scorer"),
            single_turn=opened.get("single_turn"),
            cancel=cancel,
        ):
            if not args.quiet:
                _bar(err, last)
    except KeyboardInterrupt:
        cancel.set()
        if not args.quiet:
            err.write("\n")
        _error(err, "interrupted: reporting the rows done so far")
        if last is not None:
            _report(args, last, data.source, config, name_of(args), err)
        return EXIT_INTERRUPTED
    except BackendError as e:
        if not args.quiet:
            err.write("\n")
        _error(err, e.message)
        if last is not None and last.done:
            _report(args, last, data.source, config, name_of(args), err)
        _close(runtime)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (unless --verbose)
        if args.verbose:
            traceback.print_exc(file=err)
        _error(err, f"unexpected failure ({type(e).__name__}): {e}. Run again with --verbose for details.")
        return EXIT_FAILED
    if not args.quiet:
        err.write("\n")
    assert last is not None
    _report(args, last, data.source, config, name, err)
    _close(runtime)
    return 0 if last.finished else EXIT_FAILED


def _prepare(
    args: argparse.Namespace, method: str, err: TextIO
) -> tuple[LabConfig, LabelledData, list[Example], list[Example]]:
    """Check the method against the backend, build the :class:`LabConfig`, read the data (printing any
    skipped lines as warnings) and split it: (config, data, rows to evaluate, pool rows). Raises BackendError."""
    if method == "score" and args.backend != "local":
        raise BackendError(
            "--method score needs --backend local: it reads the model's probabilities of each "
            "label, which hosted APIs do not return. Use --method generate.",
            kind="bad_request",
        )
    if method == "score" and args.engine not in (None, TRANSFORMERS):
        raise BackendError(
            f"--method score runs on the transformers engine (it reads the model's probability "
            f"of each label), not {args.engine}: leave out --engine or use --method generate.",
            kind="bad_request",
        )
    config = LabConfig(
        shots=parse_shots(args.shots or "0,1,3"),
        method=method,
        template=args.template,
        limit=args.limit,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        calibrate=args.calibrate,
    )
    if args.data:
        data = load_labelled(args.data, args.format, text_column=args.text_column, label_column=args.label_column)
        pool = load_labelled(args.pool, "auto") if args.pool else None
    else:
        data, pool = load_demo()
    for d in (data, pool):
        if d is not None and d.problems:
            _error(err, d.problem_summary(), prefix="warning")
    rows, pool_rows = prepare_data(data, pool, config)
    return config, data, rows, pool_rows


def name_of(args: argparse.Namespace) -> str:
    return f"{args.backend}:{args.model or 'default'}"


def _open(args: argparse.Namespace, method: str, cancel: threading.Event) -> tuple[Any, dict[str, Any]]:
    """The app's runtime (no per-session request limit: the operator runs this) and what the method needs:
    ``scorer`` (score), or ``ask`` and ``single_turn`` (generate); ``name`` says what answers."""
    from ..config import Settings
    from ..runtime import AppRuntime

    settings = dataclasses.replace(Settings.from_env(), preload_model=False, requests_per_minute=100_000)
    runtime = AppRuntime(settings)
    if args.backend == "openai":
        from ..backends import make_hosted

        b = make_hosted(settings, model=args.model)
        return runtime, {"ask": TurnAsk(runtime, "openai", cancel, backend=b), "single_turn": False, "name": b.name}
    # score reads probabilities through transformers; generate runs on the default engine (or --engine).
    engine = TRANSFORMERS if method == "score" else (args.engine or settings.local_engine)
    if engine == TRANSFORMERS and not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    loaded = runtime.models.get(args.model, engine=engine)  # loaded once, before the first row
    name = f"local · {loaded.display_name} · {engine}"
    if method == "score":
        from ..icl.scoring import LabelScorer

        return runtime, {"scorer": LabelScorer(loaded, batch_size=args.batch_size), "name": name}
    ask = TurnAsk(runtime, runtime.local_option(engine), cancel, spec=args.model, engine=engine)
    return runtime, {"ask": ask, "single_turn": bool(getattr(loaded, "is_seq2seq", False)), "name": name}


class TurnAsk:
    """``ask(messages, params) -> answer`` for the generate method: each prompt is one turn of the turn
    service (``run_turn``) on ``option_id`` (``request``: the other ``TurnRequest`` fields). A failed turn
    raises its BackendError; Ctrl-C closes the turn, which stops the backend."""

    def __init__(self, runtime: Any, option_id: str, cancel: threading.Event, **request: Any) -> None:
        self.runtime, self.option_id, self.cancel, self.request = runtime, option_id, cancel, request

    def __call__(self, messages: list[Message], params: GenParams) -> str:
        from ..turns import TurnRequest, answer_text, run_turn

        return answer_text(
            run_turn(self.runtime, TurnRequest(self.option_id, messages, params, **self.request), cancel=self.cancel)
        )


def _close(runtime: Any) -> None:
    """Stop the in-process engines before the interpreter exits (llama.cpp's server threads, its memory);
    every turn has ended by now."""
    for loaded in runtime.models.loaded() if runtime is not None else ():
        close = getattr(loaded, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - the results are out; a failing shutdown must not change the exit
                pass


def _bar(err: TextIO, p: Progress) -> None:
    width = 30
    filled = int(width * p.fraction)
    err.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {p.describe()}   ")
    err.flush()


def _report(args: argparse.Namespace, p: Progress, source: str, config: LabConfig, name: str, err: TextIO) -> None:
    doc = results_dict(p.runs, source=source, backend=args.backend, model=name, config=config)
    table_out = err if args.json == "-" else sys.stdout
    table_out.write(format_table(p) + "\n")
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
    if args.csv:
        write_predictions_csv(p.runs, args.csv)
    table_out.flush()


def format_table(p: Progress) -> str:
    """The results as a plain-text table, one line per k, with the per-class recall."""
    rows = results_table(p.runs)
    labels = p.runs[0].labels if p.runs else ()
    headers = TABLE_HEADERS + [f"R({lab})" for lab in labels]
    for r, run in zip(rows, p.runs):
        pc = run.metrics.per_class
        r.extend(round(pc[lab].recall, 2) if lab in pc else "" for lab in labels)
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    if p.stopped:
        lines.append("(stopped early: the last run covers only the rows done)")
    return "\n".join(lines)


def _error(err: TextIO, message: str, prefix: str = "error") -> None:
    err.write(f"{prefix}: {' '.join(str(message).split())}\n")
    err.flush()
