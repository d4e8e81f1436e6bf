"""``python -m llm_levels bench``: how fast is the local model, the naive way and the app's way?

Sections (each prints its rows as it finishes; ``--json OUT`` writes everything at the end):

- **decode** — in this process, on the same prompt, interleaved run by run (so a busy machine slows
  every configuration alike): the *naive* way (``model.generate`` on the float32 model in a thread,
  text through a ``TextIteratorStreamer``, torch's default threads), the same with one thread, and the
  app's own path (``LocalBackend.stream``: the int8 fast path when active). Median of ``--runs`` runs
  after a warm-up; greedy; decode tok/s = (tokens - 1) / (time after the first text).
- **concurrency** — ``--users`` requests at once on the app's local backend vs one alone: aggregate
  tokens/s (all tokens over the wall time), each user's own speed, and the slowest/fastest ratio.
- **app** (skipped with ``--no-app``/``--quick``) — ``app.py`` started as a subprocess: first start
  with an empty cache (GGUF conversion), then 3 warm starts (median): seconds to the page (HTTP 200 on ``/``)
  and to a ready model (first answered ``/v1/chat/completions``); then streaming through the Gradio
  API (``gradio_client`` on ``/local_send``, and a plain consumer of the event stream): tokens/s and TTFT
  the client sees vs the app's own measurement of the same turn, and the same consumers on a do-nothing
  Gradio app (:mod:`.gradio_floor`); then ``--users`` Gradio clients at once; the server's peak memory
  (VmHWM) at the end.

Timings are wall-clock on whatever else the machine is doing: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

DEFAULT_PROMPT = "Write a long story about a robot who learns to paint."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT", default=None, help="Also write the results as JSON to OUT.")
    p.add_argument("--tokens", type=int, default=128, help="New tokens per run (greedy; default 128).")
    p.add_argument("--runs", type=int, default=3, help="Measured runs per configuration (median; default 3).")
    p.add_argument("--users", type=int, default=4, help="Concurrent users for the concurrency figures (default 4).")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="The user message.")
    p.add_argument("--model", default=None, help="Local model spec (default: LOCAL_MODEL, i.e. the embedded one).")
    p.add_argument("--no-app", action="store_true", help="Skip the sections that start the app in a subprocess.")
    p.add_argument("--chart", metavar="PNG", default=None,
                   help="Also draw tok/s per configuration as a PNG (needs Pillow), e.g. docs/perf.png.")
    p.add_argument("--from-json", metavar="IN", default=None,
                   help="Measure nothing: print the table (and --chart) of an earlier --json file.")
    p.add_argument("--quick", action="store_true",
                   help="A fast smoke run: 8 tokens, 1 run, 2 users, no naive 1-thread row, no app sections.")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print(table(results))
        if args.chart:
            draw_chart(results, Path(args.chart))
        return 0
    if args.quick:
        args.tokens, args.runs, args.users, args.no_app = min(args.tokens, 8), 1, min(args.users, 2), True
    if args.tokens < 2 or args.runs < 1 or args.users < 1:
        print("error: --tokens >= 2, --runs >= 1 and --users >= 1 are needed", file=sys.stderr)
        return 2
    from ..config import Settings
    from ..core import BackendError

    settings = Settings.from_env()
    if args.model:
        settings = replace(settings, local_model=args.model)
    results: dict[str, Any] = {"machine": machine(), "settings": {
        "tokens": args.tokens, "runs": args.runs, "users": args.users, "prompt": args.prompt,
        "model": settings.local_model}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"# llm-levels bench · {results['machine']['summary']}", flush=True)
    try:
        decode_and_concurrency(args, settings, results)
        if not args.no_app:
            try:
                app_sections(args, settings, results)
            except Exception as e:  # noqa: BLE001 - keep the in-process figures, say what failed
                results["app_error"] = f"{type(e).__name__}: {e}"
                print(f"  app sections failed: {results['app_error']}", file=sys.stderr, flush=True)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print(table(results))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {out}")
    if args.chart:
        draw_chart(results, Path(args.chart))
    return 0


# ---------------------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, library versions, load average: what the numbers were taken on."""
    import torch
    import transformers

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
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "load_average_at_start": load}
    info["summary"] = (f"{cpu}, {info['cores']} cores, {mem_gb} GB; torch {torch.__version__}, "
                       f"transformers {transformers.__version__}; load average {load[0]:.1f}" if load else "")
    return info


