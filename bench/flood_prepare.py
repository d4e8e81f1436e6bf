"""The preparation work of a conversation of N tiny messages on the llama.cpp engine, in process: how long
fitting it to the context window takes, how many renders it needs, and how many messages they render
together (issue 14, item 1). No server, no generation: only ``LlamaCppBackend.prepare``.

    .venv/bin/python bench/flood_prepare.py 500 1000 5000 20000
    .venv/bin/python bench/flood_prepare.py 500 1000 5000 20000 --baseline bfc4f27   # fit_prompt of a commit

``--baseline REV`` measures the same with ``fit_prompt`` as it was at git revision REV (read with
``git show``), for a before/after comparison on the same machine. Prints one JSON line per N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline_fit(rev: str) -> types.FunctionType:
    """``fit_prompt`` from ``llm_levels/backends/prompt.py`` at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:llm_levels/backends/prompt.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("llm_levels.backends.prompt_baseline")
    module.__package__ = "llm_levels.backends"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:prompt.py", "exec"), module.__dict__)
    return module.fit_prompt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="+", help="messages in the conversation")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="the answer's budget (default 512)")
    ap.add_argument("--baseline", default=None, help="use fit_prompt as it was at this git revision")
    args = ap.parse_args()

    from llm_levels.backends import llama_cpp
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.config import Settings
    from llm_levels.core import Message
    from llm_levels.models import load_llama_cpp_model

    if args.baseline:
        llama_cpp.fit_prompt = baseline_fit(args.baseline)
    settings = replace(Settings.from_env(), local_concurrency=1, local_threads=0)
    model = load_llama_cpp_model("embedded", settings)
    try:
        backend = LlamaCppBackend(model)
        renders: list[int] = []
        apply_template = model.apply_template

        def counted(messages):  # every render of the chat template, with its size
            renders.append(len(messages))
            return apply_template(messages)

        model.apply_template = counted
        for n in args.n:
            renders.clear()
            t0 = time.perf_counter()
            prompt = backend.prepare([Message("user", "x")] * n, args.max_new_tokens)
            seconds = time.perf_counter() - t0
            line = {
                "messages": n,
                "fit_from": args.baseline or "working tree",
                "window": model.context_window,
                "prepare_s": round(seconds, 3),
                "renders": len(renders),
                "messages_rendered": sum(renders),
                "largest_render": max(renders),
                "kept": len(prompt.messages),
                "prompt_tokens": len(prompt.ids),
            }
            print(json.dumps(line), flush=True)
    finally:
        model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
