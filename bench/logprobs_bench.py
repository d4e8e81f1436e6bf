"""The bench's per-token-information section: what asking for each token's probability and its top 5
alternatives (``GenParams.top_logprobs=5``: the Local tab's token table, ``logprobs`` on ``/v1``) costs the
decode speed, on each local engine, side by side in one run.

For each engine, the app's backend answers the same greedy prompt with per-token information off and on,
interleaved run by run (so a busy spell of the shared machine slows both alike), after one warm-up of each;
median decode tok/s of ``--runs`` runs. llama.cpp: ``LlamaCppBackend`` (its ``n_probs``), the prompt not
reused between runs as in the decode section; transformers: ``LocalBackend`` (a logits processor capturing
the model's distribution each step), with at most :data:`HF_TOKENS` new tokens to keep it cheap.

Two figures per engine: decode tok/s (wall clock, as the decode section measures it) and the CPU time this
process spent per generated token (``time.process_time``: llama.cpp's threads, torch's, and the app's
Python that reads the stream and builds each token's entry). On a quiet machine they agree; on a shared one
the wall clock of identical runs swings by 2× with the load while CPU time per token stays within a few
percent, so the goal (on ≥ 0.85× off, per engine) is judged on the CPU figure and the wall figure is shown
beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from served_app import figures

#: Alternatives per token, as the Local tab asks for them.
TOP = 5
#: New tokens per transformers run (it decodes several times slower than llama.cpp).
HF_TOKENS = 64
GOAL = 0.85
SETTLE_S = 0.2


def generate(backend: Any, prompt: str, max_new_tokens: int, top: int | None) -> dict[str, Any]:
    """One greedy answer through ``backend.stream``, timed as the UI reads it; counts the tokens that came with
    their probabilities (all of them when ``top`` is set)."""
    from llm_levels.core import GenParams, Message

    params = GenParams(max_new_tokens=max_new_tokens, temperature=0, top_logprobs=top)
    c0 = time.process_time()
    t0 = time.perf_counter()
    first = None
    parts: list[str] = []
    usage = None
    with_info = 0
    for c in backend.stream([Message("user", prompt)], params):
        if c.text and first is None:
            first = time.perf_counter()
        parts.append(c.text)
        with_info += len(c.logprobs)
        if c.usage is not None:
            usage = c.usage
    end = time.perf_counter()
    cpu_s = time.process_time() - c0
    res = figures("".join(parts), usage.output_tokens if usage else 0, t0, first, end)
    res["tokens_with_info"] = with_info
    res["cpu_ms_per_token"] = cpu_s * 1000 / res["tokens"] if res["tokens"] else None
    return res


def fresh_prompt_backend(model: Any) -> Any:
    """The app's llama.cpp backend, its requests asking llama.cpp not to reuse the previous prompt."""
    from llm_levels.backends.llama_cpp import LlamaCppBackend

    class FreshPrompt(LlamaCppBackend):
        def request(self, messages, params):  # type: ignore[no-untyped-def]
            req = super().request(messages, params)
            req["cache_prompt"] = False
            return req

    return FreshPrompt(model)


#: Pairs (off, on) measured at least (``--quick``, a smoke run: its one run): a decode this short is at the mercy of whatever else the machine does,
#: and a median over more pairs steadies the ratio (each pair costs a few seconds).
MIN_RUNS = 5