# ---------------------------------------------------------------------------------- decode figures
def naive_generate(loaded: Any, ids: list[int], max_new_tokens: int, threads: int | None = None) -> dict[str, Any]:
    """The naive way: ``model.generate`` (float32, greedy) in a thread, text through a TextIteratorStreamer."""
    import torch
    from transformers import TextIteratorStreamer

    tok, model = loaded.tokenizer, loaded.model
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    x = torch.tensor([ids])
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            if threads:
                torch.set_num_threads(threads)  # per thread: only this generate thread
            with torch.inference_mode():
                res = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                     do_sample=False, streamer=streamer, pad_token_id=tok.eos_token_id)
            out["ids"] = res[0, len(ids):].tolist()
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
    n = len(out["ids"])
    return _figures("".join(parts), n, t0, first, end)


def app_generate(backend: Any, messages: list, max_new_tokens: int) -> dict[str, Any]:
    """The app's local backend (fast path when active), consumed as the UI consumes it."""
    from ..core import GenParams

    t0 = time.perf_counter()
    first = None
    parts = []
    usage = None
    for c in backend.stream(messages, GenParams(max_new_tokens=max_new_tokens, temperature=0)):
        if c.text:
            if first is None:
                first = time.perf_counter()
            parts.append(c.text)
        if c.usage is not None:
            usage = c.usage
    end = time.perf_counter()
    return _figures("".join(parts), usage.output_tokens if usage else 0, t0, first, end)


def _figures(text: str, n: int, t0: float, first: float | None, end: float) -> dict[str, Any]:
    ttft = (first - t0) if first is not None else None
    decode_s = end - (first if first is not None else t0)
    tps = (n - 1) / decode_s if n > 1 and decode_s > 0 else None
    return {"text": text, "tokens": n, "ttft_s": ttft, "total_s": end - t0, "tokens_per_s": tps}


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def decode_and_concurrency(args: argparse.Namespace, settings: Any, results: dict[str, Any]) -> None:
    from ..backends.local_hf import LocalBackend
    from ..core import Message
    from ..models import apply_fast_path, load_model

    t0 = time.perf_counter()
    plain = load_model(settings.local_model, replace(settings, local_fast_path=False))
    results["load_plain_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    fast = apply_fast_path(replace(plain, fast=None), replace(settings, local_concurrency=args.users))
    results["fast_build_s"] = round(time.perf_counter() - t0, 2)
    results["app_path"] = fast.fast_path
    print(f"loaded {plain.display_name} in {results['load_plain_s']} s; app path: {fast.fast_path} "
          f"(set up in {results['fast_build_s']} s)", flush=True)
    messages = [Message("user", args.prompt)]
    app_backend = LocalBackend(fast)
    ids = app_backend.prepare(messages, args.tokens).ids
    results["prompt_tokens"] = len(ids)

    configs: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
        ("naive: float32 generate + TextIteratorStreamer", lambda n: naive_generate(plain, ids, n)),
    ]
    if not args.quick:
        configs.append(("naive, 1 thread", lambda n: naive_generate(plain, ids, n, threads=1)))
    def app_run(n: int) -> dict[str, Any]:
        res = app_generate(app_backend, messages, n)
        if fast.fast is not None:  # how many threads the auto setting chose for this run
            res["threads"] = fast.fast.decoder.threads
        return res

    configs.append((f"app: {fast.fast_path}", app_run))
    for _, fn in configs:  # warm-up
        fn(min(8, args.tokens))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
    for r in range(args.runs):  # interleaved: a busy spell slows every configuration alike
        for name, fn in configs:
            res = fn(args.tokens)
            runs[name].append(res)
            extra = f" ({res['threads']} thread(s))" if "threads" in res else ""
            print(f"  run {r + 1} {name}: {res['tokens']} tokens, TTFT {_fmt(res['ttft_s'], 3)} s, "
                  f"{_fmt(res['tokens_per_s'], 1)} tok/s{extra}", flush=True)
    rows = []
    for name, _ in configs:
        rows.append({"config": name, "tokens_per_s": _median(runs[name], "tokens_per_s"),
                     "ttft_s": _median(runs[name], "ttft_s"), "tokens": _median(runs[name], "tokens"),
                     "runs": [{k: v for k, v in x.items() if k != "text"} for x in runs[name]],
                     "reply": runs[name][-1]["text"]})
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = (row["tokens_per_s"] / base) if base and row["tokens_per_s"] else None
    results["decode"] = rows

    # ---- concurrency: the app's backend, one user alone vs --users at once
    try:
        results["concurrency"] = concurrency(app_backend, messages, args.tokens, args.users)
    finally:
        if fast.fast is not None:
            fast.fast.close()


