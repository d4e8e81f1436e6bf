"""``python -m llm_levels chat`` end to end, as a subprocess, against real servers and the real model on both
local engines (llama.cpp by default, ``--engine transformers``)."""

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
KEYS = {"text", "backend", "engine", "model", "usage", "ttft_s", "total_s", "tokens_per_s"}
#: What a native engine prints when the process dies badly at exit (a joinable std::thread destroyed...).
CRASH_SIGNS = ("terminate called", "Traceback", "Aborted", "core dumped", "Segmentation fault")


def default_ctrl_c() -> None:
    """In the child: Ctrl-C (SIGINT) as a terminal delivers it. A parent started in the background by a shell
    without job control (``cmd &``, nohup) hands its children SIGINT *ignored*; these tests are about Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def chat(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llm_levels", "chat", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_failure(p: subprocess.CompletedProcess, status: int = 1) -> str:
    """The run failed with ``status`` and exactly one ``error:`` line on stderr (no traceback); return it."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_json_against_katan(katan_echo):
    p = chat(
        "--backend",
        "openai",
        "--prompt",
        "what is two plus two",
        "--system",
        "you add numbers",
        "--max-new-tokens",
        "9",
        "--temperature",
        "0.2",
        "--json",
        env=katan_echo.env(),
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    out = json.loads(lines[0])
    assert set(out) >= KEYS
    assert out["backend"] == "openai" and out["model"] == katan_echo.model and out["engine"] is None
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
    p = chat(
        "--backend",
        "openai",
        "--prompt",
        "hi",
        "--no-stream",
        "--json",
        "--base-url",
        katan_echo.base_url,
        "--model",
        "from-flag",
        env=env,
    )
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
    scripted_server.push(
        Act.status(404, {"error": {"message": "The model `nope-1` does not exist.", "code": "model_not_found"}})
    )
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


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--backend", "openai"], "--prompt"),
        (["--backend", "nope", "--prompt", "x"], "invalid choice"),
        (["--backend", "openai", "--prompt", "x", "--temperature", "5"], "temperature"),
        (["--backend", "openai", "--prompt", "   "], "empty"),
    ],
)
def test_usage_errors_exit_2(args, needle):
    p = chat(*args, env=openai_env(None, None, None))
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_ctrl_c_stops_cleanly_with_130(katan_faults):
    server = katan_faults.slow_tokens  # about 3 s to the first chunk, then a chunk every 100 ms
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_levels",
            "chat",
            "--backend",
            "openai",
            "--prompt",
            "a long enough prompt to stream for a few seconds",
        ],
        cwd=ROOT,
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_ctrl_c,
    )
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


# ------------------------------------------------------------------------------------ the local model
def local_env(**extra: str) -> dict[str, str]:
    """This environment without hosted settings or local-model overrides (the defaults apply), plus ``extra``."""
    env = openai_env(None, None, None)
    for name in (
        "LOCAL_MODEL",
        "LOCAL_ENGINE",
        "LOCAL_CONTEXT",
        "LOCAL_THREADS",
        "LOCAL_CONCURRENCY",
        "TRANSFORMERS_CONCURRENCY",
        "LOCAL_DEVICE",
        "LOCAL_DTYPE",
    ):
        env.pop(name, None)
    return {**env, **extra}


def check_clean_exit(p: subprocess.CompletedProcess, status: int = 0) -> None:
    assert p.returncode == status, (p.returncode, p.stderr[-2000:])
    assert not any(sign in p.stderr for sign in CRASH_SIGNS), p.stderr[-2000:]


def check_json_shape(out: dict, engine: str, max_new_tokens: int) -> None:
    assert set(out) >= KEYS
    assert out["backend"] == "local" and out["engine"] == engine and "SmolLM2" in out["model"]
    assert isinstance(out["text"], str) and out["text"].strip()
    assert set(out["usage"]) == {"input_tokens", "output_tokens"}
    assert 1 <= out["usage"]["output_tokens"] <= max_new_tokens and out["usage"]["input_tokens"] > 3
    assert 0 < out["ttft_s"] <= out["total_s"]
    assert out["tokens_per_s"] is None or out["tokens_per_s"] > 0
    assert out["finish_reason"] in ("stop", "length")