def logprobs_section(args: Any, engines: dict[str, Any], results: dict[str, Any]) -> None:
    """Per-token information off vs on for each engine in ``engines`` (``llama_cpp_model``, ``transformers``)."""
    from llm_levels.backends.local_hf import LocalBackend

    backends: list[tuple[str, Any, int]] = []
    if engines.get("llama_cpp_model") is not None:
        backends.append(("llama.cpp", fresh_prompt_backend(engines["llama_cpp_model"]), args.tokens))
    if engines.get("transformers") is not None:
        backends.append(("transformers", LocalBackend(engines["transformers"]), min(args.tokens, HF_TOKENS)))
    rows = []
    for name, backend, n in backends:
        for top in (None, TOP):  # warm-up
            generate(backend, args.prompt, min(8, n), top)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for r in range(args.runs if getattr(args, "quick", False) else max(args.runs, MIN_RUNS)):
            for key, top in (("off", None), ("on", TOP)):
                time.sleep(SETTLE_S)
                res = generate(backend, args.prompt, n, top)
                runs[key].append(res)
                print(
                    f"  run {r + 1} {name}, per-token info {key}: {res['tokens']} tokens, "
                    f"{_fmt(res['tokens_per_s'], 1)} tok/s, {_fmt(res['cpu_ms_per_token'], 2)} CPU ms/token",
                    flush=True,
                )
        off, on = _median(runs["off"], "tokens_per_s"), _median(runs["on"], "tokens_per_s")
        off_cpu, on_cpu = _median(runs["off"], "cpu_ms_per_token"), _median(runs["on"], "cpu_ms_per_token")
        rows.append(
            {
                "engine": name,
                "tokens": n,
                "top": TOP,
                "off_tokens_per_s": off,
                "on_tokens_per_s": on,
                "wall_ratio": on / off if on and off else None,
                "off_cpu_ms_per_token": off_cpu,
                "on_cpu_ms_per_token": on_cpu,
                # As a speed: work per token without over work per token with (1.0: free).
                "ratio": off_cpu / on_cpu if on_cpu and off_cpu else None,
                "same_answer": runs["on"][-1]["text"] == runs["off"][-1]["text"],
                "all_tokens_had_info": all(x["tokens_with_info"] > 0 for x in runs["on"]),
                "runs": {k: [{f: v for f, v in x.items() if f != "text"} for x in rs] for k, rs in runs.items()},
            }
        )
        print(
            f"  {name}: per-token info (top {TOP}) {_fmt(rows[-1]['ratio'], 2)}x the decode without by CPU time per "
            f"token, {_fmt(rows[-1]['wall_ratio'], 2)}x by wall-clock tok/s",
            flush=True,
        )
    results["logprobs"] = rows


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(x: Any, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def goals(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) per engine measured."""
    out = []
    for row in results.get("logprobs") or []:
        ratio = row.get("ratio")
        out.append(
            (
                f"{row['engine']}: decode with per-token info (top {row['top']}) ≥ {GOAL}× without (CPU time per token)",
                f"{_fmt(ratio, 2)}× ({_fmt(row['on_cpu_ms_per_token'], 2)} vs {_fmt(row['off_cpu_ms_per_token'], 2)} "
                f"CPU ms/token); wall clock {_fmt(row.get('wall_ratio'), 2)}× ({_fmt(row['on_tokens_per_s'], 1)} vs "
                f"{_fmt(row['off_tokens_per_s'], 1)} tok/s); {row['tokens']} tokens, same answer: "
                f"{'yes' if row['same_answer'] else 'no'}",
                None if ratio is None else ratio >= GOAL,
            )
        )
    return out


def table_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows for the bench's figure table."""
    return [
        (
            f"{row['engine']}: decode without / with per-token info (top {row['top']}): tok/s; CPU ms per token",
            f"{_fmt(row['off_tokens_per_s'], 1)} / {_fmt(row['on_tokens_per_s'], 1)} ({_fmt(row.get('wall_ratio'), 2)}×); "
            f"{_fmt(row['off_cpu_ms_per_token'], 2)} / {_fmt(row['on_cpu_ms_per_token'], 2)} ({_fmt(row['ratio'], 2)}×)",
        )
        for row in results.get("logprobs") or []
    ]


def only(args: Any, settings: Any, results: dict[str, Any]) -> None:
    """The section alone (``bench --logprobs-only``): loads both engines itself."""
    from dataclasses import replace

    from llm_levels.models import load_llama_cpp_model, load_model

    llama = load_llama_cpp_model(settings.local_model, replace(settings, local_concurrency=args.users))
    try:
        plain = load_model(settings.local_model, settings)
        results["settings"].update(threads=llama.threads, parallel=args.users, context=settings.local_context)
        logprobs_section(args, {"llama_cpp_model": llama, "transformers": plain}, results)
    finally:
        llama.close()