def concurrency(backend: Any, messages: list, tokens: int, users: int) -> dict[str, Any]:
    from ..core import GenParams

    params = GenParams(max_new_tokens=tokens, temperature=0)

    def one(out: list, idx: int) -> None:
        t0 = time.perf_counter()
        first = None
        n = 0
        for c in backend.stream(messages, params):
            if c.text and first is None:
                first = time.perf_counter()
            if c.usage is not None:
                n = c.usage.output_tokens
        out[idx] = _figures("", n, t0, first, time.perf_counter())

    def wave(k: int) -> dict[str, Any]:
        out: list = [None] * k
        wall = _run_together([lambda i=i: one(out, i) for i in range(k)])
        total = sum(o["tokens"] for o in out)
        speeds = [o["tokens_per_s"] for o in out if o["tokens_per_s"]]
        return {"users": k, "aggregate_tokens_per_s": total / wall, "wall_s": wall, "tokens": total,
                "per_user_tokens_per_s": speeds, "ttft_s": [o["ttft_s"] for o in out],
                "slowest_over_fastest": (min(speeds) / max(speeds)) if speeds else None}

    one_user = wave(1)
    many = wave(users)
    base = one_user["aggregate_tokens_per_s"]
    res = {"one": one_user, "many": many, "ratio": many["aggregate_tokens_per_s"] / base if base else 0.0}
    print(f"  concurrency: 1 user {one_user['aggregate_tokens_per_s']:.1f} tok/s; {users} users "
          f"{many['aggregate_tokens_per_s']:.1f} tok/s aggregate ({res['ratio']:.2f}x), slowest/fastest "
          f"{_fmt(many['slowest_over_fastest'], 2)}", flush=True)
    return res


