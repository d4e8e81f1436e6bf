"""The bench sections that start the real app (``app.py``) in a subprocess, and their helpers.

- :class:`AppProcess`: ``app.py`` (or another command) on a free port, its log in a temporary file, its
  start timed from the moment the process is spawned.
- :func:`sse_turn`: one event through Gradio's queue read as server-sent events over plain HTTP, the way
  the page's own JavaScript client streams it; :func:`client_turn`: the same through ``gradio_client``.
- :func:`app_sections`: warm starts (page, llama.cpp ready, median of :data:`WARM_STARTS`), streaming
  through the page (the Local tab's ``local_send``, read as an event stream) against the app's own
  figures for the same turn, the do-nothing Gradio app for comparison (``gradio_floor.py``), and the
  app's memory with llama.cpp alone and after the transformers engine is loaded too (one ``/v1`` request
  with model ``local-transformers``).

Every step that goes through the page depends on the UI's current shape (the Local tab's inputs, its
metrics table, the status bar's ``model_status`` event). A step that fails is recorded with its error in
the results (``errors``) and the other steps still run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Warm starts measured (the median is reported); the last one stays up for the streaming figures.
WARM_STARTS = 3
#: Extra short turns (16 tokens) per consumer for the TTFT-extra median.
TTFT_TURNS = 10


# ------------------------------------------------------------------------------------------ helpers
def run_together(jobs: list[Callable[[], None]]) -> float:
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


def figures(text: str, n: int, t0: float, first: float | None, end: float) -> dict[str, Any]:
    """TTFT, total time and decode tokens/s ((n - 1) tokens over the time after the first text)."""
    ttft = (first - t0) if first is not None else None
    decode_s = end - (first if first is not None else t0)
    tps = (n - 1) / decode_s if n > 1 and decode_s > 0 else None
    return {"text": text, "tokens": n, "ttft_s": ttft, "total_s": end - t0, "tokens_per_s": tps}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a JSON POST when ``body`` is given; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def status_mb(pid: int, field: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of a process, in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class AppProcess:
    """``app.py`` (or ``command``) in a subprocess on a free port; timings of its start from the spawn."""

    def __init__(
        self,
        cache_dir: Path,
        users: int,
        extra_env: dict[str, str] | None = None,
        *,
        command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            GRADIO_SERVER_NAME="127.0.0.1",
            GRADIO_SERVER_PORT=str(self.port),
            LLM_LEVELS_CACHE_DIR=str(cache_dir),
            HF_HUB_OFFLINE="1",
            LOCAL_CONCURRENCY=str(users),
            GRADIO_ANALYTICS_ENABLED="False",
            **(extra_env or {}),
        )
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llm-levels-bench-", suffix=".log", delete=False)
        self.keep_log = False  # kept only when an error message points to it
        self.spawned_at = time.time()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            command or [sys.executable, str(ROOT / "app.py")],
            cwd=cwd or ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_page(self, timeout: float) -> float:
        """Seconds from the spawn to the first HTTP 200 for ``/``."""
        return self.poll(lambda: http(self.url + "/", timeout=5)[0] == 200, timeout, "the page")

    def poll(self, check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                self.keep_log = True
                tail = " | ".join(self.log_text().strip().splitlines()[-3:])[-300:]
                raise RuntimeError(f"the app exited while waiting for {what} ({tail}); log: {self.log.name}")
            try:
                if check():
                    return time.perf_counter() - self.t0
            except (urllib.error.URLError, OSError, TimeoutError, ValueError):
                pass
            time.sleep(every)
        self.keep_log = True
        raise RuntimeError(f"no {what} within {timeout:.0f} s; log: {self.log.name}")

    def log_text(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""

    def log_event_s(self, pattern: str) -> float | None:
        """Seconds from the spawn to the first log line matching ``pattern`` (by the line's own timestamp,
        ``logging``'s default ``YYYY-MM-DD HH:MM:SS,mmm``)."""
        for line in self.log_text().splitlines():
            if re.search(pattern, line):
                m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
                if m:
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
                    return at - self.spawned_at
        return None

    def peak_rss_mb(self) -> float | None:
        return status_mb(self.proc.pid, "VmHWM")

    def rss_mb(self) -> float | None:
        return status_mb(self.proc.pid, "VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        if not self.keep_log:
            Path(self.log.name).unlink(missing_ok=True)


# ------------------------------------------------------------------------- Gradio, as clients see it
def gradio_config(url: str) -> dict[str, Any]:
    status, body = http(url.rstrip("/") + "/config", timeout=10)
    if status != 200:
        raise RuntimeError(f"GET /config answered HTTP {status}")
    return json.loads(body)


def dependency(cfg: dict[str, Any], api_name: str) -> tuple[dict[str, Any], int]:
    """The event with ``api_name`` in a Gradio config, and its fn_index."""
    for i, d in enumerate(cfg["dependencies"]):
        if d.get("api_name") == api_name:
            return d, d.get("id", i)
    raise RuntimeError(f"the app has no event with api_name {api_name!r}")


def sse_turn(
    url: str,
    api_name: str,
    values: list | Callable[[dict[str, Any], dict[str, Any]], list],
    has_text: Callable[[Any], bool],
) -> tuple[float, float | None, float, Any]:
    """One call the way the page itself streams it: join Gradio's queue over HTTP and read the server-sent
    events as they arrive. ``values`` are the event's inputs without its ``gr.State`` ones (the server keeps
    those), or a function of (config, dependency) giving every input (``None`` for states).

    Returns (start, first outputs with text, end, final outputs).
    """
    import httpx
    from gradio_client.utils import apply_diff

    root = url.rstrip("/")
    cfg = gradio_config(root)
    dep, fn_index = dependency(cfg, api_name)
    if callable(values):
        data = values(cfg, dep)
    else:
        kinds = {c["id"]: c["type"] for c in cfg["components"]}
        given = iter(values)
        data = [None if kinds[i] == "state" else next(given) for i in dep["inputs"]]
    session = uuid.uuid4().hex[:12]
    first = None
    outputs: list | None = None
    final: Any = None
    with httpx.Client(timeout=120) as client:
        t0 = time.perf_counter()
        client.post(
            root + "/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session}
        ).raise_for_status()
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
                    out = msg.get("output") or {}
                    if not msg.get("success", True) or out.get("error"):
                        raise RuntimeError(f"{api_name} failed in the app: {out.get('error') or out}")
                    final = out.get("data") or []
                    break
    return t0, first, time.perf_counter(), final


def client_turn(
    client: Any, api_name: str, values: list, has_text: Callable[[Any], bool]
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


# --------------------------------------------------------------------------------- the Local tab
def local_inputs(prompt: str, tokens: int, engine: str = "llama.cpp") -> Callable[[dict, dict], list]:
    """The Local tab's ``local_send`` inputs, found by the components' labels (the tab is changing: any
    input not named here gets its component's default value): the message, no system prompt, greedy
    (``do_sample`` off), ``max_new_tokens``, no seed, the engine."""

    def build(cfg: dict[str, Any], dep: dict[str, Any]) -> list:
        comps = {c["id"]: c for c in cfg["components"]}
        data: list = []
        message_given = False
        for cid in dep["inputs"]:
            c = comps[cid]
            props = c.get("props") or {}
            label = str(props.get("label") or "").strip().lower()
            kind = c.get("type")
            if kind == "state":
                data.append(None)
            elif label == "system prompt":
                data.append("")
            elif label in ("do_sample", "sample"):
                data.append(False)
            elif label in ("max_new_tokens", "max new tokens"):
                data.append(tokens)
            elif label == "seed":
                data.append("")
            elif label == "engine":
                data.append(engine)
            elif kind in ("textbox", "multimodaltextbox") and not message_given:
                data.append(prompt)
                message_given = True
            else:
                data.append(props.get("value"))
        if not message_given:
            raise RuntimeError("local_send has no message text box among its inputs")
        return data

    return build


def assistant_text(hist: Any) -> str:
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


def answer_on_screen(outputs: Any) -> bool:
    hist = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else None
    return bool(assistant_text(hist))


def metrics_row(final: Any) -> dict[str, Any] | None:
    """The last row of the turn's metrics table (a Dataframe output: headers + data) as a dict."""
    if not isinstance(final, (list, tuple)):
        return None
    for item in final:
        if isinstance(item, dict) and "headers" in item and "data" in item and item["data"]:
            return dict(zip(item["headers"], item["data"][-1]))
    return None


def _pick(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if n in row:
            return row[n]
    low = {k.lower(): v for k, v in row.items()}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None


def turn_figures(turn: tuple[float, float | None, float, Any]) -> dict[str, Any]:
    """What the client saw and what the app measured for one Local-tab turn."""
    t0, first, end, final = turn
    row = metrics_row(final)
    if row is None:
        raise RuntimeError("the turn's final outputs hold no metrics table (the Local tab changed?)")
    n = int(float(_pick(row, "Out tokens", "Output tokens") or 0))
    ttft, tps = _pick(row, "TTFT (s)", "TTFT"), _pick(row, "Tokens/s", "tok/s")
    hist = final[0] if final else None
    return {
        "client": figures("", n, t0, first, end),
        "app": {
            "ttft_s": float(ttft) if ttft not in (None, "") else None,
            "tokens_per_s": float(tps) if tps not in (None, "") else None,
            "tokens": n,
        },
        "text": assistant_text(hist),
    }


def sse_local_send(url: str, prompt: str, tokens: int) -> dict[str, Any]:
    """One Local-tab turn read as server-sent events, as the page reads it."""
    return turn_figures(sse_turn(url, "local_send", local_inputs(prompt, tokens), answer_on_screen))


def client_local_values(url: str, prompt: str, tokens: int) -> list:
    """The Local tab's ``local_send`` inputs for ``gradio_client`` (its non-state ones, found by label)."""
    cfg = gradio_config(url)
    dep, _ = dependency(cfg, "local_send")
    kinds = {c["id"]: c["type"] for c in cfg["components"]}
    return [v for v, cid in zip(local_inputs(prompt, tokens)(cfg, dep), dep["inputs"]) if kinds[cid] != "state"]


def client_local_send(client: Any, values: list) -> dict[str, Any]:
    """One Local-tab turn through ``gradio_client`` (``values``: :func:`client_local_values`)."""
    return turn_figures(client_turn(client, "/local_send", values, answer_on_screen))


# ----------------------------------------------------------------------------------- readiness
def model_status(url: str) -> dict[str, Any]:
    """The status bar's data (``model_status``, not queued): {state, fraction, message, error, model}."""
    status, body = http(url + "/gradio_api/run/model_status", json.dumps({"data": []}).encode(), timeout=10)
    if status != 200:
        raise RuntimeError(f"model_status answered HTTP {status}: {body[:300].decode(errors='replace')}")
    data = json.loads(body).get("data") or []
    info = next((d for d in data if isinstance(d, dict) and "state" in d), None)
    if info is None:
        raise RuntimeError(f"model_status returned no status dict: {str(data)[:300]}")
    return info


def v1_answer(url: str, model: str = "local", max_tokens: int = 1, timeout: float = 300) -> tuple[int, dict]:
    body = json.dumps(
        {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()
    status, raw = http(url + "/v1/chat/completions", body, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"raw": raw[:300].decode(errors="replace")}


def wait_ready(app: AppProcess, timeout: float) -> dict[str, Any]:
    """Seconds from the spawn until the llama.cpp engine is ready, as the page sees it (``model_status``
    says ``ready``); when that event fails, the first answered ``/v1`` request instead (and why)."""
    out: dict[str, Any] = {"how": "model_status"}
    seen: list[dict[str, Any]] = []
    errors: list[str] = []

    def ready() -> bool:
        try:
            info = model_status(app.url)
        except RuntimeError as e:
            errors.append(str(e))
            raise  # a broken status event will not mend itself: fall back at once
        seen.append(info)
        if info.get("state") == "error":
            raise RuntimeError(f"the local model failed to load: {info.get('error') or info.get('message')}")
        return info.get("state") == "ready"

    try:
        out["ready_s"] = app.poll(ready, timeout, "a ready model (model_status)")
        out["model"] = seen[-1].get("model") if seen else None
    except RuntimeError as e:
        if not errors:
            raise
        out["how"] = "first /v1 answer"
        out["model_status_error"] = errors[-1][:300]
        out["ready_s"] = app.poll(lambda: v1_answer(app.url, timeout=60)[0] == 200, timeout, "a ready model (/v1)")
        print(f"  model_status failed ({e}); readiness taken from the first /v1 answer", flush=True)
    out["engine_log_s"] = app.log_event_s(r"llama\.cpp ready")
    m = re.search(r"llama\.cpp ready: .* in ([0-9.]+) s", app.log_text())
    out["engine_load_s"] = float(m.group(1)) if m else None
    return out


# ------------------------------------------------------------------------------------ the sections
def mark_load(results: dict[str, Any], section: str) -> None:
    """The 1-minute load average as a section starts (the machine is shared: context for its figures)."""
    results.setdefault("load_average_by_section", {})[section] = round(os.getloadavg()[0], 2)


def app_sections(args: Any, settings: Any, results: dict[str, Any], floor_module: Any) -> None:
    """Warm starts, streaming through the page, the floor, memory: into ``results["app"]``."""
    app_res: dict[str, Any] = {"errors": {}}
    mark_load(results, "app_starts")
    results["app"] = app_res
    cache = Path(settings.cache_dir)  # the transformers engine's converted copy is there (the decode section made it)
    pages: list[float] = []
    readies: list[float] = []
    app: AppProcess | None = None
    try:
        for i in range(WARM_STARTS):
            app = AppProcess(cache, args.users)
            try:
                pages.append(app.wait_page(120))
                r = wait_ready(app, 300)
            except BaseException:
                app.stop()
                raise
            readies.append(r["ready_s"])
            app_res.setdefault("readiness", r["how"])
            if "model_status_error" in r:
                app_res["errors"]["model_status"] = r["model_status_error"]
            app_res.setdefault("engine_log_s", []).append(r.get("engine_log_s"))
            app_res.setdefault("engine_load_s", []).append(r.get("engine_load_s"))
            app_res["status_model"] = r.get("model")
            print(
                f"  start {i + 1}: page {pages[-1]:.2f} s, llama.cpp ready {readies[-1]:.2f} s ({r['how']}"
                + (f"; 'llama.cpp ready' logged at {r['engine_log_s']:.2f} s" if r.get("engine_log_s") else "")
                + ")",
                flush=True,
            )
            if i < WARM_STARTS - 1:
                app.stop()
                app = None
        after = [max(0.0, r - p) for p, r in zip(pages, readies)]
        app_res["startup"] = {
            "page_s": statistics.median(pages),
            "ready_s": statistics.median(readies),
            "ready_after_page_s": statistics.median(after),
            "page_all_s": pages,
            "ready_all_s": readies,
            "ready_after_page_all_s": after,
        }
        assert app is not None
        app_res["memory"] = {"rss_at_ready_mb": app.rss_mb()}
        mark_load(results, "app_streaming")
        _step(app_res, "streaming", lambda: streaming(app.url, args))
        app_res["memory"]["peak_llama_cpp_only_mb"] = app.peak_rss_mb()
        app_res["memory"]["rss_llama_cpp_only_mb"] = app.rss_mb()
        print(
            f"  app memory, llama.cpp only: peak {_mb(app_res['memory']['peak_llama_cpp_only_mb'])}, "
            f"now {_mb(app_res['memory']['rss_llama_cpp_only_mb'])}",
            flush=True,
        )
        mark_load(results, "app_transformers")
        _step(app_res, "transformers", lambda: load_transformers(app, args))
    finally:
        if app is not None:
            app.stop()
    mark_load(results, "gradio_floor")
    _step(app_res, "floor", lambda: floor(floor_module))


def _mb(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} MB"


def _step(res: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    """Run one step; on failure record its error (and say so) and carry on."""
    try:
        res[name] = fn()
    except Exception as e:  # noqa: BLE001 - the other steps still run; the report says what failed
        res["errors"][name] = f"{type(e).__name__}: {e}"[:500]
        print(f"  {name} failed: {res['errors'][name]}", file=sys.stderr, flush=True)


def streaming(url: str, args: Any) -> dict[str, Any]:
    """Local-tab turns read as an event stream (as the page): tokens/s and TTFT the consumer sees against
    the app's own figures for the same turn (its metrics row). ``--runs`` turns of ``--tokens`` for the
    speed; those plus :data:`TTFT_TURNS` short ones for the TTFT extra."""
    sse_local_send(url, args.prompt, 8)  # warm-up
    runs = [sse_local_send(url, args.prompt, args.tokens) for _ in range(args.runs)]
    short = [sse_local_send(url, args.prompt, 16) for _ in range(TTFT_TURNS)]
    c_tps = statistics.median([r["client"]["tokens_per_s"] or 0 for r in runs])
    a_tps = statistics.median([r["app"]["tokens_per_s"] or 0 for r in runs])
    every = runs + short
    extra = [((r["client"]["ttft_s"] or 0) - (r["app"]["ttft_s"] or 0)) * 1000 for r in every]
    res = {
        "client_tokens_per_s": c_tps,
        "app_tokens_per_s": a_tps,
        "ratio": c_tps / a_tps if a_tps else None,
        "client_ttft_s": statistics.median([r["client"]["ttft_s"] or 0 for r in every]),
        "app_ttft_s": statistics.median([r["app"]["ttft_s"] or 0 for r in every]),
        "extra_ttft_ms": statistics.median(extra),
        "extra_ttft_min_ms": min(extra),
        "extra_ttft_max_ms": max(extra),
        "ttft_turns": len(every),
        "tokens": [r["client"]["tokens"] for r in runs],
        "reply": runs[-1]["text"],
        "runs": [{k: v for k, v in r.items() if k != "text"} for r in runs],
    }
    print(
        f"  through the page (event stream): {c_tps:.1f} tok/s seen vs {a_tps:.1f} measured by the app "
        f"({res['ratio'] or 0:.2f}x); TTFT extra {res['extra_ttft_ms']:.0f} ms (median of {len(every)} turns)",
        flush=True,
    )
    return res


def load_transformers(app: AppProcess, args: Any) -> dict[str, Any]:
    """Load the transformers engine in the running app with one ``/v1`` request (model ``local-transformers``,
    8 tokens), then read the app's memory: llama.cpp and transformers both loaded."""
    t0 = time.perf_counter()
    status, body = v1_answer(app.url, "local-transformers", 8, timeout=600)
    took = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"/v1 with model local-transformers answered HTTP {status}: {str(body)[:300]}")
    res = {
        "how": "/v1 model local-transformers",
        "request_s": took,
        "peak_both_mb": app.peak_rss_mb(),
        "rss_both_mb": app.rss_mb(),
        "model": body.get("model"),
    }
    print(
        f"  app memory with transformers loaded too ({took:.1f} s for the request): peak "
        f"{_mb(res['peak_both_mb'])}, now {_mb(res['rss_both_mb'])}",
        flush=True,
    )
    return res


def floor(floor_module: Any) -> dict[str, Any]:
    res = floor_module.measure(runs=TTFT_TURNS, consumers=("http",))
    f = res["http"]
    print(
        f"  do-nothing Gradio app (event stream): TTFT extra {f['extra_ttft_ms']:.0f} ms "
        f"(min {f['min_ms']:.0f}, max {f['max_ms']:.0f}, {res['runs']} turns)",
        flush=True,
    )
    return res
