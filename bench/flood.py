"""A flood of tiny messages against a served app: how long the flooding request takes, and how long an
ordinary user waits meanwhile (issue 14, item 1).

Starts ``app.py`` on a free port (the bundled model, llama.cpp), waits for ``/v1`` to answer, then for
each N posts one ``/v1/chat/completions`` with N messages ``{"role": "user", "content": "x"}``
(``max_tokens=1``) and, while it runs, a one-message probe request every few tenths of a second. With
``--disconnect S`` the flooding client hangs up after S seconds and the probe measures how soon the app
serves others again.

    .venv/bin/python bench/flood.py 1000 2000 5000
    .venv/bin/python bench/flood.py 5000 --disconnect 1
    .venv/bin/python bench/flood.py 5000 --url http://127.0.0.1:7860   # an app already running

Prints one JSON line per N: the flood's status and seconds, the probe's worst and median latency, and
the app's memory before and after.
"""

from __future__ import annotations

import argparse
import http.client as httpclient
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from served_app import AppProcess, http

PROBE = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


def flood_body(n: int) -> bytes:
    return json.dumps(
        {"model": "local", "messages": [{"role": "user", "content": "x"}] * n, "max_tokens": 1, "temperature": 0}
    ).encode()


def post(url: str, body: bytes, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    status, _ = http(url + "/v1/chat/completions", body, timeout=timeout)
    return status, time.perf_counter() - t0


def post_then_hang_up(url: str, body: bytes, after_s: float) -> tuple[int, float]:
    """Send ``body``, wait ``after_s`` for an answer, then close the connection (the client gives up)."""
    u = urlparse(url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=after_s)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        status = conn.getresponse().status
    except (TimeoutError, OSError):
        status = 0  # hung up before the answer
    finally:
        conn.close()
    return status, time.perf_counter() - t0


def probe_while(url: str, busy: threading.Event, every_s: float, settle_s: float) -> list[tuple[float, float]]:
    """(start, latency) of probes sent while ``busy`` is set, then for ``settle_s`` more seconds."""
    out: list[tuple[float, float]] = []
    end_after: float | None = None
    while True:
        if not busy.is_set() and end_after is None:
            end_after = time.perf_counter() + settle_s
        if end_after is not None and time.perf_counter() > end_after:
            return out
        start = time.perf_counter()
        _, s = post(url, json.dumps(PROBE).encode(), timeout=300)
        out.append((start, s))
        time.sleep(every_s)


def run_one(url: str, n: int, disconnect: float | None, rss: callable) -> dict:
    body = flood_body(n)
    busy = threading.Event()
    busy.set()
    timed: list[tuple[float, float]] = []
    settle = 10.0 if disconnect is not None else 3.0
    prober = threading.Thread(target=lambda: timed.extend(probe_while(url, busy, 0.2, settle)), daemon=True)
    before = rss()
    prober.start()
    time.sleep(0.3)
    if disconnect is not None:
        status, seconds = post_then_hang_up(url, body, disconnect)
    else:
        status, seconds = post(url, body, timeout=600)
    ended = time.perf_counter()
    busy.clear()
    prober.join()
    probes = [s for _, s in timed]
    # Probes sent after the flooding request ended (or its client hung up): does the app serve others at once?
    after = [s for start, s in timed if start >= ended]
    return {
        "messages": n,
        "body_kb": round(len(body) / 1024, 1),
        "status": status,
        "flood_s": round(seconds, 3),
        "probe_max_s": round(max(probes), 3) if probes else None,
        "probe_median_s": round(statistics.median(probes), 3) if probes else None,
        "probes": len(probes),
        "probe_max_after_end_s": round(max(after), 3) if after else None,
        "rss_mb_before": before,
        "rss_mb_after": rss(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="+", help="messages per flooding request")
    ap.add_argument("--disconnect", type=float, default=None, help="hang up after this many seconds")
    ap.add_argument("--url", default=None, help="an app already running (default: start app.py)")
    args = ap.parse_args()
    app = None
    url = args.url
    if url is None:
        app = AppProcess(Path.home() / ".cache" / "llm-levels", users=2)
        url = app.url
    try:
        if app is not None:
            app.poll(lambda: post(url, json.dumps(PROBE).encode(), 30)[0] == 200, 300, "a /v1 answer", every=0.5)

        def rss() -> float | None:
            return round(app.rss_mb(), 0) if app is not None and app.rss_mb() else None

        for n in args.n:
            print(json.dumps(run_one(url, n, args.disconnect, rss)), flush=True)
    finally:
        if app is not None:
            app.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
