"""Load test of the running app through its real HTTP API (gradio_client), one Client per session.

Each session sends chat messages through the Chat tab's ``chat_send`` event as fast as it gets
answers, each with a unique nonce, and checks every reply against *its own* session:

- ``--backend hosted`` (the app's OPENAI_BASE_URL is an ``llm-katan --backend echo`` server, which
  answers ``... User: <the last user message>``): the reply must contain this request's nonce, and
  the session's history must hold exactly this session's prompts (a reply or prompt of another
  session anywhere counts as *mixed*);
- ``--backend local`` (the app's embedded model): the reply must be a non-empty answer (not an error
  note) and the history must again hold exactly this session's prompts.

A request that ends without its reply (a lost job, an empty result, an error note) counts as *lost*
(rate-limit refusals are counted on their own). The app process's memory (RSS, with its children) is
sampled throughout. While sessions wait for the local model, the queue position that Gradio shows
them (``job.status().rank``) is recorded.

``--stop-test`` measures "Stop frees the local model": session A starts a long local answer, session
B queues behind it, A cancels (``job.cancel()``, what the Stop button does), and we time how long B
then waits for its first token.

Usage (against a running app)::

    .venv/bin/python bench/load_test.py --url http://127.0.0.1:7860 --sessions 20 --seconds 60 --backend hosted
    .venv/bin/python bench/load_test.py --url http://127.0.0.1:7860 --sessions 4 --seconds 60 --backend local --stop-test

or let it start an llm-katan echo server and the app itself (and stop them afterwards)::

    .venv/bin/python bench/load_test.py --start --sessions 20 --seconds 60 --backend hosted --json out.json

Prints a table and writes the figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_levels import history as H  # noqa: E402  (the one place that knows Gradio's history shape)

CHAT_API = "/chat_send"
CLEAR_API = "/chat_clear"
SESSION_RE = re.compile(r"Session (\d+) turn")
#: The fake key the started app is given, so the log can be searched for it afterwards.
TEST_KEY = "sk-test-SECRET-load-4711"


# ============================================================================================ records
@dataclass
class SessionResult:
    session: int
    requests: int = 0
    ok: int = 0
    lost: int = 0
    mixed: int = 0
    rate_limited: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    max_rank: int | None = None
    clients: int = 0  # Gradio sessions this simulated user opened (more than 1 with --new-session-every)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q / 100 * (len(values) - 1))))
    return values[k]


# ========================================================================================= history
def _turns(chat: Any) -> list[dict[str, Any]]:
    """The Chatbot value as ``[{"role", "text", "note", "kind"}]`` (role/notes via llm_levels.history)."""
    out = []
    for item in chat or []:
        m = H._as_mapping(item)
        if m is None:
            continue
        meta = H._as_mapping(m.get("metadata")) if m.get("metadata") is not None else None
        out.append(
            {
                "role": H.role_of(m),
                "text": H.content_text(m.get("content")),
                "note": H.is_note(m),
                "pending": H.is_pending(m),
                "kind": (meta or {}).get("log"),
            }
        )
    return out


def _first_answer_text(chat: Any) -> str:
    """The streamed answer text of the last turn, if any has arrived (not a note)."""
    turns = _turns(chat)
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["note"]:
        return turns[-1]["text"]
    return ""


# ========================================================================================= sessions
def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _submit_and_watch(client, args_: tuple, res: SessionResult, t_limit: float) -> tuple[Any, float | None, float]:
    """Submit one chat_send, poll its status (queue rank) and streamed outputs; return the result."""
    t0 = time.perf_counter()
    job = client.submit(*args_, api_name=CHAT_API)
    ttft = None
    while not job.done():
        st = job.status()
        rank = getattr(st, "rank", None)
        if isinstance(rank, int) and getattr(st, "code", None) is not None and str(st.code).endswith("IN_QUEUE"):
            res.max_rank = rank if res.max_rank is None else max(res.max_rank, rank)
        if ttft is None:
            outs = job.outputs()
            if outs and _first_answer_text(outs[-1][0] if isinstance(outs[-1], (list, tuple)) else outs[-1]):
                ttft = time.perf_counter() - t0
        if time.perf_counter() > t_limit:
            job.cancel()
            raise TimeoutError("no result before the deadline")
        time.sleep(0.02)
    result = job.result()
    return result, ttft, time.perf_counter() - t0


def run_session(
    i: int,
    url: str,
    backend_id: str,
    kind: str,
    seconds: float,
    max_new: int,
    clear_every: int,
    request_timeout_s: float,
    start_barrier: threading.Barrier,
    new_session_every: int = 0,
) -> SessionResult:
    """One simulated user; with ``new_session_every`` N it closes its Client and opens a new one (a new
    Gradio session, like a visitor leaving and another arriving) after every N requests."""
    res = SessionResult(session=i)
    try:
        client = _client(url)
        res.clients += 1
    except Exception as e:  # noqa: BLE001 - report, do not crash the other sessions
        res.errors.append(f"connect: {type(e).__name__}: {e}")
        start_barrier.abort()
        return res
    try:
        start_barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass
    deadline = time.perf_counter() + seconds
    sent: list[str] = []  # this session's prompts since the last clear
    turn = 0
    while time.perf_counter() < deadline:
        if new_session_every and turn and turn % new_session_every == 0:
            client.close()  # stops its heartbeat: the server sees the session end, as when a tab closes
            try:
                client = _client(url)
            except Exception as e:  # noqa: BLE001
                res.errors.append(f"reconnect: {type(e).__name__}: {e}")
                time.sleep(1.0)
                continue
            res.clients += 1
            sent = []
        elif clear_every and turn and turn % clear_every == 0:
            client.predict(api_name=CLEAR_API)
            sent = []
        turn += 1
        nonce = uuid.uuid4().hex[:12]
        prompt = f"Session {i} turn {turn}: please repeat the code {nonce}."
        res.requests += 1
        try:
            result, ttft, total = _submit_and_watch(
                client, (prompt, backend_id, max_new), res, time.perf_counter() + request_timeout_s
            )
        except Exception as e:  # noqa: BLE001
            if "Too many requests" in str(e):
                # The app refuses over-limit sends with a validation error before anything changes:
                # the prompt stays in the text box and the conversation is untouched.
                res.rate_limited += 1
                time.sleep(1.0)
                continue
            res.lost += 1
            res.errors.append(f"turn {turn}: {type(e).__name__}: {str(e)[:200]}")
            continue
        chat = result[0] if isinstance(result, (list, tuple)) else result
        turns = _turns(chat)
        last = turns[-1] if turns else None
        sent.append(prompt)
        users = [t["text"] for t in turns if t["role"] == "user"]
        if users != sent:
            foreign = [u for u in users if u not in sent]
            if foreign:
                res.mixed += 1
                res.errors.append(f"turn {turn}: history holds another session's prompt: {foreign[0][:80]!r}")
            else:
                res.lost += 1
                res.errors.append(f"turn {turn}: history is missing prompts ({len(users)} vs {len(sent)})")
            sent = users
            continue
        if not last or last["role"] != "assistant" or last["note"] or not last["text"].strip():
            res.lost += 1
            detail = (last or {}).get("text", "")[:160]
            res.errors.append(f"turn {turn}: no answer ({(last or {}).get('kind')}): {detail!r}")
            continue
        if kind == "hosted":
            if nonce not in last["text"]:
                res.mixed += 1
                res.errors.append(f"turn {turn}: reply does not echo this session's prompt: {last['text'][:120]!r}")
                continue
            # Every echoed reply in this history must name this session and no other.
            named = {int(n) for t in turns if t["role"] == "assistant" for n in SESSION_RE.findall(t["text"])}
            if named - {i}:
                res.mixed += 1
                res.errors.append(f"turn {turn}: a reply for session(s) {sorted(named - {i})} in this history")
                continue
        res.ok += 1
        res.latencies_s.append(total)
        if ttft is not None:
            res.ttfts_s.append(ttft)
    client.close()
    return res


# ========================================================================================= memory
class RssSampler(threading.Thread):
    """Samples the RSS of a process and its children every ``every_s`` seconds."""

    def __init__(self, pid: int | None, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop_evt = threading.Event()

    def rss(self) -> int | None:
        import psutil

        try:
            p = psutil.Process(self.pid)
            total = p.memory_info().rss
            for c in p.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return None

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop_evt.is_set() and self.pid:
            v = self.rss()
            if v is not None:
                self.samples.append((time.perf_counter() - t0, v))
            self._stop_evt.wait(self.every_s)

    def stop(self) -> dict[str, Any]:
        self._stop_evt.set()
        self.join(5)
        if not self.samples:
            return {"pid": self.pid, "samples": 0}
        vals = [v for _, v in self.samples]
        n = max(1, len(vals) // 4)
        # Mean RSS of each minute of the run: a bounded app levels off; a leak keeps climbing.
        minutes: dict[int, list[int]] = {}
        for t, v in self.samples:
            minutes.setdefault(int(t // 60), []).append(v)
        return {
            "pid": self.pid,
            "samples": len(vals),
            "start_mb": round(vals[0] / 2**20, 1),
            "end_mb": round(vals[-1] / 2**20, 1),
            "peak_mb": round(max(vals) / 2**20, 1),
            # bounded memory: the last quarter of the run should not sit far above the second quarter
            "q2_mean_mb": round(statistics.mean(vals[n : 2 * n]) / 2**20, 1) if len(vals) >= 4 else None,
            "q4_mean_mb": round(statistics.mean(vals[-n:]) / 2**20, 1),
            "per_minute_mean_mb": [round(statistics.mean(minutes[m]) / 2**20, 1) for m in sorted(minutes)],
            "per_minute_max_mb": [round(max(minutes[m]) / 2**20, 1) for m in sorted(minutes)],
        }


def find_pid_by_port(port: int) -> int | None:
    import psutil

    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                return c.pid
    except (psutil.AccessDenied, PermissionError):
        return None
    return None


# ======================================================================================= stop test
def stop_test(url: str, max_new_long: int, repeats: int = 3) -> list[dict[str, Any]]:
    """A starts a long local answer, B queues behind it, A cancels: time until B's first token."""
    from gradio_client.utils import Status

    out = []
    a, b = _client(url), _client(url)
    for r in range(repeats):
        a.predict(api_name=CLEAR_API)
        b.predict(api_name=CLEAR_API)
        # Baseline: B's first token with the model idle (what B would wait without anyone before it).
        t_idle = time.perf_counter()
        jb0 = b.submit(f"Say hello to B, run {r}.", "local", 8, api_name=CHAT_API)
        idle_first = None
        while time.perf_counter() - t_idle < 60 and not jb0.done():
            outs = jb0.outputs()
            if idle_first is None and outs and _first_answer_text(outs[-1][0]):
                idle_first = time.perf_counter() - t_idle
            time.sleep(0.01)
        jb0.result(timeout=60)
        b.predict(api_name=CLEAR_API)
        ja = a.submit(
            "Write a very long story about a lighthouse keeper, with many chapters.",
            "local",
            max_new_long,
            api_name=CHAT_API,
        )
        t = time.perf_counter()
        while time.perf_counter() - t < 120:  # until A is visibly generating
            outs = ja.outputs()
            if outs and _first_answer_text(outs[-1][0]):
                break
            time.sleep(0.02)
        else:
            out.append({"repeat": r, "error": "A never started streaming"})
            ja.cancel()
            continue
        jb = b.submit(f"Say hello to B, run {r}.", "local", 8, api_name=CHAT_API)
        time.sleep(1.0)  # B is now waiting for the model
        b_rank = getattr(jb.status(), "rank", None)
        b_code = str(getattr(jb.status(), "code", ""))
        t_stop = time.perf_counter()
        # Like the Stop button: post the cancel and do not wait for it (gradio_client's cancel blocks
        # until the server has closed A's generator, and gives up after 5 s).
        cancel_errors: list[str] = []
        threading.Thread(target=_cancel_quietly, args=(ja, cancel_errors), daemon=True).start()
        first = None
        started = None  # when B left the queue: the model's lane was free for it
        while time.perf_counter() - t_stop < 60:
            if started is None and jb.status().code in (Status.PROCESSING, Status.ITERATING):
                started = time.perf_counter() - t_stop
            outs = jb.outputs()
            if outs and _first_answer_text(outs[-1][0]):
                first = time.perf_counter() - t_stop
                break
            if jb.done():
                res = jb.result()
                if _first_answer_text(res[0]):
                    first = time.perf_counter() - t_stop
                break
            time.sleep(0.01)
        try:
            jb.result(timeout=60)
        except Exception:  # noqa: BLE001
            pass
        a_text = ""
        try:
            a_outs = ja.outputs()
            a_text = _first_answer_text(a_outs[-1][0]) if a_outs else ""
        except Exception:  # noqa: BLE001
            pass
        out.append(
            {
                "repeat": r,
                "cancel_error": cancel_errors[0] if cancel_errors else None,
                "b_status_while_waiting": b_code,
                "b_rank_while_waiting": b_rank,
                "a_chars_before_stop": len(a_text),
                "stop_to_b_started_s": None if started is None else round(started, 3),
                "b_idle_first_token_s": None if idle_first is None else round(idle_first, 3),
                "stop_to_b_first_token_s": None if first is None else round(first, 3),
                # what the Stop itself costs: the wait beyond B's own time to first token
                "stop_overhead_s": None if first is None or idle_first is None else round(first - idle_first, 3),
            }
        )
    return out


