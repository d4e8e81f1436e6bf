"""The snippets of a call that asked for per-token probabilities ask for them the same way and RUN, printing the
probabilities the app reported: transformers on a tiny model (greedy and sampled), llama.cpp on the embedded
GGUF, the openai client against this app's /v1; and the transformers snippet of a continued answer."""

from __future__ import annotations

import os
import re

import pytest

from llm_levels.backends.local_hf import LocalBackend
from llm_levels.backends.openai_api import OpenAIBackend
from llm_levels.core import GenParams, Message
from llm_levels.models import load_model
from llm_levels.snippets import local_snippet, openai_snippet, transformers_snippet
from tests.fixtures.models import cpu_settings
from tests.test_snippets import _answer_printed, assigned_in, run_python

QUESTION = [Message("user", "What is the capital of France?")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
#: A printed probability line: the token's repr, its probability, then the alternatives.
LINE = re.compile(r"^\s*(?P<token>'.*?'|\".*?\")\s+(?P<p>[\d.]+)%(?:   (?P<alts>.*))?$")


def printed_probabilities(stdout: str) -> list[tuple[str, float, str]]:
    """(token repr, probability in %, alternatives text) of each line after ``[tokens: ...]``."""
    tail = stdout.rsplit("[tokens: ", 1)[1].split("\n", 1)[1]
    out = []
    for line in tail.splitlines():
        m = LINE.match(line)
        assert m, line
        out.append((m["token"], float(m["p"]), m["alts"] or ""))
    return out


@pytest.mark.parametrize(
    "params",
    [
        GenParams(max_new_tokens=8, temperature=0, top_logprobs=3),
        GenParams(max_new_tokens=8, temperature=0.9, top_k=20, repetition_penalty=1.3, seed=5, top_logprobs=3),
    ],
    ids=["greedy", "sampled"],
)
def test_transformers_snippet_prints_the_probabilities_the_app_reported(tiny_causal_dir, tmp_path, params):
    backend = LocalBackend(load_model(str(tiny_causal_dir), cpu_settings()))
    chunks = list(backend.stream(QUESTION, params))
    tokens = [t for c in chunks for t in c.logprobs]
    code = transformers_snippet(QUESTION, params, model_id=str(tiny_causal_dir))
    assert "return_dict_in_generate=True, output_logits=True" in code and "topk(probs, 3)" in code
    out = run_python(code, tmp_path, ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _answer_printed(out.stdout) == "".join(c.text for c in chunks)
    rows = printed_probabilities(out.stdout)
    # The snippet also prints the end token (if the answer ended with one); the app does not report it.
    assert len(rows) == chunks[-1].usage.output_tokens >= len(tokens) > 0
    for (_, p, alts), t in zip(rows, tokens):
        assert p == pytest.approx(t.probability * 100, abs=0.051)
        assert len(alts.split(", ")) == 3


def test_transformers_snippet_of_a_continued_answer_continues_it(tiny_causal_dir, tmp_path):
    backend = LocalBackend(load_model(str(tiny_causal_dir), cpu_settings()))
    started = [*QUESTION, Message("assistant", "Paris is")]
    params = GenParams(max_new_tokens=6, temperature=0)
    expected = backend.complete(started, params)
    code = transformers_snippet(started, params, model_id=str(tiny_causal_dir))
    assert assigned_in(code, "answer_start") == "Paris is" and "add_special_tokens=False" in code
    out = run_python(code, tmp_path, ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _answer_printed(out.stdout) == expected.text
    assert f"[tokens: {expected.usage.input_tokens} in, {expected.usage.output_tokens} out]" in out.stdout


@pytest.mark.slow
def test_llama_cpp_snippet_prints_the_probabilities_the_backend_streamed(tmp_path):
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.models import load_llama_cpp_model

    model = load_llama_cpp_model("embedded", cpu_settings(local_concurrency=1))
    try:
        backend = LlamaCppBackend(model)
        params = GenParams(max_new_tokens=6, temperature=0, top_logprobs=2)
        chunks = list(backend.stream(QUESTION, params))
        code = local_snippet(backend, QUESTION, params, cpu_settings())
    finally:
        model.close()
    tokens = [t for c in chunks for t in c.logprobs]
    out = run_python(code, tmp_path, dict(os.environ), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _answer_printed(out.stdout) == "".join(c.text for c in chunks)
    rows = printed_probabilities(out.stdout)
    assert [r[0] for r in rows] == [repr(t.token) for t in tokens]
    assert [r[1] for r in rows] == pytest.approx([t.probability * 100 for t in tokens], abs=0.051)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
def test_openai_snippet_prints_the_probabilities_from_the_apps_endpoint(app_server, tmp_path, stream):
    url = app_server.url.rstrip("/") + "/v1"
    b = OpenAIBackend(model="local", base_url=url, timeout_s=120, stream=stream)
    params = GenParams(max_new_tokens=6, temperature=0, top_logprobs=2)
    chunks = list(b.stream(QUESTION, params))
    tokens = [t for c in chunks for t in c.logprobs]
    code = openai_snippet(b.last_request, base_url=url, app_endpoint=True)
    assert "logprobs=True," in code and "top_logprobs=2," in code and "import math" in code
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_API_KEY"}  # the app checks no key
    out = run_python(code, tmp_path, env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = printed_probabilities(out.stdout)
    assert [r[0] for r in rows] == [repr(t.token) for t in tokens]
    assert [r[1] for r in rows] == pytest.approx([t.probability * 100 for t in tokens], abs=0.051)
