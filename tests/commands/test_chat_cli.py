"""``python -m llm_levels chat`` end to end, as a subprocess, against real servers and the real model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.katan import Act, free_port, openai_env

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"text", "backend", "model", "usage", "ttft_s", "total_s", "tokens_per_s"}


def chat(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llm_levels", "chat", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_failure(p: subprocess.CompletedProcess, status: int = 1) -> str:
    """The run failed with ``status`` and exactly one ``error:`` line on stderr (no traceback); return it."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_json_against_katan(katan_echo):
    p = chat("--backend", "openai", "--prompt", "what is two plus two", "--system", "you add numbers",
             "--max-new-tokens", "9", "--temperature", "0.2", "--json", env=katan_echo.env())
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    out = json.loads(lines[0])
    assert KEYS <= set(out)
    assert out["backend"] == "openai" and out["model"] == katan_echo.model
    text = out["text"]
    assert isinstance(text, str) and text.endswith("User: what is two plus two")
    assert "messages=2 max_tokens=9 temperature=0.2" in text  # the options reached the server
    usage = out["usage"]
    assert set(usage) == {"input_tokens", "output_tokens"}
    assert usage["input_tokens"] == 3 + 5 and usage["output_tokens"] == len(text.split())
    assert isinstance(out["ttft_s"], float) and isinstance(out["total_s"], float)
    assert 0 < out["ttft_s"] <= out["total_s"] < 30
    assert out["tokens_per_s"] is None or (isinstance(out["tokens_per_s"], float) and out["tokens_per_s"] > 0)
    assert out["finish_reason"] == "stop"
    assert katan_echo.api_key not in p.stdout + p.stderr


def test_streaming_prints_the_answer(katan_echo):
    p = chat("--backend", "openai", "--prompt", "hello stream", env=katan_echo.env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("[echo] model=") and p.stdout.endswith("User: hello stream\n")
    assert p.stderr == ""


def test_no_stream_and_flags_override_the_environment(katan_echo):
    env = openai_env("http://127.0.0.1:9/v1", katan_echo.api_key, "from-env")  # wrong URL in the env
    p = chat("--backend", "openai", "--prompt", "hi", "--no-stream", "--json", "--base-url", katan_echo.base_url,
             "--model", "from-flag", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["model"] == "from-flag" and out["text"].endswith("User: hi") and out["usage"] is not None


def test_server_down_is_one_line_and_exit_1():
    port = free_port()
    env = openai_env(f"http://127.0.0.1:{port}/v1", "sk-test-cli-0123456789abcdef", "m")
    env["REQUEST_TIMEOUT_S"] = "3"
    p = chat("--backend", "openai", "--prompt", "hi", env=env)
    line = check_failure(p)
    assert f"127.0.0.1:{port}" in line and "running" in line
    assert p.stdout == ""
    assert "sk-test-cli-0123456789abcdef" not in p.stdout + p.stderr


def test_wrong_key_never_printed(katan_echo):
    wrong = "sk-test-wrong-key-0123456789abcdef"
    env = openai_env(katan_echo.base_url, wrong, katan_echo.model)
    p = chat("--backend", "openai", "--prompt", "hi", "--json", env=env)
    line = check_failure(p)
    assert "401" in line and "OPENAI_API_KEY" in line
    assert p.stdout == ""
    assert wrong not in p.stdout + p.stderr and katan_echo.api_key not in p.stdout + p.stderr


def test_unknown_model(scripted_server):
    scripted_server.push(Act.status(404, {"error": {"message": "The model `nope-1` does not exist.",
                                                    "code": "model_not_found"}}))
    p = chat("--backend", "openai", "--prompt", "hi", env=openai_env(scripted_server.base_url, None, "nope-1"))
    line = check_failure(p)
    assert "'nope-1'" in line and "model id" in line


def test_cut_stream_keeps_the_printed_text(scripted_server):
    scripted_server.push(Act.cut("partial ", "answer"))
    p = chat("--backend", "openai", "--prompt", "hi", env=openai_env(scripted_server.base_url, None, "m"))
    line = check_failure(p)
    assert "cut off" in line
    assert p.stdout == "partial answer\n"


def test_no_key_says_where_to_set_it():
    p = chat("--backend", "openai", "--prompt", "hi", env=openai_env(None, None, None))
    line = check_failure(p)
    assert "OPENAI_API_KEY" in line


@pytest.mark.parametrize("args, needle", [
    (["--backend", "openai"], "--prompt"),
    (["--backend", "nope", "--prompt", "x"], "invalid choice"),
    (["--backend", "openai", "--prompt", "x", "--temperature", "5"], "temperature"),
    (["--backend", "openai", "--prompt", "   "], "empty"),
])
def test_usage_errors_exit_2(args, needle):
    p = chat(*args, env=openai_env(None, None, None))
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_ctrl_c_stops_cleanly_with_130(katan_faults):
    server = katan_faults.slow_tokens  # about 3 s to the first chunk, then a chunk every 100 ms
    proc = subprocess.Popen([sys.executable, "-m", "llm_levels", "chat", "--backend", "openai", "--prompt",
                             "a long enough prompt to stream for a few seconds"],
                            cwd=ROOT, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read(4)  # blocks until the answer starts streaming
        assert first == b"[ech"
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert time.monotonic() - t0 < 3
    assert err.decode().strip() == "error: interrupted"
    printed = (first + rest).decode()
    assert printed.startswith("[ech") and printed.endswith("\n")  # the partial answer stays, line ended
    assert "for a few seconds" not in printed  # stopped before the end of the echo


@pytest.mark.slow
def test_local_backend_json():
    """The real embedded model in the CLI process (the converted copy is cached after the first run)."""
    env = openai_env(None, None, None)
    env.pop("LOCAL_MODEL", None)
    p = chat("--backend", "local", "--prompt", "Say hello.", "--json", "--max-new-tokens", "8", "--temperature", "0",
             env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert KEYS <= set(out)
    assert out["backend"] == "local" and "SmolLM2" in out["model"]
    assert isinstance(out["text"], str) and out["text"].strip()
    assert 1 <= out["usage"]["output_tokens"] <= 8 and out["usage"]["input_tokens"] > 3
    assert 0 < out["ttft_s"] <= out["total_s"]
    assert p.stderr == ""  # stderr is not a terminal: no progress lines
    # Default settings (the fast path's decode thread running right up to exit) still exit cleanly:
    # a daemon decode thread once made the process abort with "terminate called without an active exception".
    p = chat("--backend", "local", "--prompt", "What is the capital of France?", "--json", env=env, timeout=300)
    assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr[-2000:])
    assert "Paris" in json.loads(p.stdout)["text"]
