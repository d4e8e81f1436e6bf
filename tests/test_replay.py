"""The exported replay script: a seeded local conversation, run from a terminal, prints the same answer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llm_levels.config import Settings
from llm_levels.core import GenParams, Message
from llm_levels.replay import replay_script
from llm_levels.runtime import AppRuntime
from llm_levels.transcript import Transcript, transcript_from_json
from llm_levels.turns import Done, TurnRequest, run_turn


@pytest.fixture(scope="module")
def runtime() -> AppRuntime:
    return AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))


def test_a_seeded_local_conversation_replays_to_the_same_answer(runtime, tmp_path) -> None:
    params = GenParams(temperature=0.9, seed=11, max_new_tokens=24)
    history = [Message("user", "Hi!"), Message("assistant", "Hello! How can I help?"), Message("user", "Name a fruit.")]
    done = list(run_turn(runtime, TurnRequest("local", history, params)))[-1]
    assert isinstance(done, Done) and done.text
    transcript = Transcript(
        level="local",
        backend="local",
        model=done.metrics.model,
        engine="llama.cpp",
        messages=(*history, Message("assistant", done.text)),
        params=params,
        turns=(done.metrics.to_dict(),),
    )
    back = transcript_from_json(transcript.to_json())  # what a user downloads is what replays
    code = replay_script(runtime, back)
    assert "import xllamacpp" in code and '"seed": 11' in code
    script = tmp_path / "replay.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.rsplit("\n[tokens:", 1)[0].strip()
    assert printed == done.text.strip()


def test_a_hosted_conversation_replays_with_the_openai_client_and_no_key(runtime) -> None:
    transcript = Transcript(
        level="api",
        backend="app-endpoint",
        model="local",
        system="Be brief.",
        messages=(Message("user", "Hi"), Message("assistant", "Hello")),
        params=GenParams(temperature=0.0, max_new_tokens=8, seed=3),
    )
    code = replay_script(runtime, transcript)
    compile(code, "replay", "exec")
    assert "from openai import OpenAI" in code and runtime.app_endpoint_url in code and "seed=3" in code
    assert '"content": "Hello"' not in code  # the last answer is what the replay prints, not what it sends
    assert "sk-" not in code