@pytest.mark.slow
def test_local_backend_json():
    """The real embedded model on the default engine (llama.cpp), greedy: its answer is the engine's own."""
    p = chat(
        "--backend",
        "local",
        "--prompt",
        "Say hello.",
        "--json",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        env=local_env(),
        timeout=300,
    )
    check_clean_exit(p)
    assert p.stderr == ""  # stderr is not a terminal: no progress lines
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    check_json_shape(out, "llama.cpp", 8)
    # The same greedy answer as the engine gives in this process (same settings: the app's defaults).
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.config import Settings
    from llm_levels.core import GenParams, Message
    from llm_levels.models import load_llama_cpp_model

    model = load_llama_cpp_model("embedded", Settings.from_env(local_env()))
    try:
        here = LlamaCppBackend(model).complete(
            [Message("user", "Say hello.")], GenParams(max_new_tokens=8, temperature=0)
        )
    finally:
        model.close()
    assert out["text"] == here.text and out["usage"] == here.usage.to_dict()


@pytest.mark.slow
def test_local_default_settings_exit_cleanly_every_time():
    """Sampled (the default temperature): only the shape is checked. A short-lived process that used llama.cpp
    must end with status 0 and nothing from the native side on stderr, whether it streamed or printed JSON."""
    for args in (["--json"], [], ["--json", "--max-new-tokens", "1"]):
        p = chat(
            "--backend", "local", "--prompt", "What is the capital of France?", *args, env=local_env(), timeout=300
        )
        check_clean_exit(p)
        assert p.stderr == ""
        if "--json" in args:
            out = json.loads(p.stdout)
            check_json_shape(out, "llama.cpp", 256)
        else:
            assert p.stdout.strip() and p.stdout.endswith("\n")


@pytest.mark.slow
def test_local_ctrl_c_stops_the_engine_and_exits_130():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_levels",
            "chat",
            "--backend",
            "local",
            "--prompt",
            "Write a long story about a dragon who learns to cook.",
            "--max-new-tokens",
            "1000",
            "--temperature",
            "0",
        ],
        cwd=ROOT,
        env=local_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_ctrl_c,
    )
    try:
        first = proc.stdout.read(4)  # blocks until the answer starts streaming
        assert len(first) == 4
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert time.monotonic() - t0 < 5
    assert err.decode().strip() == "error: interrupted"
    printed = (first + rest).decode()
    assert printed.endswith("\n") and len(printed.split()) < 1500  # stopped well before the end


@pytest.mark.slow
def test_engine_transformers_json():
    """``--engine transformers``: the embedded model through transformers (its converted copy is cached after the
    first run); greedy, so the answer is the well-known one."""
    p = chat(
        "--backend",
        "local",
        "--engine",
        "transformers",
        "--prompt",
        "What is the capital of France?",
        "--json",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0",
        env=local_env(),
        timeout=300,
    )
    check_clean_exit(p)
    assert p.stderr == ""
    out = json.loads(p.stdout)
    check_json_shape(out, "transformers", 12)
    assert "Paris" in out["text"]


def test_engine_transformers_on_a_model_folder(tiny_causal_dir):
    p = chat(
        "--backend",
        "local",
        "--engine",
        "transformers",
        "--model",
        str(tiny_causal_dir),
        "--prompt",
        "hi",
        "--json",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        env=local_env(),
        timeout=120,
    )
    check_clean_exit(p)
    out = json.loads(p.stdout)
    assert out["engine"] == "transformers" and out["backend"] == "local" and out["usage"]["output_tokens"] <= 3


def test_a_model_folder_on_llama_cpp_says_to_pick_transformers(tiny_causal_dir):
    p = chat("--backend", "local", "--model", str(tiny_causal_dir), "--prompt", "hi", env=local_env(), timeout=120)
    line = check_failure(p)
    assert "transformers engine" in line and "GGUF" in line
    p = chat(
        "--backend",
        "local",
        "--model",
        str(tiny_causal_dir),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        env=local_env(LOCAL_ENGINE="transformers"),
        timeout=120,
    )  # the setting is the default of --engine
    check_clean_exit(p)


def test_engine_usage_errors():
    p = chat("--backend", "local", "--engine", "vllm", "--prompt", "hi", env=local_env())
    assert p.returncode == 2 and "invalid choice" in p.stderr and "llama.cpp" in p.stderr
    p = chat("--backend", "local", "--prompt", "hi", env=local_env(LOCAL_ENGINE="vllm"))
    line = check_failure(p)
    assert "LOCAL_ENGINE" in line
