"""What a first-time user sees in the first seconds after ``make run``: measured, cold and warm.

Starts ``.venv/bin/python app.py`` as a fresh process on a free port (as ``make run`` does, minus the
already-done install) and measures, from the moment the process is spawned:

- **page answers**: the first HTTP 200 for ``/`` (the user can open the page; the hosted API works);
- **model ready**: the ``model_status`` event (the status bar's data, polled with gradio_client as the
  page's timer does) first reports ``state == "ready"``;

and records every status line the bar showed on the way (what the user reads while waiting).

Two kinds of start:

- **cold**: an empty cache directory (``LLM_LEVELS_CACHE_DIR`` = a new temporary folder): the first start
  on a new machine (the default engine, llama.cpp, reads the GGUF as is, so nothing is converted; only the
  transformers engine, loaded on first use, converts it once into that cache);
- **warm**: the same cache again: every later start.

The app gets a first-time user's configuration: no ``.env`` values (every variable of ``.env.example``
set to empty = its default), no API key, the Hub offline. Python's own file caches (the OS page cache)
are not dropped, so "cold" means a cold *app* cache on a machine that has run Python before.

Usage::

    .venv/bin/python bench/first_start.py                 # 1 cold + 2 warm starts, writes bench/FIRST_START.md
    .venv/bin/python bench/first_start.py --warm 3 --out /tmp/first.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
POLL_S = 0.1
TIMEOUT_S = 300.0


@dataclass
class StartResult:
    """One measured start."""

    kind: str  # cold / warm
    page_s: float | None = None
    ready_s: float | None = None
    state: str = ""  # the last model state seen (ready, error, …)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds, status line) when it changed
    error: str = ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_env(port: int, cache_dir: Path) -> dict[str, str]:
    """A first-time user's environment: defaults for every app variable, no key, the Hub offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GRADIO_"))}
    example = ROOT / ".env.example"
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", example.read_text(), flags=re.M) if example.exists() else []
    for name in names:  # app.py's load_dotenv() never overrides a set variable: a local .env cannot leak in
        env[name] = ""
    env.update(
        {
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(port),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "LLM_LEVELS_CACHE_DIR": str(cache_dir),
        }
    )
    return env


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def status_line(data: dict) -> str:
    """The status bar's gist: state, percentage and message."""
    state = data.get("state", "?")
    frac = data.get("fraction")
    pct = f" {frac * 100:.0f}%" if isinstance(frac, (int, float)) else ""
    msg = data.get("message") or data.get("error") or ""
    return f"{state}{pct}: {msg}".strip(": ")


def measure_start(kind: str, cache_dir: Path, log_path: Path) -> StartResult:
    """Spawn the app, time the page and the model, stop it."""
    from gradio_client import Client  # imported before the clock starts: not part of the app's start

    res = StartResult(kind)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(PY), "app.py"],
            cwd=ROOT,
            env=fresh_env(port, cache_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = t0 + TIMEOUT_S
        while not page_answers(url):
            if proc.poll() is not None or time.perf_counter() > deadline:
                res.error = f"the page never answered (exit {proc.poll()}); see {log_path}"
                return res
            time.sleep(POLL_S)
        res.page_s = time.perf_counter() - t0
        client = Client(url, verbose=False)
        last = None
        while time.perf_counter() < deadline:
            _html, data, *_ = client.predict(api_name="/model_status")
            line = status_line(data)
            if line != last:
                res.timeline.append((time.perf_counter() - t0, line))
                last = line
            res.state = data.get("state", "")
            if res.state == "ready":
                res.ready_s = time.perf_counter() - t0
                break
            if res.state == "error":
                res.error = data.get("error") or "model load failed"
                break
            time.sleep(POLL_S)
        else:
            res.error = "the model was not ready in time"
        client.close()
        return res
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(results: list[StartResult]) -> str:
    lines = ["| start | page answers (s) | model ready (s) | final state |", "|---|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.kind} | {fmt(r.page_s)} | {fmt(r.ready_s)} | {r.state or r.error} |")
    return "\n".join(lines)


def report(results: list[StartResult], command: str) -> str:
    cpu = os.cpu_count()
    out = [
        "# First start: what a first-time user sees after `make run`",
        "",
        f"Measured by `{command}` on {platform.machine()} with {cpu} CPU cores "
        f"(Python {platform.python_version()}), from spawning `.venv/bin/python app.py` (the install done).",
        "**Page answers** = first HTTP 200 for `/`; **model ready** = the status bar's `model_status` event first "
        "says `ready` (the default engine, llama.cpp). *Cold* = empty `LLM_LEVELS_CACHE_DIR` (first start ever; "
        "llama.cpp reads the GGUF as is, nothing is converted); *warm* = the same cache again. The machine is "
        "shared, so timings are noisy.",
        "",
        table(results),
        "",
        "## What the status bar said",
        "",
        "The page is usable from the moment it answers: the Chat tab, the Hosted API tab (with a key) and "
        "Compare work at once; a local request waits with a visible \"loading (NN%)\" note.",
        "",
    ]
    for r in results:
        out += [f"### {r.kind} start", "", "| t (s) | status |", "|---:|---|"]
        out += [f"| {t:.1f} | {line.replace('|', '/')} |" for t, line in r.timeline]
        if r.error:
            out.append(f"| — | error: {r.error} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", type=int, default=2, help="warm starts after the cold one (default 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "FIRST_START.md", help="Markdown report")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    cache = Path(tempfile.mkdtemp(prefix="llm-levels-first-start-"))
    logs = Path(tempfile.mkdtemp(prefix="llm-levels-first-start-logs-"))
    results: list[StartResult] = []
    try:
        for i in range(1 + args.warm):
            kind = "cold" if i == 0 else "warm"
            r = measure_start(kind, cache, logs / f"{kind}-{i}.log")
            results.append(r)
            print(f"{kind:>4}: page {fmt(r.page_s)} s, model ready {fmt(r.ready_s)} s {r.error}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print()
    print(table(results))
    command = ".venv/bin/python bench/first_start.py" + (f" --warm {args.warm}" if args.warm != 2 else "")
    args.out.write_text(report(results, command) + "\n")
    print(f"\nwrote {args.out} (app logs in {logs})")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0 if all(r.ready_s is not None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
