"""The status bar's engine line: each loaded engine once, with its one weight format and the threads it really
computes with (llama.cpp: the threads it was started with, one per core by default; transformers on the CPU:
torch's own count), never "1 thread(s)" on a machine with more cores, never two formats for one engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from llm_levels.engine.transformers_loader import LoadedModel
from llm_levels.ui.app import engines_text


def test_the_transformers_engine_names_torchs_threads():
    import torch

    llama = SimpleNamespace(engine="llama.cpp", device="cpu", label="llama.cpp · Q4_1 · 2 threads")
    hf = LoadedModel("embedded", "m", "gguf", None, None, False, "cpu", "float32", 1.0, True, 2048, 1)
    runtime = SimpleNamespace(
        settings=SimpleNamespace(local_engine="llama.cpp"), models=SimpleNamespace(loaded=lambda: [hf, llama])
    )
    n = torch.get_num_threads()
    assert engines_text(runtime) == (
        f"engines loaded: llama.cpp · Q4_1 · 2 threads; transformers · float32 · cpu · {n} thread{'s' * (n != 1)}"
    )


@pytest.mark.slow
def test_the_served_status_bar_shows_the_real_thread_counts(app_server):
    """In the running app (LOCAL_THREADS unset) once both engines are loaded (a tiny Lab run loads
    transformers): llama.cpp runs one thread per core this process may use, transformers torch's count."""
    client = app_server.client()
    args = [None, "auto", "local", "score", "instruct", "0", 3, 0, "batch", 10]
    status, *_ = client.predict(*args, api_name="/lab_run")
    assert "Done" in status
    engines = app_server.model_status(client)["engines"]
    torch_threads = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True
    ).stdout.strip()
    parts = dict(part.split(" · ", 1) for part in engines.removeprefix("engines loaded: ").split("; "))
    cores = len(os.sched_getaffinity(0))
    assert parts["llama.cpp"] == f"Q4_1 · {cores} thread{'s' * (cores != 1)}", engines
    assert re.fullmatch(rf"float32 · cpu · {torch_threads} threads?", parts["transformers"]), engines
    assert "int8" not in engines and "(s)" not in engines  # one format per engine, a real count
