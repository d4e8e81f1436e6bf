"""Run the app like ``app.py`` does, plus a thread that records where its memory goes (a bench tool).

Serves the same app as ``web.app.serve`` (``Settings.from_env()`` → ``limit_malloc_arenas`` →
``web.app.create_app`` → uvicorn) and, every
``--every`` seconds, appends one JSON line to ``--out`` with:

- ``rss_mb`` (the process), and glibc's heap figures from ``mallinfo2()``: ``heap_in_use_mb`` (what
  malloc handed out and was not freed), ``heap_free_mb`` (freed but kept by malloc: fragmentation or
  reuse pool), ``mmap_mb`` and ``arenas`` (how many malloc arenas threads have created);
- ``py_objects`` (``len(gc.get_objects())``) and, with ``--tracemalloc``, Python's traced bytes and
  the allocation sites that grew most since the first sample;
- the sizes of every per-session or per-event store we know of: Gradio's ``StateHolder``
  (``sessions``: one ``SessionState`` per session hash, with ``state_values`` gr.State values in
  them), the queue's ``event_ids_to_events``, ``pending_event_ids_session``,
  ``pending_messages_per_session``, ``event_analytics``, the app's ``RateLimiter`` and
  ``SecretRegistry``.

Drive it with ``bench/load_test.py --url http://127.0.0.1:PORT`` (it finds the pid by the port).
Nothing here is part of the product: it only reads.

    HF_HUB_OFFLINE=1 GRADIO_SERVER_PORT=7901 OPENAI_BASE_URL=... .venv/bin/python bench/mem_probe.py \
        --out /tmp/mem/probe.jsonl --every 15 [--tracemalloc]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_levels.allocator import malloc_arena_count  # noqa: E402


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_stats() -> dict[str, float]:
    """glibc's own view of the heap (all arenas), in MB; empty when not on glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mb = 2**20
    return {
        "heap_in_use_mb": round(mi.uordblks / mb, 1),
        "heap_free_mb": round(mi.fordblks / mb, 1),
        "heap_arena_mb": round(mi.arena / mb, 1),
        "mmap_mb": round(mi.hblkhd / mb, 1),
        "mmap_blocks": mi.hblks,
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return round(pages * resource.getpagesize() / 2**20, 1)


def find_blocks():
    import gradio as gr

    for o in gc.get_objects():
        if isinstance(o, gr.Blocks) and getattr(o, "_queue", None) is not None and hasattr(o, "state_holder"):
            return o
    return None


def stores(blocks: Any, runtime: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if blocks is not None:
        sh = blocks.state_holder
        sessions = list(sh.session_data.values())
        out["sessions"] = len(sessions)
        out["sessions_closed"] = sum(1 for s in sessions if s.is_closed)
        out["state_values"] = sum(len(s.state_data) for s in sessions)
        out["config_values"] = sum(len(s.config_values) for s in sessions)
        q = blocks._queue
        out["event_ids_to_events"] = len(q.event_ids_to_events)
        out["pending_event_ids_session"] = len(q.pending_event_ids_session)
        out["pending_messages_per_session"] = len(q.pending_messages_per_session)
        out["event_analytics"] = len(q.event_analytics)
        out["pending_streams"] = len(blocks.pending_streams)
        out["pending_diff_streams"] = len(blocks.pending_diff_streams)
        app = getattr(q, "server_app", None)
        if app is not None:
            out["app_iterators"] = len(getattr(app, "iterators", {}))
    if runtime is not None:
        out["rate_limiter_sessions"] = len(runtime.rate_limiter)
        out["secret_registry"] = len(runtime.secrets._session)
    return out


def session_size_bytes(blocks: Any, sample: int = 3) -> int | None:
    """Deep size of a few SessionState objects (their own dicts, not the shared component objects)."""
    if blocks is None or not blocks.state_holder.session_data:
        return None
    shared = {id(b) for b in blocks.blocks.values()} | {id(f) for f in blocks.fns.values()}
    seen: set[int] = set()
    total = 0
    picked = list(blocks.state_holder.session_data.values())[-sample:]

    def size(o: Any, depth: int = 0) -> int:
        if id(o) in seen or id(o) in shared or depth > 12:
            return 0
        seen.add(id(o))
        n = sys.getsizeof(o)
        if isinstance(o, dict):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in o.items())
        elif isinstance(o, (list, tuple, set, frozenset)):
            n += sum(size(x, depth + 1) for x in o)
        elif hasattr(o, "__dict__") and type(o).__module__.startswith(("gradio", "llm_levels")):
            n += size(vars(o), depth + 1)
        return n

    for s in picked:
        total += size(s.state_data) + size(s.config_values) + size(s.blocks_config.blocks) + size(s._state_ttl)
    return total // len(picked)


class Probe(threading.Thread):
    def __init__(self, out: Path, every_s: float, runtime: Any, use_tracemalloc: bool, trim: bool = False) -> None:
        super().__init__(daemon=True, name="mem-probe")
        self.out, self.every_s, self.runtime, self.tm, self.trim = out, every_s, runtime, use_tracemalloc, trim
        self.t0 = time.monotonic()
        self.baseline = None

    def run(self) -> None:
        blocks = None
        while True:
            time.sleep(self.every_s)
            if blocks is None:
                blocks = find_blocks()
            rec: dict[str, Any] = {
                "t_s": round(time.monotonic() - self.t0, 1),
                "rss_mb": rss_mb(),
                **malloc_stats(),
                "arenas": malloc_arena_count(),
                "threads": threading.active_count(),
                "py_objects": len(gc.get_objects()),
            }
            if self.trim:
                # Hand malloc's free pages back to the OS: RSS that this removes was free memory malloc
                # kept (allocator high-water/fragmentation), not live data.
                rec["trimmed"] = bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
                rec["rss_after_trim_mb"] = rss_mb()
                rec.update({f"{k}_after_trim": v for k, v in malloc_stats().items() if k == "heap_free_mb"})
            rec.update(stores(blocks, self.runtime))
            rec["session_state_bytes"] = session_size_bytes(blocks)
            if self.tm:
                snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
                cur, peak = tracemalloc.get_traced_memory()
                rec["traced_mb"] = round(cur / 2**20, 1)
                if self.baseline is None:
                    self.baseline = snap
                else:
                    diff = snap.compare_to(self.baseline, "lineno")[:12]
                    rec["grew"] = [
                        f"{d.size_diff / 1024:+.0f} KiB {d.count_diff:+d} "
                        f"{d.traceback[0].filename.split('site-packages/')[-1]}:{d.traceback[0].lineno}"
                        for d in diff
                    ]
            with self.out.open("a") as f:
                f.write(json.dumps(rec) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every", type=float, default=15.0)
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slower)")
    ap.add_argument(
        "--malloc-trim",
        action="store_true",
        help="after each record call malloc_trim(0) and record the RSS after it (a diagnosis: "
        "what it frees was malloc's retained free memory)",
    )
    args = ap.parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start(1)
    from dotenv import load_dotenv

    load_dotenv()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from llm_levels.allocator import limit_malloc_arenas
    from llm_levels.config import Settings
    from llm_levels.web.app import create_app

    settings = Settings.from_env()
    limit_malloc_arenas(settings.malloc_arena_max)  # as web.app.serve does
    app, runtime = create_app(settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("")
    Probe(args.out, args.every, runtime, args.tracemalloc, args.malloc_trim).start()
    print(f"mem-probe: serving on http://{settings.server_name}:{settings.server_port}", flush=True)
    uvicorn.run(app, host=settings.server_name, port=settings.server_port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