def _cancel_quietly(job: Any, errors: list[str]) -> None:
    try:
        job.cancel()
    except Exception as e:  # noqa: BLE001 - reported in the figures
        errors.append(f"{type(e).__name__}: {e}")


# ====================================================================================== start mode
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"the process serving {url} exited ({proc.returncode}):\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Started:
    """An llm-katan echo server and the app, started for the test and stopped afterwards."""

    def __init__(self, extra_env: dict[str, str], log_dir: Path, probe_args: list[str] | None = None) -> None:
        self.katan_port, self.app_port = _free_port(), _free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.katan_log = log_dir / "katan.log"
        self.app_log = log_dir / "app.log"
        venv_bin = Path(sys.executable).parent
        self.katan = subprocess.Popen(
            [
                str(venv_bin / "llm-katan"),
                "--model",
                "echo-model",
                "--backend",
                "echo",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.katan_port),
                "--log-level",
                "warning",
                "--stats-file",
                str(log_dir / "katan-stats.json"),
            ],
            stdout=self.katan_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.app_port),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.katan_port}/v1",
            "OPENAI_API_KEY": TEST_KEY,
            "OPENAI_MODEL": "echo-model",
            **extra_env,
        }
        # With probe_args the app runs under bench/mem_probe.py (the same app, plus a memory recorder).
        cmd = [str(ROOT / "app.py")] if probe_args is None else [str(ROOT / "bench" / "mem_probe.py"), *probe_args]
        self.app = subprocess.Popen(
            [sys.executable, *cmd], cwd=str(ROOT), env=env, stdout=self.app_log.open("w"), stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.app_port}"

    def wait(self) -> None:
        _wait_http(f"http://127.0.0.1:{self.katan_port}/v1/models", 60, self.katan, self.katan_log)
        _wait_http(self.url + "/", 180, self.app, self.app_log)

    def close(self) -> None:
        for p in (self.app, self.katan):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def warm_local(url: str, timeout_s: float = 300) -> float:
    """One tiny local answer, so the model is loaded before timing starts; returns seconds taken."""
    t0 = time.perf_counter()
    c = _client(url)
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        res = c.predict("Hi", "local", 2, api_name=CHAT_API)
        turns = _turns(res[0])
        if turns and turns[-1]["role"] == "assistant" and not turns[-1]["note"] and turns[-1]["text"].strip():
            return time.perf_counter() - t0
        time.sleep(2)
    raise TimeoutError("the local model did not answer")


