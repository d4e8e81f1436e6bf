"""The app's /v1 gives per-token probabilities in OpenAI's exact shape on both local engines, stream and
non-stream: the raw JSON validated against the ``openai`` package's own ``ChoiceLogprobs`` types, with nothing
more and nothing less than OpenAI's fields. On the shared running app (``app_server``)."""

from __future__ import annotations

import json

import httpx
import pytest
from openai.types.chat import chat_completion, chat_completion_chunk

from llm_levels.backends.openai_api import OpenAIBackend
from llm_levels.core import GenParams, Message

pytestmark = pytest.mark.slow

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
TOKEN_FIELDS = {"token", "logprob", "bytes", "top_logprobs"}
TOP_FIELDS = {"token", "logprob", "bytes"}
K = 5


def v1(app_server) -> str:
    return app_server.url.rstrip("/") + "/v1"


def post(app_server, **body) -> httpx.Response:
    return httpx.post(v1(app_server) + "/chat/completions", json=body, timeout=180)


def check_tokens(content: list[dict]) -> None:
    """OpenAI's exact fields, types checked by the package's own pydantic model above; greedy: top-1 = token."""
    for t in content:
        assert set(t) == TOKEN_FIELDS and len(t["top_logprobs"]) == K
        assert all(set(a) == TOP_FIELDS for a in t["top_logprobs"])
        assert bytes(t["bytes"]) == t["token"].encode() and t["logprob"] <= 0
        assert t["top_logprobs"][0]["token"] == t["token"]
        assert abs(t["top_logprobs"][0]["logprob"] - t["logprob"]) < 1e-6


@pytest.mark.parametrize("model", ["local-llama.cpp", "local-transformers"])
def test_v1_logprobs_in_openais_shape_stream_and_not(app_server, model):
    request = {"model": model, "messages": STORY, "max_tokens": 8, "temperature": 0, "logprobs": True}
    r = post(app_server, **request, top_logprobs=K)
    assert r.status_code == 200, r.text
    data = r.json()
    choice = data["choices"][0]
    parsed = chat_completion.ChoiceLogprobs.model_validate(choice["logprobs"], strict=True)
    assert set(choice["logprobs"]) == {"content", "refusal"} and choice["logprobs"]["refusal"] is None
    content = choice["logprobs"]["content"]
    check_tokens(content)
    assert len(parsed.content) == len(content) == data["usage"]["completion_tokens"] == 8
    assert "".join(t["token"] for t in content) == choice["message"]["content"]

    streamed: list[dict] = []
    text = ""
    with httpx.stream(
        "POST", v1(app_server) + "/chat/completions", json={**request, "top_logprobs": K, "stream": True}, timeout=180
    ) as s:
        for line in s.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            c = json.loads(line[6:])["choices"][0]
            if c.get("logprobs") is not None:
                chat_completion_chunk.ChoiceLogprobs.model_validate(c["logprobs"], strict=True)
                streamed += c["logprobs"]["content"]
            text += c["delta"].get("content") or ""
    check_tokens(streamed)
    assert [(t["token"], round(t["logprob"], 4)) for t in streamed] == [
        (t["token"], round(t["logprob"], 4)) for t in content
    ]
    assert text == choice["message"]["content"]


def test_v1_continues_a_started_answer_on_the_local_engines(app_server):
    """A conversation that ends with the assistant's text: the answer is its continuation (only the new text)."""
    for model in ("local-llama.cpp", "local-transformers"):
        full = post(app_server, model=model, messages=STORY, max_tokens=10, temperature=0).json()
        answer = full["choices"][0]["message"]["content"]
        words = answer.split(" ")
        start = " ".join(words[:3])
        started = [*STORY, {"role": "assistant", "content": start}]
        r = post(app_server, model=model, messages=started, max_tokens=4, temperature=0)
        assert r.status_code == 200, r.text
        rest = r.json()["choices"][0]["message"]["content"]
        # Greedy from the greedy answer's own start: the same answer goes on (its next 4 tokens).
        assert rest and not rest.startswith(start) and answer.startswith(start + rest)


def test_the_hosted_backend_gets_them_from_the_apps_own_endpoint(app_server):
    """Level 2 with per-token probabilities: OpenAIBackend (the Hosted-API tab's) against this app's /v1."""
    b = OpenAIBackend(model="local", base_url=v1(app_server), timeout_s=120)
    chunks = list(b.stream([Message(**STORY[0])], GenParams(max_new_tokens=6, temperature=0, top_logprobs=3)))
    tokens = [t for c in chunks for t in c.logprobs]
    assert len(tokens) == 6 and all(len(t.top) == 3 for t in tokens) and chunks[-1].note is None
    assert "".join(t.token for t in tokens) == "".join(c.text for c in chunks)
