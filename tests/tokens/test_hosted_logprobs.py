"""Per-token probabilities from an OpenAI-compatible server through OpenAIBackend (the real ``openai`` client
against the in-process scripted server): asked for, passed on, and, when the server refuses them or sends
none, the answer still arrives with a note that says why."""

from __future__ import annotations

import math

import pytest

from llm_levels.backends.openai_api import OpenAIBackend
from llm_levels.core import BackendError, GenParams, Message, collect
from tests.fixtures.katan import Act

HELLO = [Message("user", "hello there")]
ASK = GenParams(max_new_tokens=8, temperature=0, top_logprobs=2)


def backend(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(model="scripted-model", api_key="sk-test-0000000000000000", base_url=url, timeout_s=5, **kw)


def logprob(token: str, lp: float, top: list[tuple[str, float]]) -> dict:
    entry = lambda t, v: {"token": t, "logprob": v, "bytes": list(t.encode())}  # noqa: E731
    return {**entry(token, lp), "top_logprobs": [entry(t, v) for t, v in top]}


def chunk(text: str | None, tokens: list[dict] | None = None, finish: str | None = None) -> dict:
    choice = {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}
    if tokens is not None:
        choice["logprobs"] = {"content": tokens, "refusal": None}
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "scripted-model", "choices": [choice]}


HI = logprob("Hi", -0.1, [("Hi", -0.1), ("Yo", -2.5)])
THERE = logprob(" there", -0.5, [(" there", -0.5), ("!", -1.5)])


def test_the_request_asks_for_them_the_openai_way():
    body = backend("http://127.0.0.1:9/v1").build_request(HELLO, ASK)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert "logprobs" not in backend("http://127.0.0.1:9/v1").build_request(HELLO, ASK.with_(top_logprobs=None))


def test_streamed_tokens_arrive_with_their_text(scripted_server):
    scripted_server.push(Act.events(chunk("Hi", [HI]), chunk(" there", [THERE]), chunk(None, finish="stop"), "[DONE]"))
    b = backend(scripted_server.base_url)
    chunks = list(b.stream(HELLO, ASK))
    assert (
        scripted_server.requests[0].body["logprobs"] is True and scripted_server.requests[0].body["top_logprobs"] == 2
    )
    tokens = [t for c in chunks for t in c.logprobs]
    assert [(t.token, t.logprob, t.top) for t in tokens] == [
        ("Hi", -0.1, (("Hi", -0.1), ("Yo", -2.5))),
        (" there", -0.5, ((" there", -0.5), ("!", -1.5))),
    ]
    assert [c.text for c in chunks if c.logprobs] == ["Hi", " there"]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].note is None


def test_a_whole_completion_carries_them_too(scripted_server):
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "scripted-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there"},
                "logprobs": {"content": [HI, THERE], "refusal": None},
                "finish_reason": "stop",
            }
        ],
    }
    scripted_server.push(Act.status(200, body))
    chunks = list(backend(scripted_server.base_url, stream=False).stream(HELLO, ASK))
    assert [t.token for t in chunks[0].logprobs] == ["Hi", " there"] and chunks[0].note is None
    assert math.isclose(chunks[0].logprobs[1].probability, math.exp(-0.5))


def test_a_server_that_refuses_them_still_answers_and_says_why(scripted_server):
    refusal = {
        "error": {
            "message": "logprobs is not supported with this model.",
            "type": "invalid_request_error",
            "param": "logprobs",
            "code": "unsupported_parameter",
        }
    }
    scripted_server.push(Act.status(400, refusal), Act.stream("Hi", " there"))
    b = backend(scripted_server.base_url, max_retries=0)
    reply = collect(b.stream(HELLO, ASK))
    assert reply.text == "Hi there" and reply.finish_reason == "stop"
    first, second = (r.body for r in scripted_server.requests)
    assert first["logprobs"] is True and "logprobs" not in second and "top_logprobs" not in second
    assert reply.note.startswith("No per-token probabilities: 127.0.0.1") and "not supported" in reply.note
    assert "logprobs" not in b.last_request  # the panel shows the request that answered


def test_a_server_that_ignores_them_gets_a_note(scripted_server):
    scripted_server.push(Act.stream("Hi", " there"))
    chunks = list(backend(scripted_server.base_url).stream(HELLO, ASK))
    assert "".join(c.text for c in chunks) == "Hi there" and not any(c.logprobs for c in chunks)
    assert "answered without them" in chunks[-1].note
    # Not asked for: no note.
    scripted_server.push(Act.stream("Hi"))
    assert list(backend(scripted_server.base_url).stream(HELLO, ASK.with_(top_logprobs=None)))[-1].note is None


def test_other_bad_requests_are_not_mistaken_for_a_refusal(scripted_server):
    scripted_server.push(Act.status(400, {"error": {"message": "temperature is too high", "type": "invalid"}}))
    with pytest.raises(BackendError) as e:
        list(backend(scripted_server.base_url, max_retries=0).stream(HELLO, ASK))
    assert e.value.kind == "bad_request" and len(scripted_server.requests) == 1


def test_continuing_a_started_answer_is_refused_before_any_request(scripted_server):
    with pytest.raises(BackendError) as e:
        list(backend(scripted_server.base_url).stream([*HELLO, Message("assistant", "Hi")], ASK))
    assert e.value.status == 400 and "local engines" in e.value.message
    assert scripted_server.requests == []
