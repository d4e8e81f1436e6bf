"""Memory and time per new Gradio session in the real app: Gradio's own SessionState vs LeanSessionState.

Each mode runs in a fresh process: the app (``webapp.create_app``; no model is loaded) served by uvicorn,
then ``--sessions`` new sessions, each one cheap event (``chat_clear``) over plain HTTP; the process's
RSS before and after (after ``gc.collect()``), the deep size of a session (``bench/mem_probe.py``), and the
time per request. ``gradio`` swaps Gradio's own ``StateHolder`` class back in after mounting.

    .venv/bin/python bench/session_memory.py --sessions 320
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(mode: str, sessions: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import httpx
    import uvicorn
    from gradio.state_holder import StateHolder

    from bench.mem_probe import rss_mb, session_size_bytes
    from llm_levels.config import Settings
    from llm_levels.web import app as webapp
    from tests.fixtures.katan import free_port

    app, _runtime = webapp.create_app(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "100000"}))
    demo = app.state.sessions.blocks
    if mode == "gradio":
        demo.state_holder.__class__ = StateHolder
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    root = f"http://127.0.0.1:{port}"
    dep = next(d for d in httpx.get(root + "/config").json()["dependencies"] if d.get("api_name") == "chat_clear")

    def one(http: httpx.Client) -> None:
        session = uuid.uuid4().hex[:12]
        http.post(
            root + "/gradio_api/queue/join",
            json={"data": [None] * len(dep["inputs"]), "fn_index": dep["id"], "session_hash": session},
        ).raise_for_status()
        with http.stream("GET", root + "/gradio_api/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                    return

    with httpx.Client(timeout=30) as http:
        for _ in range(20):  # warm-up: Gradio's and httpx's own first-use allocations
            one(http)
        gc.collect()
        time.sleep(1)
        before = rss_mb()
        t0 = time.perf_counter()
        for _ in range(sessions):
            one(http)
        elapsed = time.perf_counter() - t0
        gc.collect()
        time.sleep(1)
        after = rss_mb()
    server.should_exit = True
    return {
        "mode": mode,
        "sessions_held": len(demo.state_holder.session_data),
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_kb_per_session": (after - before) * 1024 / sessions,
        "deep_kb_per_session": (session_size_bytes(demo) or 0) / 1024,
        "ms_per_request": elapsed / sessions * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=320)
    p.add_argument("--mode", choices=("gradio", "lean"), help=argparse.SUPPRESS)  # one process per mode
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.mode, args.sessions)), flush=True)
        os._exit(0)  # the server thread and the runtime's threads need no orderly shutdown here
    for mode in ("gradio", "lean"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--sessions", str(args.sessions)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{mode:7} RSS {r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} MB over {args.sessions} new sessions: "
            f"{r['rss_kb_per_session']:.0f} KB/session (deep size {r['deep_kb_per_session']:.0f} KB); "
            f"{r['ms_per_request']:.1f} ms per request; {r['sessions_held']} sessions held"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
