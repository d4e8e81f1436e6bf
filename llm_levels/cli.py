"""The command line: ``python -m llm_levels {chat,icl,bench} ...``.

Each sub-command lives in ``llm_levels/commands/<name>.py`` and provides ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "chat": "Send one prompt to a backend and stream the answer (or print JSON with --json).",
    "icl": "In-context learning lab: zero-/one-/few-shot classification of a labelled file, scored.",
    "bench": "Benchmark the local model: naive transformers, llama.cpp and the app; start-up, streaming, "
    "concurrency, memory.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_levels", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(f"llm_levels.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"llm_levels.commands.{name}":
                raise
            continue
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        print(f"error: the {args.command!r} command is not available yet", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)