# ============================================================================================= main
def run(
    url: str,
    sessions: int,
    seconds: float,
    kind: str,
    backend_id: str,
    max_new: int,
    clear_every: int,
    pid: int | None,
    request_timeout_s: float,
    new_session_every: int = 0,
) -> dict[str, Any]:
    sampler = RssSampler(pid)
    sampler.start()
    barrier = threading.Barrier(sessions)
    results: list[SessionResult | None] = [None] * sessions

    def worker(i: int) -> None:
        results[i] = run_session(
            i, url, backend_id, kind, seconds, max_new, clear_every, request_timeout_s, barrier, new_session_every
        )

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + request_timeout_s + 180)
    wall = time.perf_counter() - t0
    mem = sampler.stop()
    done = [r for r in results if r is not None]
    lat = [x for r in done for x in r.latencies_s]
    ttft = [x for r in done for x in r.ttfts_s]
    ranks = [r.max_rank for r in done if r.max_rank is not None]
    return {
        "kind": kind,
        "backend_id": backend_id,
        "url": url,
        "sessions": sessions,
        "seconds": seconds,
        "max_new_tokens": max_new,
        "wall_s": round(wall, 1),
        "new_session_every": new_session_every,
        "sessions_finished": len(done),
        "gradio_sessions_opened": sum(r.clients for r in done),
        "requests": sum(r.requests for r in done),
        "ok": sum(r.ok for r in done),
        "lost": sum(r.lost for r in done) + (sessions - len(done)),
        "mixed": sum(r.mixed for r in done),
        "rate_limited": sum(r.rate_limited for r in done),
        "throughput_rps": round(sum(r.ok for r in done) / seconds, 2) if seconds else None,
        "latency_p50_s": _round(_pct(lat, 50)),
        "latency_p95_s": _round(_pct(lat, 95)),
        "latency_max_s": _round(max(lat) if lat else None),
        "ttft_p50_s": _round(_pct(ttft, 50)),
        "ttft_p95_s": _round(_pct(ttft, 95)),
        "max_queue_rank_seen": max(ranks) if ranks else None,
        "sessions_that_saw_a_queue_position": len(ranks),
        "memory": mem,
        "errors": [e for r in done for e in r.errors][:50],
        "per_session": [
            {k: v for k, v in asdict(r).items() if k not in ("latencies_s", "ttfts_s", "errors")} for r in done
        ],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def print_table(report: dict[str, Any]) -> None:
    rows = [
        ("backend", f"{report['kind']} ({report['backend_id']})"),
        ("sessions x seconds", f"{report['sessions']} x {report['seconds']:g} (wall {report['wall_s']} s)"),
        ("Gradio sessions opened", report.get("gradio_sessions_opened")),
        ("requests / ok", f"{report['requests']} / {report['ok']}"),
        ("lost / mixed", f"{report['lost']} / {report['mixed']}"),
        ("rate-limited", report["rate_limited"]),
        ("throughput", f"{report['throughput_rps']} replies/s"),
        (
            "latency p50 / p95 / max",
            f"{report['latency_p50_s']} / {report['latency_p95_s']} / {report['latency_max_s']} s",
        ),
        ("first text p50 / p95", f"{report['ttft_p50_s']} / {report['ttft_p95_s']} s"),
        (
            "queue position seen (max)",
            f"{report['max_queue_rank_seen']} ({report['sessions_that_saw_a_queue_position']} sessions saw one)",
        ),
    ]
    m = report.get("memory", {})
    if m.get("samples"):
        rows.append(("app RSS start / peak / end", f"{m['start_mb']} / {m['peak_mb']} / {m['end_mb']} MB"))
        rows.append(("app RSS mean q2 / q4", f"{m['q2_mean_mb']} / {m['q4_mean_mb']} MB"))
        rows.append(("app RSS mean per minute", " ".join(f"{x:g}" for x in m["per_minute_mean_mb"]) + " MB"))
    for k in ("stop_test", "secret_in_log"):
        if k in report:
            rows.append((k.replace("_", " "), json.dumps(report[k])))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if report["errors"]:
        print("first errors:")
        for e in report["errors"][:10]:
            print("  -", e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="the running app, e.g. http://127.0.0.1:7860 (or use --start)")
    ap.add_argument("--start", action="store_true", help="start an llm-katan echo server and the app, then stop them")
    ap.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the started app (repeatable), e.g. REQUESTS_PER_MINUTE=100000",
    )
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--backend", choices=("hosted", "local"), default="hosted")
    ap.add_argument("--backend-id", help="the Chat backend picker id (default: the first hosted one, or 'local')")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (hosted) / 16 (local)")
    ap.add_argument("--clear-every", type=int, default=8, help="clear the chat every N turns (0 = never)")
    ap.add_argument(
        "--new-session-every",
        type=int,
        default=0,
        metavar="N",
        help="each user closes its Client and opens a new Gradio session every N requests "
        "(0 = one session per user for the whole run)",
    )
    ap.add_argument("--request-timeout", type=float, default=300)
    ap.add_argument("--app-pid", type=int, help="pid of the app, for memory (default: found by its port)")
    ap.add_argument("--stop-test", action="store_true", help="also measure how fast Stop frees the local model")
    ap.add_argument("--stop-repeats", type=int, default=3)
    ap.add_argument("--secret", help="a key that must not appear in --app-log (checked at the end)")
    ap.add_argument("--app-log", type=Path, help="the app's log file, searched for --secret")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument(
        "--probe",
        type=Path,
        metavar="JSONL",
        help="with --start: run the app under bench/mem_probe.py, recording its memory stores here",
    )
    ap.add_argument("--probe-every", type=float, default=30.0, help="seconds between two probe records")
    ap.add_argument("--probe-tracemalloc", action="store_true", help="the probe also traces Python allocations")
    ap.add_argument(
        "--probe-malloc-trim",
        action="store_true",
        help="the probe calls malloc_trim(0) after each record and records the RSS after it",
    )
    args = ap.parse_args(argv)

    started = None
    try:
        if args.start:
            extra = dict(kv.split("=", 1) for kv in args.app_env)
            probe = None
            if args.probe:
                probe = ["--out", str(args.probe.resolve()), "--every", str(args.probe_every)]
                probe += ["--tracemalloc"] if args.probe_tracemalloc else []
                probe += ["--malloc-trim"] if args.probe_malloc_trim else []
            started = Started(extra, Path(tempfile.mkdtemp(prefix="llm-levels-load-")), probe)
            started.wait()
            url, pid = started.url, started.app.pid
            args.secret = args.secret or TEST_KEY
            args.app_log = args.app_log or started.app_log
            print(
                f"started app {url} (pid {pid}), echo server on port {started.katan_port}; logs in "
                f"{started.app_log.parent}",
                flush=True,
            )
        else:
            if not args.url:
                ap.error("give --url of a running app, or --start")
            url = args.url.rstrip("/")
            pid = args.app_pid or find_pid_by_port(int(url.rsplit(":", 1)[-1].split("/")[0]))
        backend_id = args.backend_id or ("local" if args.backend == "local" else None)
        if backend_id is None:
            info = _client(url).view_api(print_info=False, return_format="dict")
            backend_id = _first_hosted_choice(info) or "hosted:OpenAI-compatible"
        max_new = args.max_new_tokens or (64 if args.backend == "hosted" else 16)
        # With --start the local model is loading in the background: wait for it, so the run measures a
        # ready app rather than one busy loading (on a 2-core machine that halves everything else).
        warm_s = warm_local(url) if args.start or args.backend == "local" or args.stop_test else None
        report = run(
            url,
            args.sessions,
            args.seconds,
            args.backend,
            backend_id,
            max_new,
            args.clear_every,
            pid,
            args.request_timeout,
            args.new_session_every,
        )
        report["warmup_s"] = None if warm_s is None else round(warm_s, 1)
        if args.stop_test:
            report["stop_test"] = stop_test(url, max_new_long=256, repeats=args.stop_repeats)
        if args.secret and args.app_log:
            text = Path(args.app_log).read_text(errors="replace")
            report["secret_in_log"] = {
                "log": str(args.app_log),
                "lines": text.count("\n"),
                "found": args.secret in text,
            }
        print_table(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
            print(f"wrote {args.json}")
        bad = report["lost"] or report["mixed"] or report.get("secret_in_log", {}).get("found")
        return 1 if bad else 0
    finally:
        if started is not None:
            started.close()


def _first_hosted_choice(info: dict[str, Any]) -> str | None:
    """The first ``hosted:`` choice of chat_send's backend dropdown, from the app's API description."""
    for name, ep in (info.get("named_endpoints") or {}).items():
        if name.strip("/") != CHAT_API.strip("/"):
            continue
        for p in ep.get("parameters", []):
            choices = (p.get("python_type") or {}).get("type", "")
            for c in _literal_choices(choices):
                if c.startswith("hosted:") and c != "hosted:session":
                    return c
    return None


def _literal_choices(type_str: str) -> list[str]:
    """Parse ``Literal['a', 'b']`` from gradio_client's parameter description."""
    if "Literal[" not in type_str:
        return []
    inner = type_str.split("Literal[", 1)[1].rsplit("]", 1)[0]
    return [p.strip().strip("'\"") for p in inner.split(",")]


if __name__ == "__main__":
    raise SystemExit(main())
