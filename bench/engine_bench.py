"""The bench harness behind ``python -m llm_levels bench`` (= ``make bench``): naive transformers, llama.cpp
on its own, the app's llama.cpp backend, and the running app, on one prompt, in one run.

Sections (each prints its lines as it finishes; the tables come at the end):

1. **decode**, in this process, interleaved run by run (so a busy spell of the shared machine slows every
   configuration alike), greedy, ``--tokens`` new tokens, median of ``--runs`` after a warm-up:
   - *naive transformers*: ``model.generate`` on the float32 model in a thread, the text through a
     ``TextIteratorStreamer`` (the way a tutorial does it);
   - *llama.cpp standalone*: ``xllamacpp.Server`` on the same GGUF with the same engine settings as the
     app (context, slots, threads, and whatever the app's ``engine_params`` changes from llama.cpp's
     defaults, e.g. the attention cache's type), the same OpenAI-shaped request, the stream read in its
     callback — what llama.cpp gives with no app around it;
   - *the app's backend*: ``LlamaCppBackend.stream`` on a model loaded by
     ``llm_levels.models.load_llama_cpp_model``, behind the app's admission line, consumed as the UI
     consumes it (chunk by chunk, text timed when it reaches the consumer);
   - *llama.cpp standalone, 1 thread* (when the app uses more): on a shared machine, a thread that loses
     its core stalls the others at every step, so fewer threads can be faster.
   llama.cpp keeps a request's prompt for the next one (a conversation's earlier turns are not read
   again); here the same prompt is sent every run, so these runs ask both llama.cpp configurations not to
   reuse it (``cache_prompt: false``; the app's requests get only that field added) and every TTFT
   includes reading the whole prompt, as transformers does. ``cached TTFT`` then times both the way they
   run by default, the same prompt again (8 tokens, median of 5).
   Decode tok/s = (tokens - 1) / (time after the first text); TTFT = time to the first text.
   Then **per-token information** (``logprobs_bench.py``): each engine's app backend with each token's
   probability and top 5 alternatives off vs on, interleaved run by run (``--logprobs-only`` runs just that).
2. **standalone process**: llama.cpp alone in a fresh Python process (``xllamacpp`` and the GGUF, nothing
   else): import and load time, RSS after loading and peak after one answer.
3. **concurrency**: ``--users`` requests at once through the app's backend (its default requests) vs one
   alone: aggregate tokens/s (all tokens over the wall time), each user's speed, slowest/fastest.
4. **app** (skipped with ``--no-app``/``--quick``; see ``served_app.py``): ``app.py`` started 3 times
   (page served, llama.cpp ready per the status bar's ``model_status``), streaming through the page
   (the Local tab read as an event stream) against the app's own figures, the app's memory with llama.cpp
   alone and with transformers loaded too, and a do-nothing Gradio app for comparison.

Timings are wall-clock on whatever else the machine is doing: compare ratios within one run.

Run as a script with ``--probe-standalone JSON`` it is the fresh process of section 2.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import logprobs_bench  # noqa: E402
from served_app import figures, mark_load, run_together  # noqa: E402

#: Runs of the cached-prompt TTFT comparison (the first of each is discarded: it fills the cache).
CACHED_RUNS = 5
#: Pause before each measured run, so one configuration's threads have gone quiet before the next starts.
SETTLE_S = 0.2
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

NAIVE = "naive transformers: float32 generate + TextIteratorStreamer"
STANDALONE = "llama.cpp standalone (xllamacpp.Server)"
APP = "app: LlamaCppBackend.stream (as the UI reads it)"
STANDALONE_1T = "llama.cpp standalone, 1 thread"


# ------------------------------------------------------------------------------------------- entry
def main(args: Any) -> int:
    t_start = time.perf_counter()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        results["goals"] = goals(results)  # judged by this code (a report redrawn after a change of goals)
        return _output(results, args, write_json=False)
    from llm_levels.config import Settings
    from llm_levels.core import BackendError

    settings = Settings.from_env()
    if args.model:
        settings = replace(settings, local_model=args.model)
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m llm_levels " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "settings": {
            "tokens": args.tokens,
            "runs": args.runs,
            "users": args.users,
            "prompt": args.prompt,
            "model": settings.local_model,
            "quick": bool(args.quick),
        },
    }
    print(f"# llm-levels bench · {results['machine']['summary']}", flush=True)
    try:
        if getattr(args, "logprobs_only", False):
            mark_load(results, "logprobs")
            logprobs_bench.only(args, settings, results)
            results["machine"]["load_average_at_end"] = os.getloadavg()
            results["wall_s"] = round(time.perf_counter() - t_start, 1)
            results["goals"] = goals(results)
            return _output(results, args, write_json=True)
        mark_load(results, "decode")
        engines = decode_section(args, settings, results)
        mark_load(results, "logprobs")
        try:
            logprobs_bench.logprobs_section(
                args, {"llama_cpp_model": engines["app_model"], "transformers": engines["transformers"]}, results
            )
        except Exception as e:  # noqa: BLE001 - keep the other figures, say what failed
            results.setdefault("errors", {})["logprobs"] = f"{type(e).__name__}: {e}"[:500]
            print(f"  per-token info section failed: {results['errors']['logprobs']}", file=sys.stderr)
        mark_load(results, "standalone_process")
        try:
            results["standalone_process"] = standalone_process(
                engines["gguf"], engines["threads"], args, settings.local_context, engines["overrides"]
            )
        except Exception as e:  # noqa: BLE001
            results.setdefault("errors", {})["standalone_process"] = f"{type(e).__name__}: {e}"[:500]
            print(f"  standalone process failed: {results['errors']['standalone_process']}", file=sys.stderr)
        mark_load(results, "concurrency")
        results["concurrency"] = concurrency(engines["app_backend"], args)
        engines["standalone"].close()
        engines["app_model"].close()
        if not args.no_app:
            import gradio_floor
            import served_app

            try:
                served_app.app_sections(args, settings, results, gradio_floor)
            except Exception as e:  # noqa: BLE001 - keep the in-process figures, say what failed
                results.setdefault("app", {}).setdefault("errors", {})["app"] = f"{type(e).__name__}: {e}"[:500]
                print(f"  app sections failed: {results['app']['errors']['app']}", file=sys.stderr, flush=True)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["goals"] = goals(results)
    return _output(results, args, write_json=True)


def _output(results: dict[str, Any], args: Any, *, write_json: bool) -> int:
    print()
    print(goals_table(results))
    print()
    print(table(results))
    if write_json and args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {out}")
    if args.chart:
        draw_chart(results, Path(args.chart))
    if getattr(args, "report", None):
        write_report(results, Path(args.report))
    if "wall_s" in results:
        print(f"bench wall time {results['wall_s']:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, library versions, load average: what the numbers were taken on."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001
        mem_gb = None
    versions = {}
    for pkg in ("torch", "transformers", "xllamacpp", "gradio"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    load = os.getloadavg()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        **versions,
        "load_average_at_start": load,
    }
    info["summary"] = (
        f"{cpu}, {info['cores']} cores, {mem_gb} GB; python {info['python']}, torch {versions['torch']}, "
        f"transformers {versions['transformers']}, xllamacpp {versions['xllamacpp']}, gradio "
        f"{versions['gradio']}; load average {load[0]:.1f}"
    )
    return info


# ---------------------------------------------------------------------------------------- engines
def naive_generate(loaded: Any, ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    """The naive way: ``model.generate`` (float32, greedy) in a thread, text through a TextIteratorStreamer."""
    import torch
    from transformers import TextIteratorStreamer

    tok, model = loaded.tokenizer, loaded.model
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    x = torch.tensor([ids])
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.inference_mode():
                res = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    pad_token_id=tok.eos_token_id,
                )
            out["ids"] = res[0, len(ids) :].tolist()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
            streamer.end()

    t0 = time.perf_counter()
    th = threading.Thread(target=work, daemon=True)
    th.start()
    first = None
    parts = []
    for piece in streamer:
        if piece and first is None:
            first = time.perf_counter()
        parts.append(piece)
    th.join()
    end = time.perf_counter()
    if "error" in out:
        raise out["error"]
    return figures("".join(parts), len(out["ids"]), t0, first, end)


def chat_request(prompt: str, max_tokens: int, cache_prompt: bool) -> dict[str, Any]:
    """The OpenAI-shaped request both llama.cpp configurations answer (greedy)."""
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": cache_prompt,
    }


#: llama.cpp settings beyond context, slots and threads that the app may set (``engine_params``); the
#: standalone engine gets the same values, so the app/standalone figures compare the app, not the settings.
ENGINE_FIELDS = (
    "flash_attn_type",
    "cache_type_k",
    "cache_type_v",
    "n_batch",
    "n_ubatch",
    "kv_unified",
    "swa_full",
    "ctx_shift",
    "cache_prompt",
    "cache_ram_mib",
    "n_cache_reuse",
    "slot_prompt_similarity",
    "use_jinja",
    "n_keep",
)


def app_engine_overrides(gguf: Path, *, parallel: int, context: int, threads: int) -> dict[str, Any]:
    """The fields of :data:`ENGINE_FIELDS` where the app's ``engine_params`` differs from llama.cpp's defaults
    (enums by name), or {} when the app has no ``engine_params``."""
    import enum

    import xllamacpp

    try:
        from llm_levels.engine.llama_cpp import engine_params
    except ImportError:
        return {}
    app = engine_params(gguf, context_window=context, parallel=parallel, threads=threads)
    default = xllamacpp.CommonParams()
    out: dict[str, Any] = {}
    for name in ENGINE_FIELDS:
        a, d = getattr(app, name, None), getattr(default, name, None)
        if a != d:
            out[name] = a.name if isinstance(a, enum.Enum) else a
    return out


class Standalone:
    """llama.cpp with no app around it: ``xllamacpp.Server`` on the GGUF, requests sent directly.

    ``overrides``: llama.cpp settings by name (enums by their member's name), see :func:`app_engine_overrides`.
    """

    def __init__(
        self, gguf: Path, *, parallel: int, context: int, threads: int, overrides: dict[str, Any] | None = None
    ) -> None:
        import enum

        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = str(gguf)
        p.n_ctx = context * parallel
        p.n_parallel = parallel
        p.use_jinja = True
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
        p.verbosity = -1
        for name, value in (overrides or {}).items():
            current = getattr(p, name)
            setattr(p, name, type(current)[value] if isinstance(current, enum.Enum) else value)
        t0 = time.perf_counter()
        self.server: Any = xllamacpp.Server(p)
        self.load_s = time.perf_counter() - t0

    def generate(self, prompt: str, max_tokens: int, *, cache_prompt: bool = False) -> dict[str, Any]:
        return stream_server(self.server, chat_request(prompt, max_tokens, cache_prompt))

    def close(self) -> None:
        self.server = None


def stream_server(server: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One streamed request straight to an ``xllamacpp.Server``, timed in its callback."""
    parts: list[str] = []
    box: dict[str, Any] = {"first": None, "usage": None, "error": None}

    def callback(chunk: dict) -> bool:
        if chunk.get("error"):
            box["error"] = chunk["error"]
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                if box["first"] is None:
                    box["first"] = time.perf_counter()
                parts.append(text)
        if chunk.get("usage"):
            box["usage"] = chunk["usage"]
        return False

    t0 = time.perf_counter()
    result = server.handle_chat_completions(request, callback)
    end = time.perf_counter()
    if box["error"] or (isinstance(result, dict) and result.get("error")):
        raise RuntimeError(f"llama.cpp refused the request: {box['error'] or result.get('error')}")
    n = int((box["usage"] or {}).get("completion_tokens", 0))
    return figures("".join(parts), n, t0, box["first"], end)


def app_generate(backend: Any, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    """The app's backend, consumed as the UI consumes it: each chunk as it comes, text timed on arrival."""
    from llm_levels.core import GenParams, Message

    t0 = time.perf_counter()
    first = None
    parts = []
    usage = None
    for c in backend.stream([Message("user", prompt)], GenParams(max_new_tokens=max_new_tokens, temperature=0)):
        if c.text:
            if first is None:
                first = time.perf_counter()
            parts.append(c.text)
        if c.usage is not None:
            usage = c.usage
    end = time.perf_counter()
    return figures("".join(parts), usage.output_tokens if usage else 0, t0, first, end)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


# ------------------------------------------------------------------------------------ section 1
def decode_section(args: Any, settings: Any, results: dict[str, Any]) -> dict[str, Any]:
    """Naive transformers, llama.cpp standalone and the app's backend, interleaved; then cached TTFT."""
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.backends.local_hf import LocalBackend
    from llm_levels.core import Message
    from llm_levels.models import load_llama_cpp_model, load_model
    from llm_levels.slots import LocalSlots

    class FreshPromptBackend(LlamaCppBackend):
        """The app's backend, its requests asking llama.cpp not to reuse the previous prompt (see above)."""

        def request(self, messages, params):  # type: ignore[no-untyped-def]
            req = super().request(messages, params)
            req["cache_prompt"] = False
            return req

    load: dict[str, Any] = {}
    results["load"] = load
    t0 = time.perf_counter()
    plain = load_model(settings.local_model, settings)
    load["transformers_s"] = round(time.perf_counter() - t0, 2)
    load["transformers_from_cache"] = plain.from_cache
    app_settings = replace(settings, local_concurrency=args.users)
    t0 = time.perf_counter()
    app_model = load_llama_cpp_model(settings.local_model, app_settings)
    load["llama_cpp_app_s"] = round(time.perf_counter() - t0, 3)
    gguf = Path(app_model.gguf_path)
    overrides = app_engine_overrides(
        gguf, parallel=args.users, context=settings.local_context, threads=app_model.threads
    )
    standalone = Standalone(
        gguf, parallel=args.users, context=settings.local_context, threads=app_model.threads, overrides=overrides
    )
    load["llama_cpp_standalone_s"] = round(standalone.load_s, 3)
    # The same with one thread (when the app uses more): on a shared machine, a thread that loses its core
    # stalls every step of llama.cpp's others, so fewer threads can be faster there.
    one_thread = (
        Standalone(gguf, parallel=args.users, context=settings.local_context, threads=1, overrides=overrides)
        if app_model.threads > 1
        else None
    )
    results["settings"].update(
        gguf=gguf.name,
        threads=app_model.threads,
        context=settings.local_context,
        parallel=args.users,
        engine_overrides=overrides,
    )
    print(
        f"loaded: transformers {plain.display_name} ({plain.dtype}) in {load['transformers_s']} s"
        f"{' (converted copy)' if plain.from_cache else ''}; llama.cpp {gguf.name} in the app "
        f"{load['llama_cpp_app_s']:.2f} s, standalone {load['llama_cpp_standalone_s']:.2f} s "
        f"({app_model.threads} threads, {args.users} slots x {settings.local_context} tokens; the app's settings "
        f"for both: {overrides or 'llama.cpp defaults'})",
        flush=True,
    )

    line = LocalSlots(args.users)
    fresh_backend = FreshPromptBackend(app_model, slots=line)
    app_backend = LlamaCppBackend(app_model, slots=line)
    ids = LocalBackend(plain).prepare([Message("user", args.prompt)], args.tokens).ids
    results["prompt_tokens"] = {
        "transformers": len(ids),
        "llama_cpp": len(app_backend.prepare([Message("user", args.prompt)]).ids),
    }

    configs: list[tuple[str, str, Callable[[int], dict[str, Any]]]] = [
        ("naive", NAIVE, lambda n: naive_generate(plain, ids, n)),
        (
            "standalone",
            f"{STANDALONE}, {app_model.threads} thread{'s' if app_model.threads > 1 else ''}",
            lambda n: standalone.generate(args.prompt, n),
        ),
        ("app", APP, lambda n: app_generate(fresh_backend, args.prompt, n)),
    ]
    if one_thread is not None:
        configs.append(("standalone_1t", STANDALONE_1T, lambda n: one_thread.generate(args.prompt, n)))
    for _, _, fn in configs:  # warm-up
        fn(min(8, args.tokens))
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in configs}
    for r in range(args.runs):
        for key, name, fn in configs:
            time.sleep(SETTLE_S)
            res = fn(args.tokens)
            runs[key].append(res)
            print(
                f"  run {r + 1} {name}: {res['tokens']} tokens, TTFT {_fmt(res['ttft_s'], 3)} s, "
                f"{_fmt(res['tokens_per_s'], 1)} tok/s",
                flush=True,
            )
    rows = []
    for key, name, _ in configs:
        rows.append(
            {
                "key": key,
                "config": name,
                "tokens_per_s": _median(runs[key], "tokens_per_s"),
                "ttft_s": _median(runs[key], "ttft_s"),
                "tokens": _median(runs[key], "tokens"),
                "runs": [{k: v for k, v in x.items() if k != "text"} for x in runs[key]],
                "reply": runs[key][-1]["text"],
            }
        )
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = (row["tokens_per_s"] / base) if base and row["tokens_per_s"] else None
    results["decode"] = rows
    by = {r["key"]: r for r in rows}
    st, ap, nv = by["standalone"], by["app"], by["naive"]
    results["ratios"] = {
        "app_over_standalone": _ratio(ap["tokens_per_s"], st["tokens_per_s"]),
        "app_ttft_extra_ms": (ap["ttft_s"] - st["ttft_s"]) * 1000 if ap["ttft_s"] and st["ttft_s"] else None,
        "standalone_over_naive": _ratio(st["tokens_per_s"], nv["tokens_per_s"]),
        "app_over_naive": _ratio(ap["tokens_per_s"], nv["tokens_per_s"]),
        "app_text_equals_standalone": ap["reply"] == st["reply"],
        "naive_llama_cpp_common_words": _common_words(nv["reply"], st["reply"]),
    }
    print(
        f"  app / standalone {_fmt(results['ratios']['app_over_standalone'], 2)}x, TTFT "
        f"{_fmt(results['ratios']['app_ttft_extra_ms'], 0, sign=True)} ms; llama.cpp / naive "
        f"{_fmt(results['ratios']['standalone_over_naive'], 2)}x",
        flush=True,
    )
    results["cached_ttft"] = cached_ttft(standalone, app_backend, args)
    results["ratios"]["app_prepare_ms"] = prepare_ms(app_backend, args)
    if one_thread is not None:
        one_thread.close()
    print(
        f"  the app's prompt preparation (template + tokenize through llama.cpp's loopback routes): "
        f"{results['ratios']['app_prepare_ms']:.1f} ms (median of 5)",
        flush=True,
    )
    return {
        "gguf": gguf,
        "threads": app_model.threads,
        "standalone": standalone,
        "app_model": app_model,
        "app_backend": app_backend,
        "overrides": overrides,
        "transformers": plain,
    }


def cached_ttft(standalone: Standalone, app_backend: Any, args: Any) -> dict[str, Any]:
    """TTFT the way both run by default: the same prompt again (llama.cpp reuses what it read)."""
    n = min(8, args.tokens)
    k = CACHED_RUNS if not args.quick else 2
    st, ap = [], []
    for i in range(k):
        time.sleep(SETTLE_S)
        a = standalone.generate(args.prompt, n, cache_prompt=True)
        time.sleep(SETTLE_S)
        b = app_generate(app_backend, args.prompt, n)
        if i:  # the first of each fills the cache
            st.append(a["ttft_s"])
            ap.append(b["ttft_s"])
    res = {"standalone_s": statistics.median(st), "app_s": statistics.median(ap), "runs": len(st)}
    res["extra_ms"] = (res["app_s"] - res["standalone_s"]) * 1000
    print(
        f"  cached prompt: TTFT standalone {res['standalone_s'] * 1000:.0f} ms, app {res['app_s'] * 1000:.0f} ms "
        f"({res['extra_ms']:+.0f} ms; median of {len(st)})",
        flush=True,
    )
    return res


def prepare_ms(backend: Any, args: Any) -> float:
    """What the app's backend does before the engine starts: render and tokenize the prompt (ms)."""
    from llm_levels.core import Message

    took = []
    for _ in range(5):
        t0 = time.perf_counter()
        backend.prepare([Message("user", args.prompt)], args.tokens)
        took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _common_words(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split(), b.split()):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------------ section 2
def standalone_process(gguf: Path, threads: int, args: Any, context: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp alone in a fresh Python process: import, load, RSS after loading, peak after one answer."""
    import subprocess

    cfg = {
        "gguf": str(gguf),
        "threads": threads,
        "parallel": args.users,
        "context": context,
        "prompt": args.prompt,
        "tokens": args.tokens,
        "overrides": overrides,
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--probe-standalone", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the probe exited with {proc.returncode}: {proc.stderr.strip()[-400:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  llama.cpp alone in a fresh process: import {res['import_s']:.2f} s, load {res['load_s']:.2f} s, "
        f"RSS {res['rss_loaded_mb']:.0f} MB loaded, peak {res['peak_rss_mb']:.0f} MB after one answer "
        f"({res['tokens']} tokens, {_fmt(res['tokens_per_s'], 1)} tok/s)",
        flush=True,
    )
    return res


def _probe_standalone(cfg: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    import xllamacpp  # noqa: F401

    import_s = time.perf_counter() - t0
    from served_app import status_mb

    s = Standalone(
        Path(cfg["gguf"]),
        parallel=cfg["parallel"],
        context=cfg["context"],
        threads=cfg["threads"],
        overrides=cfg["overrides"],
    )
    rss_loaded = status_mb(os.getpid(), "VmRSS")
    res = s.generate(cfg["prompt"], cfg["tokens"])
    print(
        json.dumps(
            {
                "import_s": import_s,
                "load_s": s.load_s,
                "rss_loaded_mb": rss_loaded,
                "peak_rss_mb": status_mb(os.getpid(), "VmHWM"),
                "tokens": res["tokens"],
                "tokens_per_s": res["tokens_per_s"],
                "ttft_s": res["ttft_s"],
            }
        )
    )


# ------------------------------------------------------------------------------------ section 3
def concurrency(backend: Any, args: Any) -> dict[str, Any]:
    """``--users`` requests at once through the app's backend vs one alone."""
    from llm_levels.core import GenParams, Message

    params = GenParams(max_new_tokens=args.tokens, temperature=0)
    messages = [Message("user", args.prompt)]

    def one(out: list, idx: int) -> None:
        t0 = time.perf_counter()
        first = None
        n = 0
        for c in backend.stream(messages, params):
            if c.text and first is None:
                first = time.perf_counter()
            if c.usage is not None:
                n = c.usage.output_tokens
        out[idx] = figures("", n, t0, first, time.perf_counter())

    def wave(k: int) -> dict[str, Any]:
        out: list = [None] * k
        time.sleep(SETTLE_S)
        wall = run_together([lambda i=i: one(out, i) for i in range(k)])
        total = sum(o["tokens"] for o in out)
        speeds = [o["tokens_per_s"] for o in out if o["tokens_per_s"]]
        return {
            "users": k,
            "aggregate_tokens_per_s": total / wall,
            "wall_s": wall,
            "tokens": total,
            "per_user_tokens_per_s": speeds,
            "ttft_s": [o["ttft_s"] for o in out],
            "slowest_over_fastest": (min(speeds) / max(speeds)) if speeds else None,
        }

    wave(1)  # warm-up (fills the prompt cache of one slot, as the waves below then find it)
    one_user = wave(1)
    many = wave(args.users)
    base = one_user["aggregate_tokens_per_s"]
    res = {"one": one_user, "many": many, "ratio": many["aggregate_tokens_per_s"] / base if base else None}
    print(
        f"  concurrency (app backend): 1 user {base:.1f} tok/s; {args.users} users "
        f"{many['aggregate_tokens_per_s']:.1f} tok/s in all ({_fmt(res['ratio'], 2)}x), slowest/fastest "
        f"{_fmt(many['slowest_over_fastest'], 2)}",
        flush=True,
    )
    return res


# ------------------------------------------------------------------------------------------ goals
def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None: not measured, or no goal)."""
    out: list[dict[str, Any]] = []

    def add(goal: str, value: str, ok: bool | None) -> None:
        out.append({"goal": goal, "value": value, "ok": ok})

    r = results.get("ratios") or {}
    dec = {row["key"]: row for row in results.get("decode", [])}
    if r:
        v = r.get("app_over_standalone")
        add(
            "app backend decode ≥ 0.9× llama.cpp standalone",
            f"{_fmt(v, 2)}× ({_fmt(dec['app']['tokens_per_s'], 1)} vs {_fmt(dec['standalone']['tokens_per_s'], 1)} "
            "tok/s)",
            None if v is None else v >= 0.9,
        )
        x = r.get("app_ttft_extra_ms")
        c = results.get("cached_ttft") or {}
        cached = (
            (f"; prompt cached: {c['app_s'] * 1000:.0f} vs {c['standalone_s'] * 1000:.0f} ms ({c['extra_ms']:+.0f} ms)")
            if c
            else ""
        )
        add(
            "app backend TTFT ≤ standalone + 20 ms",
            f"{_fmt(_ms(dec['app']['ttft_s']), 0)} vs {_fmt(_ms(dec['standalone']['ttft_s']), 0)} ms "
            f"({_fmt(x, 0, sign=True)} ms){cached}",
            None if x is None else (x <= 20 and (not c or c["extra_ms"] <= 20)),
        )
        add(
            "llama.cpp vs naive transformers (no goal: the reason for the switch)",
            f"standalone {_fmt(r.get('standalone_over_naive'), 2)}×, app {_fmt(r.get('app_over_naive'), 2)}× "
            f"({_fmt(dec['naive']['tokens_per_s'], 1)} tok/s naive)",
            None,
        )
        if "standalone_1t" in dec:
            threads = (results.get("settings") or {}).get("threads")
            add(
                f"llama.cpp 1 thread vs {threads} threads (no goal: the app's default is one per core)",
                f"{_fmt(dec['standalone_1t']['tokens_per_s'], 1)} vs {_fmt(dec['standalone']['tokens_per_s'], 1)} "
                f"tok/s ({_fmt(_ratio(dec['standalone_1t']['tokens_per_s'], dec['standalone']['tokens_per_s']), 2)}×)",
                None,
            )
    for goal, value, ok in logprobs_bench.goals(results):
        add(goal, value, ok)
    cc = results.get("concurrency")
    if cc:
        add(
            f"{cc['many']['users']} users at once ≥ 1.25× one user (aggregate tok/s)",
            f"{_fmt(cc['ratio'], 2)}× ({cc['many']['aggregate_tokens_per_s']:.1f} vs "
            f"{cc['one']['aggregate_tokens_per_s']:.1f})",
            None if cc["ratio"] is None else cc["ratio"] >= 1.25,
        )
        s = cc["many"]["slowest_over_fastest"]
        add("slowest / fastest of them ≥ 0.8", _fmt(s, 2), None if s is None else s >= 0.8)
    app = results.get("app") or {}
    st = app.get("startup")
    if st:
        add(
            "warm start: page served ≤ 4 s",
            f"{st['page_s']:.2f} s (median of {' / '.join(f'{v:.2f}' for v in st['page_all_s'])})",
            st["page_s"] <= 4,
        )
        add(
            "llama.cpp ready ≤ 1.5 s after the page",
            f"+{st['ready_after_page_s']:.2f} s (ready at {st['ready_s']:.2f} s; {app.get('readiness')})",
            st["ready_after_page_s"] <= 1.5,
        )
    mem = app.get("memory") or {}
    if mem.get("peak_llama_cpp_only_mb"):
        add(
            "app peak RSS, llama.cpp only ≤ 450 MB",
            f"{mem['peak_llama_cpp_only_mb']:.0f} MB",
            mem["peak_llama_cpp_only_mb"] <= 450,
        )
    tf = app.get("transformers")
    if tf:
        add(
            "app peak RSS with transformers loaded too (no goal)",
            f"{_fmt(tf.get('peak_both_mb'), 0)} MB (now {_fmt(tf.get('rss_both_mb'), 0)} MB)",
            None,
        )
    sm = app.get("streaming")
    if sm:
        fl = (app.get("floor") or {}).get("http")
        add(
            "through the page (event stream) ≥ 0.85× the backend's own tok/s (the app's figure for the same turns)",
            f"{_fmt(sm['ratio'], 2)}× ({sm['client_tokens_per_s']:.1f} vs {sm['app_tokens_per_s']:.1f})",
            None if sm["ratio"] is None else sm["ratio"] >= 0.85,
        )
        if dec.get("app", {}).get("tokens_per_s"):
            add(
                "the running app's own decode vs the same backend in the bench process (no goal; llama.cpp's "
                "threads stall whenever another process takes one of the 2 cores)",
                f"{_fmt(_ratio(sm['app_tokens_per_s'], dec['app']['tokens_per_s']), 2)}× "
                f"({sm['app_tokens_per_s']:.1f} vs {dec['app']['tokens_per_s']:.1f} tok/s)",
                None,
            )
        add(
            "TTFT extra through the page (no goal)",
            f"{sm['extra_ttft_ms']:.0f} ms"
            + (f" (a do-nothing Gradio app: {fl['extra_ttft_ms']:.0f} ms)" if fl else ""),
            None,
        )
    for section, err in sorted({**(results.get("errors") or {}), **(app.get("errors") or {})}.items()):
        add(f"not measured: {section}", err, None)
    return out


# ------------------------------------------------------------------------------------------ tables
def _fmt(x: Any, digits: int, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def goals_table(results: dict[str, Any]) -> str:
    lines = ["| goal | measured | |", "|---|---|:-:|"]
    for g in results.get("goals") or goals(results):
        mark = {True: "✓", False: "✗", None: ""}[g["ok"]]
        lines.append(f"| {g['goal']} | {_cell(g['value'])} | {mark} |")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """The decode rows and every other figure, as Markdown tables."""
    lines = ["| configuration | decode tok/s (median) | × naive | TTFT ms | tokens |", "|---|---:|---:|---:|---:|"]
    for r in results.get("decode", []):
        lines.append(
            f"| {r['config']} | {_fmt(r['tokens_per_s'], 1)} | {_fmt(r['speedup'], 2)} | "
            f"{_fmt(_ms(r['ttft_s']), 0)} | {_fmt(r['tokens'], 0)} |"
        )
    lines += ["", "| figure | value |", "|---|---:|"]

    def row(label: str, value: str) -> None:
        lines.append(f"| {label} | {_cell(value)} |")

    ld = results.get("load") or {}
    if ld:
        row(
            "load: transformers (float32" + (", converted copy" if ld.get("transformers_from_cache") else "") + "), s",
            f"{ld['transformers_s']:.2f}",
        )
        row(
            "load in this process: llama.cpp for the app (the first: pays llama.cpp's one-time set-up) / standalone, s",
            f"{ld['llama_cpp_app_s']:.2f} / {ld['llama_cpp_standalone_s']:.2f}",
        )
    pt = results.get("prompt_tokens")
    if pt:
        row("prompt tokens (transformers / llama.cpp chat template)", f"{pt['transformers']} / {pt['llama_cpp']}")
    c = results.get("cached_ttft")
    if c:
        row(
            f"TTFT, prompt cached (same prompt again): standalone / app, ms (median of {c['runs']})",
            f"{c['standalone_s'] * 1000:.0f} / {c['app_s'] * 1000:.0f} ({c['extra_ms']:+.0f})",
        )
    r = results.get("ratios") or {}
    if r:
        row("app's answer = standalone's answer (same words)", "yes" if r.get("app_text_equals_standalone") else "no")
        row("naive and llama.cpp answers: same first words", str(r.get("naive_llama_cpp_common_words")))
        if r.get("app_prepare_ms") is not None:
            row(
                "app backend: prompt preparation before the engine starts (template + tokenize), ms",
                f"{r['app_prepare_ms']:.1f}",
            )
    for label, value in logprobs_bench.table_rows(results):
        row(label, value)
    sp = results.get("standalone_process")
    if sp:
        row("llama.cpp alone in a fresh process: import / load, s", f"{sp['import_s']:.2f} / {sp['load_s']:.2f}")
        row(
            "llama.cpp alone in a fresh process: RSS loaded / peak after one answer, MB",
            f"{sp['rss_loaded_mb']:.0f} / {sp['peak_rss_mb']:.0f}",
        )
    cc = results.get("concurrency")
    if cc:
        row("app backend: 1 user, tok/s", f"{cc['one']['aggregate_tokens_per_s']:.1f}")
        row(
            f"app backend: {cc['many']['users']} users at once, aggregate tok/s",
            f"{cc['many']['aggregate_tokens_per_s']:.1f} ({_fmt(cc['ratio'], 2)}×)",
        )
        row("app backend: each user's tok/s", " / ".join(f"{v:.1f}" for v in cc["many"]["per_user_tokens_per_s"]))
    app = results.get("app") or {}
    st = app.get("startup")
    if st:
        row("app start: page served, s", " / ".join(f"{v:.2f}" for v in st["page_all_s"]))
        row(
            f"app start: llama.cpp ready ({app.get('readiness')}), s", " / ".join(f"{v:.2f}" for v in st["ready_all_s"])
        )
        logged = [v for v in app.get("engine_log_s") or [] if v is not None]
        if logged:
            row("app start: 'llama.cpp ready' in the app's log, s", " / ".join(f"{v:.2f}" for v in logged))
        loads = [v for v in app.get("engine_load_s") or [] if v is not None]
        if loads:
            row("app start: llama.cpp's own load time (the app's log), s", " / ".join(f"{v:.2f}" for v in loads))
    mem = app.get("memory") or {}
    if mem:
        row(
            "app RSS: at ready / peak after streaming (llama.cpp only), MB",
            f"{_fmt(mem.get('rss_at_ready_mb'), 0)} / {_fmt(mem.get('peak_llama_cpp_only_mb'), 0)}",
        )
    tf = app.get("transformers")
    if tf:
        row(
            f"app RSS with transformers loaded too ({tf['how']}): peak / now, MB",
            f"{_fmt(tf.get('peak_both_mb'), 0)} / {_fmt(tf.get('rss_both_mb'), 0)}",
        )
    sm = app.get("streaming")
    if sm:
        row(
            "through the page (event stream): tok/s seen vs the app's own",
            f"{sm['client_tokens_per_s']:.1f} vs {sm['app_tokens_per_s']:.1f} ({_fmt(sm['ratio'], 2)}×)",
        )
        row(
            f"through the page: TTFT extra, ms (median of {sm['ttft_turns']} turns; min / max)",
            f"{sm['extra_ttft_ms']:.0f} ({sm['extra_ttft_min_ms']:.0f} / {sm['extra_ttft_max_ms']:.0f})",
        )
    fl = (app.get("floor") or {}).get("http")
    if fl:
        row(
            "a do-nothing Gradio app, same consumer: TTFT extra, ms",
            f"{fl['extra_ttft_ms']:.0f} ({fl['min_ms']:.0f} / {fl['max_ms']:.0f})",
        )
    la = results.get("load_average_by_section")
    if la:
        row("1-minute load average as each section started", ", ".join(f"{k} {v:.1f}" for k, v in la.items()))
    if "wall_s" in results:
        row("bench wall time, s", f"{results['wall_s']:.0f}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def answers_table(results: dict[str, Any]) -> str:
    """The naive and llama.cpp answers to the same prompt, side by side."""
    dec = {row["key"]: row for row in results.get("decode", [])}
    if "naive" not in dec or "standalone" not in dec:
        return ""
    m = results.get("machine") or {}
    lines = [
        f"| naive transformers (float32, torch {m.get('torch')}) | llama.cpp ({results['settings'].get('gguf')}, "
        f"xllamacpp {m.get('xllamacpp')}) |",
        "|---|---|",
        f"| {_cell(dec['naive']['reply'].strip())} | {_cell(dec['standalone']['reply'].strip())} |",
    ]
    return "\n".join(lines)


def report_block(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    s = results.get("settings") or {}
    load_start, load_end = m.get("load_average_at_start"), m.get("load_average_at_end")
    loads = ""
    if load_start:
        loads = f"; load average {load_start[0]:.1f} at the start" + (
            f", {load_end[0]:.1f} at the end" if load_end else ""
        )
    parts = [
        f"Run of {results.get('started')} (`{results.get('command')}`, {results.get('wall_s', 0):.0f} s in all). "
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB, no GPU{loads}; python "
        f"{m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}, xllamacpp "
        f"{m.get('xllamacpp')}, gradio {m.get('gradio')}. Model: {s.get('model')} ({s.get('gguf')}); "
        f"prompt \"{s.get('prompt')}\", greedy, {s.get('tokens')} new tokens, median of {s.get('runs')} runs; "
        f"llama.cpp: {s.get('threads')} threads, {s.get('parallel')} slots × {s.get('context')} tokens, "
        f"settings beyond llama.cpp's defaults (the app's, used for the standalone engine too): "
        f"{_overrides_text(s.get('engine_overrides'))}.",
        "",
        "### Goals",
        "",
        goals_table(results),
        "",
        "### Every figure",
        "",
        table(results),
    ]
    answers = answers_table(results)
    if answers:
        r = results.get("ratios") or {}
        parts += [
            "",
            "### The same prompt, naive transformers and llama.cpp",
            "",
            answers,
            "",
            f"The app's answer is {'word for word' if r.get('app_text_equals_standalone') else 'not'} the "
            "standalone llama.cpp answer; naive transformers and llama.cpp share the first "
            f"{r.get('naive_llama_cpp_common_words')} words.",
        ]
    return "\n".join(parts)


def _overrides_text(overrides: dict[str, Any] | None) -> str:
    if not overrides:
        return "none"
    return ", ".join(f"`{k}={v}`" for k, v in overrides.items())


def write_report(results: dict[str, Any], path: Path) -> None:
    """Put :func:`report_block` between the bench markers of ``path`` (kept text around it)."""
    block = f"{BEGIN}\n{report_block(results)}\n{END}"
    text = path.read_text() if path.exists() else "# Local model speed\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------ chart
def chart_bars(results: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, tok/s) per configuration: the decode rows, the concurrency aggregate, the page stream."""
    threads = (results.get("settings") or {}).get("threads")
    short = {
        "naive": "naive transformers (float32 generate)",
        "standalone": f"llama.cpp standalone, {threads} threads" if threads else "llama.cpp standalone",
        "app": "app backend (llama.cpp)",
        "standalone_1t": "llama.cpp standalone, 1 thread",
    }
    bars = [(short.get(r.get("key"), r["config"]), r["tokens_per_s"] or 0.0) for r in results.get("decode", [])]
    c = results.get("concurrency")
    if c:
        bars.append((f"app backend, {c['many']['users']} users at once (sum)", c["many"]["aggregate_tokens_per_s"]))
    sm = (results.get("app") or {}).get("streaming")
    if sm:
        bars.append(("through the page (event stream)", sm["client_tokens_per_s"]))
    return bars


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """A horizontal bar chart of :func:`chart_bars` as a PNG, drawn with Pillow (no matplotlib needed)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        print("error: --chart needs Pillow", file=sys.stderr)
        return
    bars = chart_bars(results)
    if not bars:
        return
    width, left, row, top = 1000, 380, 46, 64
    height = top + row * len(bars) + 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=16)
        small = ImageFont.load_default(size=13)
    except TypeError:  # an older Pillow without sizes
        font = small = ImageFont.load_default()
    m = results.get("machine", {})
    s = results.get("settings", {})
    d.text(
        (16, 12), f"SmolLM2-135M-Instruct: decode tokens/s (greedy, median of {s.get('runs')})", fill="black", font=font
    )
    d.text(
        (16, 36),
        f"{m.get('cpu', '')}, {m.get('cores', '?')} cores, no GPU; {s.get('tokens')} new tokens; "
        f"{results.get('started', '')}; higher is better",
        fill="#555555",
        font=small,
    )
    top_val = max(v for _, v in bars) or 1.0
    span = width - left - 90
    for i, (label, v) in enumerate(bars):
        y = top + i * row
        colour = (
            "#9aa5b1"
            if label.startswith("naive")
            else "#2b7a4b"
            if "users" in label
            else "#b36b2f"
            if "page" in label
            else "#2f6fb3"
        )
        d.text((16, y + 10), label[:48], fill="black", font=small)
        d.rectangle([left, y + 6, left + int(span * v / top_val), y + row - 10], fill=colour)
        d.text((left + int(span * v / top_val) + 8, y + 12), f"{v:.1f}", fill="black", font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    print(f"wrote {path}")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--probe-standalone":
    _probe_standalone(json.loads(sys.argv[2]))
