"""``python -m llm_levels bench``: how fast is the local model — naive transformers, llama.cpp, the app.

This module only parses the command line; the harness lives in the repository's ``bench/`` folder
(``bench/engine_bench.py``: the in-process sections, the report and the chart; ``bench/logprobs_bench.py``:
per-token information off vs on; ``bench/served_app.py``: the sections that start ``app.py``;
``bench/gradio_floor.py``: a do-nothing Gradio app for comparison), imported when the command runs, so
``--help`` stays fast. See ``bench/RESULTS.md`` for what each figure
means and the goals it is held to.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

DEFAULT_PROMPT = "Write a long story about a robot who learns to paint."
#: The repository's ``bench/`` folder (the harness).
BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT", default=None, help="Also write the results as JSON to OUT.")
    p.add_argument("--tokens", type=int, default=128, help="New tokens per run (greedy; default 128).")
    p.add_argument("--runs", type=int, default=3, help="Measured runs per configuration (median; default 3).")
    p.add_argument(
        "--users",
        type=int,
        default=4,
        help="Concurrent users for the concurrency figures, and llama.cpp's slots (default 4).",
    )
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="The user message.")
    p.add_argument("--model", default=None, help="Local model spec (default: LOCAL_MODEL, i.e. the embedded GGUF).")
    p.add_argument("--no-app", action="store_true", help="Skip the sections that start app.py in a subprocess.")
    p.add_argument(
        "--chart",
        metavar="PNG",
        default=None,
        help="Also draw tok/s per configuration as a PNG (needs Pillow), e.g. docs/perf.png.",
    )
    p.add_argument(
        "--report",
        metavar="MD",
        default=None,
        help="Also write the goals and results tables into MD (between its bench markers; the "
        "text around them is kept), e.g. bench/RESULTS.md.",
    )
    p.add_argument(
        "--from-json",
        metavar="IN",
        default=None,
        help="Measure nothing: print the tables (and --chart, --report) of an earlier --json file.",
    )
    p.add_argument(
        "--quick", action="store_true", help="A smoke run for tests: 8 tokens, 1 run, 2 users, no app sections."
    )
    p.add_argument(
        "--logprobs-only",
        action="store_true",
        help="Measure only what per-token information (each token's probability and top 5 alternatives) costs "
        "the decode, on both local engines, side by side (bench/logprobs_bench.py).",
    )


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.tokens, args.runs, args.users, args.no_app = min(args.tokens, 8), 1, min(args.users, 2), True
    if not args.from_json and (args.tokens < 2 or args.runs < 1 or args.users < 1):
        print("error: --tokens >= 2, --runs >= 1 and --users >= 1 are needed", file=sys.stderr)
        return 2
    if not (BENCH_DIR / "engine_bench.py").is_file():
        print(
            f"error: the bench harness is not here ({BENCH_DIR}/engine_bench.py): run the command from a "
            "checkout of the repository",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    harness = importlib.import_module("engine_bench")
    return int(harness.main(args) or 0)