# ------------------------------------------------------------------------------------- app figures
def _run_together(jobs: list[Callable[[], None]]) -> float:
    """Run every job in its own thread, all released at the same instant; the seconds from that instant
    until the last one ends (the wall time of a wave of concurrent users)."""
    start = threading.Event()

    def released(job: Callable[[], None]) -> None:
        start.wait()
        job()

    threads = [threading.Thread(target=released, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``app.py`` (or ``command``) in a subprocess on a free port, with its own cache dir; timings of its start."""

    def __init__(self, cache_dir: Path, users: int, extra_env: dict[str, str] | None = None, *,
                 command: list[str] | None = None, cwd: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port),
                   LLM_LEVELS_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1", LOCAL_CONCURRENCY=str(users),
                   GRADIO_ANALYTICS_ENABLED="False", **(extra_env or {}))
        root = Path(__file__).resolve().parents[2]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llm-levels-bench-", suffix=".log", delete=False)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(command or [sys.executable, str(root / "app.py")], cwd=cwd or root, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_page(self, timeout: float) -> float:
        return self._poll(lambda: _http(self.url + "/", timeout=5) == 200, timeout, "the page")

    def wait_ready(self, timeout: float) -> float:
        body = json.dumps({"model": "local", "max_tokens": 1, "temperature": 0,
                           "messages": [{"role": "user", "content": "Hi"}]}).encode()
        return self._poll(lambda: _http(self.url + "/v1/chat/completions", body, timeout=60) == 200, timeout,
                          "a ready model")

    def _poll(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited while waiting for {what}; log: {self.log.name}")
            try:
                if check():
                    return time.perf_counter() - self.t0
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no {what} within {timeout:.0f} s; log: {self.log.name}")

    def peak_rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _http(url: str, body: bytes | None = None, timeout: float = 5) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


#: Warm starts measured (the median is reported).
WARM_STARTS = 3


def app_sections(args: argparse.Namespace, settings: Any, results: dict[str, Any]) -> None:
    cache = Path(tempfile.mkdtemp(prefix="llm-levels-bench-cache-"))
    startup: dict[str, Any] = {}
    try:
        # First start: an empty cache dir, so the GGUF is converted (and the hash index built).
        app = AppProcess(cache, args.users)
        try:
            startup["first_page_s"] = app.wait_page(180)
            startup["first_ready_s"] = app.wait_ready(600)
        finally:
            app.stop()
        print(f"  first start: page {startup['first_page_s']:.1f} s, model ready {startup['first_ready_s']:.1f} s",
              flush=True)
        # Warm starts (the converted model and the int8 matrices are on disk now): WARM_STARTS of them, the
        # median reported; the last one stays up for the streaming figures.
        pages: list[float] = []
        readies: list[float] = []
        for i in range(WARM_STARTS):
            app = AppProcess(cache, args.users)
            try:
                pages.append(app.wait_page(120))
                readies.append(app.wait_ready(300))
            except BaseException:
                app.stop()
                raise
            print(f"  warm start {i + 1}: page {pages[-1]:.1f} s, model ready {readies[-1]:.1f} s", flush=True)
            if i < WARM_STARTS - 1:
                app.stop()
        startup.update(warm_page_s=statistics.median(pages), warm_ready_s=statistics.median(readies),
                       warm_page_all_s=pages, warm_ready_all_s=readies)
        try:
            results["startup"] = startup
            results["streaming"] = gradio_streaming(app.url, args)
            results["app_concurrency"] = gradio_concurrency(app.url, args)
            results["memory"] = {"app_peak_rss_mb": app.peak_rss_mb()}
            print(f"  app peak RSS {results['memory']['app_peak_rss_mb']:.0f} MB", flush=True)
        finally:
            app.stop()
    finally:
        results.setdefault("startup", startup)
        shutil.rmtree(cache, ignore_errors=True)


def client_turn(client: Any, api_name: str, values: list, has_text: Callable[[Any], bool]
                ) -> tuple[float, float | None, float, Any]:
    """One call through ``gradio_client``: (start, first output with text, end, final outputs)."""
    t0 = time.perf_counter()
    job = client.submit(*values, api_name=api_name)
    first = None
    last_out = None
    for out in job:
        now = time.perf_counter()
        last_out = out
        if first is None and has_text(out):
            first = now
    end = time.perf_counter()
    return t0, first, end, (job.outputs()[-1] if job.outputs() else last_out)


def sse_turn(url: str, api_name: str, values: list, has_text: Callable[[Any], bool]
             ) -> tuple[float, float | None, float, Any]:
    """One call the way the page itself streams it: join Gradio's queue over HTTP and read the server-sent
    events as they arrive (``gradio_client`` instead polls its inbox every 50 ms, see gradio_floor.py).
    ``values`` are the event's inputs without its ``gr.State`` ones (the server keeps those)."""
    import uuid

    import httpx
    from gradio_client.utils import apply_diff

    root = url.rstrip("/")
    cfg = httpx.get(root + "/config", timeout=10).json()
    dep = next(d for d in cfg["dependencies"] if d.get("api_name") == api_name)
    fn_index = dep.get("id", cfg["dependencies"].index(dep))
    kinds = {c["id"]: c["type"] for c in cfg["components"]}
    given = iter(values)
    data = [None if kinds[i] == "state" else next(given) for i in dep["inputs"]]
    session = uuid.uuid4().hex[:12]
    first = None
    outputs: list | None = None
    final: Any = None
    with httpx.Client(timeout=120) as client:
        t0 = time.perf_counter()
        client.post(root + "/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                          "session_hash": session}).raise_for_status()
        with client.stream("GET", root + "/gradio_api/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_generating":
                    diffs = msg["output"]["data"]
                    outputs = list(diffs) if outputs is None else [apply_diff(v, d) for v, d in zip(outputs, diffs)]
                    if first is None and has_text(outputs):
                        first = time.perf_counter()
                elif msg.get("msg") == "process_completed":
                    final = msg.get("output", {}).get("data") or []
                    break
    return t0, first, time.perf_counter(), final


# The Local tab's send inputs (its gr.State ones left out): the text, system prompt, sample (off: greedy),
# temperature (unused when greedy), top-k, top-p, repetition penalty, max new tokens, seed.
def _local_values(prompt: str, tokens: int) -> list:
    return [prompt, "", False, 0.7, 0, 1.0, 1.0, tokens, ""]


def _answer_on_screen(outputs: Any) -> bool:
    hist = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else None
    return bool(_assistant_text(hist))


def _turn_figures(turn: tuple[float, float | None, float, Any]) -> dict[str, Any]:
    """What the client saw and what the app measured for one Local-tab turn."""
    t0, first, end, final = turn
    row = _metrics_row(final)
    n = int(row["Out tokens"]) if row else 0
    return {"client": _figures("", n, t0, first, end),
            "app": {"ttft_s": row.get("TTFT (s)") if row else None,
                    "tokens_per_s": row.get("Tokens/s") if row else None, "tokens": n}}


def _local_send(client: Any, prompt: str, tokens: int) -> dict[str, Any]:
    """One Local-tab turn through the Gradio API: what the client sees, and what the app measured."""
    return _turn_figures(client_turn(client, "/local_send", _local_values(prompt, tokens), _answer_on_screen))


def _sse_send(url: str, prompt: str, tokens: int) -> dict[str, Any]:
    """One Local-tab turn read as server-sent events, as the page reads it."""
    return _turn_figures(sse_turn(url, "local_send", _local_values(prompt, tokens), _answer_on_screen))


def _assistant_text(hist: Any) -> str:
    """The answer being streamed: the last message, when it is the assistant's (not a titled note)."""
    if not isinstance(hist, list) or not hist:
        return ""
    m = hist[-1]
    if isinstance(m, dict) and m.get("role") == "assistant" and not (m.get("metadata") or {}).get("title"):
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
        return content or ""
    return ""


def _metrics_row(final: Any) -> dict[str, Any] | None:
    if not isinstance(final, (list, tuple)):
        return None
    for item in final:
        if isinstance(item, dict) and "headers" in item and "data" in item and item["data"]:
            return dict(zip(item["headers"], item["data"][-1]))
    return None


#: Extra short turns (16 tokens) per consumer for the TTFT figures: a first token seen through
#: gradio_client lands anywhere in its reader's 50 ms sleep, so a median needs more than 3 turns.
TTFT_TURNS = 10


def gradio_streaming(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Streaming overhead through the app, seen by two consumers of the Local tab's ``local_send``:
    ``gradio_client`` (a new client, i.e. a new session and an empty conversation, per turn) and a plain
    HTTP consumer of the queue's server-sent events, as the page itself streams them.

    Tokens/s: ``--runs`` turns of ``--tokens``. TTFT: those turns plus :data:`TTFT_TURNS` short ones. Then
    the same consumers on a do-nothing Gradio app (:mod:`.gradio_floor`): the part of the extra TTFT
    that any Gradio app costs them.
    """
    from gradio_client import Client

    from . import gradio_floor

    _local_send(Client(url, verbose=False), args.prompt, 8)  # warm-up
    out: dict[str, Any] = {}
    for name, send in (("gradio_client", lambda n: _local_send(Client(url, verbose=False), args.prompt, n)),
                       ("http", lambda n: _sse_send(url, args.prompt, n))):
        runs = [send(args.tokens) for _ in range(args.runs)]
        short = [send(16) for _ in range(TTFT_TURNS)]
        c_tps = statistics.median([r["client"]["tokens_per_s"] or 0 for r in runs])
        a_tps = statistics.median([float(r["app"]["tokens_per_s"] or 0) for r in runs])
        every = runs + short
        c_ttft = statistics.median([r["client"]["ttft_s"] or 0 for r in every])
        a_ttft = statistics.median([float(r["app"]["ttft_s"] or 0) for r in every])
        extra = statistics.median([((r["client"]["ttft_s"] or 0) - float(r["app"]["ttft_s"] or 0)) * 1000
                                   for r in every])
        out[name] = {"client_tokens_per_s": c_tps, "app_tokens_per_s": a_tps,
                     "ratio": c_tps / a_tps if a_tps else None, "client_ttft_s": c_ttft, "app_ttft_s": a_ttft,
                     "extra_ttft_ms": extra, "ttft_turns": len(every), "runs": runs}
        print(f"  streaming via {name}: {c_tps:.1f} tok/s seen vs {a_tps:.1f} measured in the app "
              f"({_fmt(out[name]['ratio'], 2)}x); TTFT extra {extra:.0f} ms (median of {len(every)} turns)",
              flush=True)
    floor = gradio_floor.measure(runs=2 * TTFT_TURNS)
    for name in ("gradio_client", "http"):
        print(f"  do-nothing Gradio app via {name}: TTFT extra {floor[name]['extra_ttft_ms']:.0f} ms "
              f"(min {floor[name]['min_ms']:.0f}, max {floor[name]['max_ms']:.0f}, {floor['runs']} turns)", flush=True)
    # Top-level keys: the gradio_client figures (the consumer), as in earlier result files.
    res = {k: v for k, v in out["gradio_client"].items()}
    res["http"] = {k: v for k, v in out["http"].items()}
    res["floor"] = floor
    return res


def gradio_concurrency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from gradio_client import Client

    def wave(k: int) -> dict[str, Any]:
        clients = [Client(url, verbose=False) for _ in range(k)]
        out: queue.Queue = queue.Queue()

        def user(c: Any) -> None:
            try:
                out.put(_local_send(c, args.prompt, args.tokens))
            except Exception as e:  # noqa: BLE001
                out.put(e)

        wall = _run_together([lambda c=c: user(c) for c in clients])
        got = [out.get() for _ in range(k)]
        errors = [repr(g) for g in got if isinstance(g, Exception)]
        ok = [g for g in got if not isinstance(g, Exception)]
        tokens = sum(g["client"]["tokens"] for g in ok)
        speeds = [g["client"]["tokens_per_s"] for g in ok if g["client"]["tokens_per_s"]]
        return {"users": k, "aggregate_tokens_per_s": tokens / wall, "wall_s": wall, "errors": errors,
                "per_user_tokens_per_s": speeds,
                "slowest_over_fastest": min(speeds) / max(speeds) if speeds else None}

    one, many = wave(1), wave(args.users)
    base = one["aggregate_tokens_per_s"]
    res = {"one": one, "many": many, "ratio": many["aggregate_tokens_per_s"] / base if base else 0.0}
    print(f"  app concurrency (gradio_client): 1 user {one['aggregate_tokens_per_s']:.1f} tok/s; "
          f"{args.users} users {many['aggregate_tokens_per_s']:.1f} tok/s ({res['ratio']:.2f}x)", flush=True)
    return res


# ------------------------------------------------------------------------------------------- table
def _fmt(x: Any, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (what ``bench/RESULTS.md`` shows)."""
    lines = ["| configuration | decode tok/s (median) | × naive | TTFT ms | tokens |", "|---|---:|---:|---:|---:|"]
    for r in results.get("decode", []):
        lines.append(f"| {r['config']} | {_fmt(r['tokens_per_s'], 1)} | {_fmt(r['speedup'], 2)} | "
                     f"{_fmt(r['ttft_s'] * 1000 if r['ttft_s'] is not None else None, 0)} | {_fmt(r['tokens'], 0)} |")
    lines += ["", "| figure | value |", "|---|---:|"]
    c = results.get("concurrency")
    if c:
        lines.append(f"| backend: 1 user, tok/s | {c['one']['aggregate_tokens_per_s']:.1f} |")
        lines.append(f"| backend: {c['many']['users']} users at once, aggregate tok/s | "
                     f"{c['many']['aggregate_tokens_per_s']:.1f} ({c['ratio']:.2f}×) |")
        lines.append(f"| backend: slowest / fastest user | {_fmt(c['many']['slowest_over_fastest'], 2)} |")
    s = results.get("startup") or {}
    for key, label in (("first_page_s", "first start: page served, s"), ("first_ready_s", "first start: model ready, s"),
                       ("warm_page_s", "warm start: page served, s"), ("warm_ready_s", "warm start: model ready, s")):
        if key in s:
            every = s.get(key.replace("_s", "_all_s")) or []
            runs = f" (median of {' / '.join(f'{v:.1f}' for v in every)})" if len(every) > 1 else ""
            lines.append(f"| {label} | {s[key]:.1f}{runs} |")
    st = results.get("streaming")
    if st:
        lines.append(f"| gradio_client tok/s vs app's own | {st['client_tokens_per_s']:.1f} vs "
                     f"{st['app_tokens_per_s']:.1f} ({_fmt(st['ratio'], 2)}×) |")
        fl = st.get("floor") or {}
        floor_of = lambda name: (f" (do-nothing Gradio app: {fl[name]['extra_ttft_ms']:.0f})"  # noqa: E731
                                 if name in fl else "")
        lines.append(f"| gradio_client TTFT extra, ms | {st['extra_ttft_ms']:.0f}{floor_of('gradio_client')} |")
        h = st.get("http")
        if h:
            lines.append(f"| HTTP event-stream consumer (as the page) tok/s vs app's own | "
                         f"{h['client_tokens_per_s']:.1f} vs {h['app_tokens_per_s']:.1f} ({_fmt(h['ratio'], 2)}×) |")
            lines.append(f"| HTTP event-stream consumer TTFT extra, ms | {h['extra_ttft_ms']:.0f}{floor_of('http')} |")
    ac = results.get("app_concurrency")
    if ac:
        lines.append(f"| app (gradio_client): 1 → {ac['many']['users']} users, aggregate tok/s | "
                     f"{ac['one']['aggregate_tokens_per_s']:.1f} → {ac['many']['aggregate_tokens_per_s']:.1f} "
                     f"({ac['ratio']:.2f}×) |")
    m = results.get("memory")
    if m and m.get("app_peak_rss_mb"):
        lines.append(f"| app peak RSS (VmHWM), MB | {m['app_peak_rss_mb']:.0f} |")
    if "load_plain_s" in results:
        lines.append(f"| in-process: load (converted copy), s / fast path set-up, s | {results['load_plain_s']} / "
                     f"{results['fast_build_s']} |")
    return "\n".join(lines)


def chart_bars(results: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, tok/s) per configuration: the decode rows, then the concurrency aggregates."""
    bars = [(r["config"], r["tokens_per_s"] or 0.0) for r in results.get("decode", [])]
    c = results.get("concurrency")
    if c:
        bars.append((f"app path, {c['many']['users']} users at once (aggregate)", c["many"]["aggregate_tokens_per_s"]))
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
    width, left, row, top = 1000, 420, 46, 64
    height = top + row * len(bars) + 48
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=16)
        small = ImageFont.load_default(size=13)
    except TypeError:  # an older Pillow without sizes
        font = small = ImageFont.load_default()
    m = results.get("machine", {})
    d.text((16, 12), "SmolLM2-135M-Instruct: decode tokens/s (greedy, median)", fill="black", font=font)
    d.text((16, 36), f"{m.get('cpu', '')}, {m.get('cores', '?')} cores; {results.get('settings', {}).get('tokens')} "
           "new tokens; higher is better", fill="#555555", font=small)
    top_val = max(v for _, v in bars) or 1.0
    span = width - left - 90
    for i, (label, v) in enumerate(bars):
        y = top + i * row
        colour = "#9aa5b1" if label.startswith("naive") else ("#2b7a4b" if "users" in label else "#2f6fb3")
        d.text((16, y + 10), label[:52], fill="black", font=small)
        d.rectangle([left, y + 6, left + int(span * v / top_val), y + row - 10], fill=colour)
        d.text((left + int(span * v / top_val) + 8, y + 12), f"{v:.1f}", fill="black", font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    print(f"wrote {path}")
