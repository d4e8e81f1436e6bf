"""The app's OpenAI-compatible endpoint (llm_levels/web/openai_*.py), tested on the REAL running app.

Two app processes at most: the shared ``app_server`` (default settings: 127.0.0.1, no LOCAL_API_KEY) and
one started here with LOCAL_API_KEY set and a one-slot, one-waiter queue (``keyed_app``). Requests go
through the official ``openai`` client (sync and async) and through raw ``httpx`` for the error shapes.
Answers are never hard-coded: greedy answers are compared with each other (stream vs non-stream,
concurrent vs one at a time, with a stop string vs without).

A few small tests at the end build the router in-process around a real (never started) AppRuntime,
for the access rules that need settings a running app here does not have (a public bind).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from llm_levels.core import GenParams, Message

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-local-TEST-SECRET-4321"
MODEL_NAME = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "What is the capital of France?"}]
HELLO_MESSAGES = [Message(**m) for m in HELLO]
ERROR_FIELDS = {"message", "type", "param", "code"}


# ----------------------------------------------------------------------------------------- app processes
@dataclass
class RunningApp:
    url: str
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    first_request: dict | None = None

    @property
    def v1(self) -> str:
        return self.url.rstrip("/") + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(tmp: Path, extra_env: dict[str, str], *, key: str | None) -> RunningApp:
    port = _free_port()
    env = dict(os.environ)
    example = (ROOT / ".env.example").read_text() if (ROOT / ".env.example").exists() else ""
    for name in re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.M):
        env[name] = ""  # empty = the default: a developer's .env (app.py loads it) cannot change this app
    env.update(
        {
            "GRADIO_SERVER_PORT": str(port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            "LOCAL_API_KEY": key or "",
        }
    )
    env.update(extra_env)
    log_path = tmp / f"app-{port}.log"
    out = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    app = RunningApp(f"http://127.0.0.1:{port}", port, log_path, proc)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{app.log()[-3000:]}")
        try:
            if httpx.get(app.v1 + "/models", headers=headers, timeout=2).status_code == 200:
                return app
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    _stop(app)
    raise RuntimeError(f"the app did not answer within 180 s:\n{app.log()[-3000:]}")


def _stop(app: RunningApp) -> None:
    if app.proc is None or app.proc.poll() is not None:
        return
    app.proc.terminate()
    try:
        app.proc.wait(20)
    except subprocess.TimeoutExpired:
        app.proc.kill()
        app.proc.wait(10)


@pytest.fixture(scope="module")
def app(request, tmp_path_factory) -> RunningApp:
    """The app with default settings: the shared ``app_server`` when the suite has it, else our own."""
    try:
        shared = request.getfixturevalue("app_server")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield RunningApp(str(shared.url), int(shared.port), Path(shared.log_path))
        return
    own = _start_app(tmp_path_factory.mktemp("v1-app"), {}, key=None)
    try:
        yield own
    finally:
        _stop(own)


@pytest.fixture(scope="module")
def keyed_app(tmp_path_factory) -> RunningApp:
    """An app with LOCAL_API_KEY set, one generation at a time and room for one waiting request."""
    app = _start_app(
        tmp_path_factory.mktemp("v1-keyed"),
        {"LOCAL_CONCURRENCY": "1", "MAX_QUEUE_SIZE": "1", "MAX_NEW_TOKENS_CAP": "1000"},
        key=KEY,
    )
    # The page answers before the model has finished loading (it loads in the background): this first
    # request is sent at once and must wait for the model rather than fail.
    t0 = time.perf_counter()
    r = httpx.post(
        app.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "local", "messages": HELLO, "max_tokens": 4, "temperature": 0},
        timeout=120,
    )
    app.first_request = {"status": r.status_code, "json": r.json(), "s": time.perf_counter() - t0}
    try:
        yield app
    finally:
        _stop(app)


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    # The endpoint needs no key on 127.0.0.1, but the openai client insists on one.
    with openai.OpenAI(base_url=app.v1, api_key="not-needed", max_retries=0, timeout=120) as c:
        yield c


def _greedy(client, prompt: str, max_tokens: int = 10, **kw):
    return client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0, **kw
    )


def _assert_error_shape(r: httpx.Response, status: int, *, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_FIELDS, err
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    assert isinstance(err["type"], str) and err["type"]
    if param is not None:
        assert err["param"] == param, err
    return err


def _wait_for_log(app: RunningApp, pattern: str, timeout_s: float = 15) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while True:
        m = re.search(pattern, app.log())
        if m or time.monotonic() > deadline:
            assert m, f"{pattern!r} not in the app log:\n{app.log()[-2000:]}"
            return m
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------- models
@pytest.mark.slow
def test_models_lists_local_and_its_aliases(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "local"
    assert MODEL_NAME in ids and "embedded" in ids
    assert client.models.retrieve("local").id == "local"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.code == "model_not_found"


@pytest.mark.slow
def test_every_listed_id_answers(client):
    ids = [m.id for m in client.models.list().data]
    for model_id in ids:
        r = client.chat.completions.create(model=model_id, messages=HELLO, max_tokens=2, temperature=0)
        assert r.model == MODEL_NAME
        assert r.usage.completion_tokens >= 1


# ----------------------------------------------------------------------------------- chat completions
@pytest.mark.slow
def test_sync_stream_and_non_stream_agree_with_usage(client):
    full = _greedy(client, "Name three colors.", max_tokens=12)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    assert full.model == MODEL_NAME
    choice = full.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    text = choice.message.content
    assert text.strip()
    assert choice.finish_reason in ("stop", "length")
    u = full.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if choice.finish_reason == "length":
        assert u.completion_tokens == 12

    chunks = list(
        _greedy(client, "Name three colors.", max_tokens=12, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same answer either way
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    last = chunks[-1].usage
    assert (last.prompt_tokens, last.completion_tokens, last.total_tokens) == (
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens,
    )
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.slow
def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(_greedy(client, "Say hi.", max_tokens=4, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_async_client_stream_and_non_stream(app):
    async def run():
        async with openai.AsyncOpenAI(base_url=app.v1, api_key="not-needed", max_retries=0, timeout=120) as ac:
            full = await ac.chat.completions.create(model="local", messages=HELLO, max_tokens=8, temperature=0)
            stream = await ac.chat.completions.create(
                model="local",
                messages=HELLO,
                max_tokens=8,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, usage = [], None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage:
                    usage = chunk.usage
            return full, "".join(parts), usage

    full, streamed, usage = asyncio.run(run())
    assert full.choices[0].message.content.strip()
    assert streamed == full.choices[0].message.content
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens


@pytest.mark.slow
def test_stop_string_ends_the_answer_where_it_first_appears(client):
    prompt = "Write a short sentence about the sea."
    whole = _greedy(client, prompt, max_tokens=20).choices[0].message.content
    words = [w for w in re.findall(r"[A-Za-z]{3,}", whole)]
    assert len(words) >= 2, whole
    stop = words[1]  # a word from the model's own answer, not the first one
    expected = whole[: whole.find(stop)]
    cut = _greedy(client, prompt, max_tokens=20, stop=[stop, "\u2603never"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 20
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in _greedy(client, prompt, max_tokens=20, stop=stop, stream=True)
        if c.choices
    )
    assert streamed == expected


@pytest.mark.slow
def test_seed_reproduces_a_sampled_answer(client):
    def sample(**kw):
        return client.chat.completions.create(
            model="local", messages=HELLO, max_tokens=8, temperature=1.0, top_p=0.95, seed=1234, **kw
        )

    a = sample().choices[0].message.content
    b = sample().choices[0].message.content
    c = "".join(ch.choices[0].delta.content or "" for ch in sample(stream=True) if ch.choices)
    assert a == b == c and a.strip()


@pytest.mark.slow
def test_n_answers_come_as_n_choices_and_answer_i_is_the_answer_with_seed_plus_i(client):
    """Talebi's ``n=5`` at level 2, against the app's own endpoint: one request, several answers."""
    kw = dict(model="local", messages=HELLO, max_tokens=8, temperature=1.0, logprobs=True, top_logprobs=2)
    several = client.chat.completions.create(n=3, seed=40, **kw)
    assert [c.index for c in several.choices] == [0, 1, 2]
    singles = [client.chat.completions.create(seed=40 + i, **kw) for i in range(3)]
    assert [c.message.content for c in several.choices] == [s.choices[0].message.content for s in singles]
    assert all(c.logprobs is not None and c.logprobs.content for c in several.choices)
    assert several.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert several.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    # Streamed: each chunk names its answer; joined, the answers are the same, and so is the usage.
    texts, finished, usage = ["", "", ""], [None] * 3, None
    for chunk in client.chat.completions.create(
        n=3, seed=40, stream=True, stream_options={"include_usage": True}, **kw
    ):
        usage = chunk.usage or usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finished[c.index] = c.finish_reason or finished[c.index]
    assert texts == [c.message.content for c in several.choices]
    assert all(f in ("stop", "length") for f in finished) and usage.completion_tokens == several.usage.completion_tokens


@pytest.mark.slow
def test_the_hosted_backend_asks_for_n_answers_in_one_request(app, client):
    """Level 2's ``n``: :meth:`OpenAIBackend.answers` sends ``n`` once and gets the answers in order."""
    from llm_levels.backends.openai_api import OpenAIBackend

    b = OpenAIBackend(model="local", api_key="not-needed", base_url=app.v1, timeout_s=120, max_retries=0)
    try:
        answers = b.answers(HELLO_MESSAGES, GenParams(max_new_tokens=6, temperature=1.0, seed=7), 2)
    finally:
        b.close()
    assert b.last_request["n"] == 2 and b.last_request["stream"] is False
    direct = client.chat.completions.create(model="local", messages=HELLO, max_tokens=6, temperature=1.0, n=2, seed=7)
    assert [a.text for a in answers] == [c.message.content for c in direct.choices]
    assert answers[0].usage is not None and answers[0].usage.output_tokens == direct.usage.completion_tokens
    assert answers[1].usage is None and all(a.finish_reason in ("stop", "length") for a in answers)


@pytest.mark.slow
def test_harmless_openai_fields_are_accepted(client):
    r = client.chat.completions.create(
        model="local",
        messages=[{"role": "developer", "content": "Answer briefly."}, *HELLO],
        max_tokens=3,
        temperature=0,
        n=1,
        user="learner-1",
        presence_penalty=0,
        frequency_penalty=0,
        logprobs=False,
        metadata={"talk": "demo"},
        response_format={"type": "text"},
        max_completion_tokens=3,
    )
    assert r.usage.completion_tokens <= 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"n": 9}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
            "response_format",
        ),
        ({"presence_penalty": 0.5}, "presence_penalty"),
    ],
)
def test_unsupported_features_are_refused_clearly(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=3, **kwargs)
    assert e.value.status_code == 400 and e.value.param == param
    assert "not supported" in e.value.message


@pytest.mark.slow
def test_logprobs_come_back_in_openais_shape(client):
    """Per-token probabilities, stream and non-stream, parsed by the openai client into its own types."""
    from openai.types.chat.chat_completion import ChoiceLogprobs

    r = client.chat.completions.create(
        model="local", messages=HELLO, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3
    )
    lp = r.choices[0].logprobs
    assert isinstance(lp, ChoiceLogprobs) and len(lp.content) == r.usage.completion_tokens
    assert "".join(t.token for t in lp.content) == r.choices[0].message.content
    for t in lp.content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        # Greedy: the chosen token is the most likely one, and the alternatives come most likely first.
        assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert bytes(t.bytes) == t.token.encode()
    streamed = [
        c
        for c in client.chat.completions.create(
            model="local", messages=HELLO, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3, stream=True
        )
        if c.choices and c.choices[0].logprobs is not None
    ]
    tokens = [t for c in streamed for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in tokens] == [(t.token, round(t.logprob, 4)) for t in lp.content]
    # Without logprobs nothing is added; top_logprobs alone is refused as OpenAI refuses it.
    assert (
        client.chat.completions.create(model="local", messages=HELLO, temperature=0, max_tokens=3).choices[0].logprobs
        is None
    )
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=3, top_logprobs=2)
    assert e.value.body["param"] == "top_logprobs"


@pytest.mark.slow
def test_the_apps_own_hosted_backend_talks_to_it(client, app):
    """Level 2 with no key: the project's OpenAIBackend pointed at this endpoint, as the Hosted-API tab does."""
    from llm_levels.backends.openai_api import OpenAIBackend
    from llm_levels.core import GenParams, Message

    expected = _greedy(client, "Name a planet.", max_tokens=8).choices[0].message.content
    params = GenParams(max_new_tokens=8, temperature=0.0, top_k=5, repetition_penalty=1.0)
    for stream in (True, False):
        backend = OpenAIBackend(model="local", api_key="not-needed", base_url=app.v1, stream=stream, max_retries=0)
        try:
            reply = backend.complete([Message("user", "Name a planet.")], params)
        finally:
            backend.close()
        assert reply.text == expected
        assert reply.usage is not None and 1 <= reply.usage.output_tokens <= 8
        assert reply.finish_reason in ("stop", "length")


# --------------------------------------------------------------------------------------- error shapes
@pytest.mark.slow
def test_error_shapes_with_raw_http(app):
    url = app.v1 + "/chat/completions"
    with httpx.Client(timeout=30) as h:
        err = _assert_error_shape(
            h.post(url, content=b'{"model": "local", "messages": [', headers={"Content-Type": "application/json"}), 400
        )
        assert err["type"] == "invalid_request_error" and "JSON" in err["message"]
        _assert_error_shape(h.post(url, json=["not", "an", "object"]), 400)
        err = _assert_error_shape(h.post(url, json={"model": "local"}), 400, param="messages")
        assert "messages" in err["message"]
        _assert_error_shape(h.post(url, json={"model": "local", "messages": []}), 400, param="messages")
        _assert_error_shape(h.post(url, json={"messages": HELLO}), 400, param="model")
        err = _assert_error_shape(h.post(url, json={"model": "gpt-5", "messages": HELLO}), 404, param="model")
        assert err["code"] == "model_not_found" and "local" in err["message"]
        err = _assert_error_shape(
            h.post(url, json={"model": "local", "messages": HELLO, "temperature": 3}), 400, param="temperature"
        )
        assert "between 0 and 2" in err["message"]
        _assert_error_shape(
            h.post(url, json={"model": "local", "messages": HELLO, "temperature": "hot"}), 400, param="temperature"
        )
        err = _assert_error_shape(
            h.post(url, json={"model": "local", "messages": HELLO, "max_tokens": 10**6}), 400, param="max_tokens"
        )
        assert "MAX_NEW_TOKENS_CAP" in err["message"]
        err = _assert_error_shape(
            h.post(url, json={"model": "local", "messages": HELLO, "temprature": 0}), 400, param="temprature"
        )
        assert "Unrecognized" in err["message"]
        _assert_error_shape(
            h.post(url, json={"model": "local", "messages": [{"role": "robot", "content": "x"}]}), 400, param="messages"
        )
        _assert_error_shape(
            h.post(
                url,
                json={
                    "model": "local",
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
                    ],
                },
            ),
            400,
        )
        _assert_error_shape(
            h.post(url, json={"model": "local", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}),
            400,
            param="stop",
        )
        _assert_error_shape(h.get(url), 405)
        _assert_error_shape(h.post(app.v1 + "/embeddings", json={}), 404)


@pytest.mark.slow
def test_too_long_conversation_is_refused(app):
    long = "word " * 5000  # 25,000 characters: above the default MAX_PROMPT_CHARS (20,000)
    r = httpx.post(
        app.v1 + "/chat/completions",
        timeout=30,
        json={"model": "local", "messages": [{"role": "user", "content": long}]},
    )
    err = _assert_error_shape(r, 400, param="messages")
    assert "too long" in err["message"]


# ------------------------------------------------------------------------------ cancellation, queueing
# A prompt the embedded model answers at length (greedy, measured: 400 of 400 tokens), so a generation holds
# the model for seconds. ("Count from 1 to 1000…" stopped after 52 tokens once the int8 rounding changed.)
LONG_PROMPT = "Write a long story about a robot who learns to paint."


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_closing_a_stream_stops_the_generation(client, app):
    # This prompt does not stop early on its own: 40 tokens end on "length" (and tell how fast the model
    # is right now, on a machine that may be busy).
    t0 = time.perf_counter()
    assert _greedy(client, LONG_PROMPT, max_tokens=40).choices[0].finish_reason == "length"
    t40 = time.perf_counter() - t0
    stream = _greedy(client, LONG_PROMPT, max_tokens=1000, stream=True)
    got = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
        if len(got) >= 3:
            break
    stream.close()  # the client goes away mid-answer (1000 tokens would take a minute or more)
    closed = time.perf_counter()
    # The server logs when the worker thread that owned this generation has ended.
    rid = chunk.id
    m = _wait_for_log(app, rf"{rid}: client went away; generation stopped after (\d+) chunk\(s\); worker ended")
    assert int(m.group(1)) < 200
    # ... and the model is free again: the next request does not wait behind the abandoned one.
    t0 = time.perf_counter()
    nxt = _greedy(client, "Say hi.", max_tokens=3)
    took = time.perf_counter() - t0
    assert nxt.usage.completion_tokens >= 1
    # Had the abandoned answer gone on, ~950 more tokens (about 24 x t40) would come first.
    assert took < max(5 * t40, 5.0), f"the next request took {took:.1f} s (40 tokens took {t40:.1f} s)"
    assert time.perf_counter() - closed < 10 * t40 + 10


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_client_timeout_on_non_stream_request_stops_the_generation(app):
    rid_before = set(re.findall(r"(chatcmpl-\w+): client went away", app.log()))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            app.v1 + "/chat/completions",
            timeout=httpx.Timeout(30, read=2.5),
            json={
                "model": "local",
                "messages": [{"role": "user", "content": LONG_PROMPT}],
                "max_tokens": 1000,
                "temperature": 0,
            },
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = set(re.findall(r"(chatcmpl-\w+): client went away", app.log())) - rid_before
        if new:
            break
        time.sleep(0.2)
    assert new, app.log()[-2000:]
    t0 = time.perf_counter()
    r = httpx.post(
        app.v1 + "/chat/completions",
        timeout=60,
        json={"model": "local", "messages": HELLO, "max_tokens": 3, "temperature": 0},
    )
    # 1000 tokens at even 15 tokens/s would hold the model for over a minute
    assert r.status_code == 200 and time.perf_counter() - t0 < 45


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_concurrent_requests_all_get_their_own_answers(client, app):
    prompts = ["Name a fruit.", "What is 2 plus 2?", "Say hello in French."]
    alone = [_greedy(client, p, max_tokens=8).choices[0].message.content for p in prompts]

    async def one(ac, i: int, prompt: str) -> str:
        kw = dict(model="local", messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0)
        if i == 1:  # one of them streams
            stream = await ac.chat.completions.create(stream=True, **kw)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return (await ac.chat.completions.create(**kw)).choices[0].message.content

    async def together() -> list[str]:
        async with openai.AsyncOpenAI(base_url=app.v1, api_key="x", max_retries=0, timeout=120) as ac:
            return list(await asyncio.gather(*[one(ac, i, p) for i, p in enumerate(prompts)]))

    # Each its own answer: decoded together in one batch, llama.cpp's steps round a little differently from
    # a request decoded alone, so compare how each starts (its first word, punctuation aside), not every word.
    def first_word(text: str) -> str:
        return "".join(c for c in (text.split() or [""])[0] if c.isalnum()).lower()

    together_answers = asyncio.run(together())
    for got, solo in zip(together_answers, alone):
        assert first_word(got) == first_word(solo), (got, solo)


# ---------------------------------------------------------------------------------- keyed app (LOCAL_API_KEY)
@pytest.mark.slow
def test_first_request_waits_for_the_model_to_load(keyed_app):
    first = keyed_app.first_request
    assert first["status"] == 200, first
    assert first["json"]["choices"][0]["message"]["content"].strip()


@pytest.mark.slow
def test_key_is_required_when_configured(keyed_app):
    url = keyed_app.v1 + "/chat/completions"
    body = {"model": "local", "messages": HELLO, "max_tokens": 2, "temperature": 0}
    err = _assert_error_shape(httpx.post(url, json=body, timeout=30), 401)
    assert err["code"] == "missing_api_key"
    r = httpx.post(url, json=body, timeout=30, headers={"Authorization": "Bearer sk-wrong-key"})
    err = _assert_error_shape(r, 401)
    assert err["code"] == "invalid_api_key" and "sk-wrong-key" not in r.text
    assert r.headers.get("www-authenticate") == "Bearer"
    _assert_error_shape(httpx.get(keyed_app.v1 + "/models", timeout=30), 401)

    with (
        openai.OpenAI(base_url=keyed_app.v1, api_key="sk-wrong-key", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.chat.completions.create(model="local", messages=HELLO, max_tokens=2)
    with openai.OpenAI(base_url=keyed_app.v1, api_key=KEY, max_retries=0, timeout=60) as good:
        assert (
            good.chat.completions.create(
                model="local", messages=HELLO, max_tokens=2, temperature=0
            ).usage.completion_tokens
            >= 1
        )
        assert next(m.id for m in good.models.list().data) == "local"
    assert KEY not in keyed_app.log()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_full_queue_answers_429_in_openai_shape(keyed_app):
    headers = {"Authorization": f"Bearer {KEY}"}
    with openai.OpenAI(base_url=keyed_app.v1, api_key=KEY, max_retries=0, timeout=120) as c:
        # 1000 tokens: long enough to hold the one slot for the whole test (llama.cpp makes 200 in ~1.5 s)
        running = c.chat.completions.create(
            model="local",
            max_tokens=1000,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": LONG_PROMPT}],
        )
        next(iter(running))  # A is generating: the one slot is taken
        waited: dict = {}

        def second():
            t0 = time.perf_counter()
            r = httpx.post(
                keyed_app.v1 + "/chat/completions",
                headers=headers,
                timeout=120,
                json={"model": "local", "messages": HELLO, "max_tokens": 3, "temperature": 0},
            )
            waited.update(status=r.status_code, s=time.perf_counter() - t0)

        t = threading.Thread(target=second)
        t.start()
        time.sleep(1.5)  # B is now waiting: the queue (MAX_QUEUE_SIZE=1) is full
        r = httpx.post(
            keyed_app.v1 + "/chat/completions",
            headers=headers,
            timeout=30,
            json={"model": "local", "messages": HELLO, "max_tokens": 3},
        )
        err = _assert_error_shape(r, 429)
        assert err["code"] == "queue_full" and "MAX_QUEUE_SIZE" in err["message"]
        assert int(r.headers["retry-after"]) >= 1
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="local", messages=HELLO, max_tokens=3)
        running.close()  # A goes away: B gets the slot
        t.join(120)
    assert waited["status"] == 200, waited


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_client_that_gives_up_while_waiting_leaves_the_line(keyed_app):
    headers = {"Authorization": f"Bearer {KEY}"}
    pattern = r"chatcmpl-\w+: client went away while waiting; left the line"
    before = len(re.findall(pattern, keyed_app.log()))
    with openai.OpenAI(base_url=keyed_app.v1, api_key=KEY, max_retries=0, timeout=120) as c:
        running = c.chat.completions.create(
            model="local",
            max_tokens=1000,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": LONG_PROMPT}],
        )
        next(iter(running))  # A holds the one slot
        with pytest.raises(httpx.ReadTimeout):  # B waits behind A, and gives up
            httpx.post(
                keyed_app.v1 + "/chat/completions",
                headers=headers,
                timeout=httpx.Timeout(30, read=1.0),
                json={"model": "local", "messages": HELLO, "max_tokens": 3, "temperature": 0},
            )
        deadline = time.monotonic() + 15
        while len(re.findall(pattern, keyed_app.log())) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(re.findall(pattern, keyed_app.log())) > before, keyed_app.log()[-2000:]
        # B's place is free again: C may wait in line (MAX_QUEUE_SIZE=1) instead of getting 429.
        got: dict = {}
        t = threading.Thread(
            target=lambda: got.update(
                r=httpx.post(
                    keyed_app.v1 + "/chat/completions",
                    headers=headers,
                    timeout=120,
                    json={"model": "local", "messages": HELLO, "max_tokens": 3, "temperature": 0},
                )
            )
        )
        t.start()
        time.sleep(0.5)
        running.close()
        t.join(120)
    assert got["r"].status_code == 200, got["r"].text


# ------------------------------------------------------------------- in-process: access rules, parsing
def _router_app(env: dict[str, str]):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.web.openai_routes import create_router

    runtime = AppRuntime(Settings.from_env(env))  # real runtime, never started: nothing is loaded
    api = FastAPI()
    api.include_router(create_router(runtime))
    return TestClient(api), runtime


def test_public_bind_without_key_closes_the_endpoint_but_not_to_the_app_itself(monkeypatch):
    monkeypatch.delenv("LOCAL_API_KEY", raising=False)
    tc, runtime = _router_app({"GRADIO_SERVER_NAME": "0.0.0.0"})
    err = _assert_error_shape(tc.get("/v1/models"), 403)
    assert "LOCAL_API_KEY" in err["message"]
    _assert_error_shape(tc.get("/v1/models", headers={"Authorization": "Bearer anything"}), 403)
    _assert_error_shape(tc.post("/v1/chat/completions", json={"model": "local", "messages": HELLO}), 403)
    # the app's own Hosted-API tab calls /v1 with its per-process key
    assert runtime._local_api_key() == runtime.internal_api_key
    ok = tc.get("/v1/models", headers={"Authorization": f"Bearer {runtime.internal_api_key}"})
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "local"


def test_public_bind_with_key_and_loopback_without_key(monkeypatch):
    monkeypatch.setenv("LOCAL_API_KEY", KEY)
    tc, runtime = _router_app({"GRADIO_SERVER_NAME": "0.0.0.0"})
    assert tc.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert _assert_error_shape(tc.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
    assert runtime._local_api_key() == KEY
    monkeypatch.delenv("LOCAL_API_KEY")
    tc, _ = _router_app({"GRADIO_SERVER_NAME": "127.0.0.1"})
    assert tc.get("/v1/models").status_code == 200  # a learner's own machine: open


def test_loopback_addresses():
    from llm_levels.web.openai_auth import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""))


def test_parse_request_maps_openai_fields():
    from llm_levels.config import Settings
    from llm_levels.web.openai_errors import ApiError
    from llm_levels.web.openai_schema import parse_request

    settings = Settings.from_env({"MAX_NEW_TOKENS_CAP": "100"})
    req = parse_request(
        {
            "model": "local",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_completion_tokens": 7,
            "stop": "\n",
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        settings,
    )
    assert [m.role for m in req.conversation] == ["system", "user"] and req.conversation[1].content == "Hi"
    assert req.params.max_new_tokens == 7 and req.params.stop == ("\n",) and req.params.seed == 3
    assert req.params.temperature == 1.0  # OpenAI's default
    assert req.stream and req.include_usage
    assert parse_request({"model": "local", "messages": HELLO}, settings).params.max_new_tokens == 100
    for bad, param in [
        ({"max_tokens": 101}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
        ({"n": True}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(ApiError) as e:
            parse_request({"model": "local", "messages": HELLO, **bad}, settings)
        assert e.value.status == 400 and e.value.param == param, (bad, e.value.message)


def test_a_model_that_cannot_load_answers_503_in_openai_shape(monkeypatch):
    monkeypatch.delenv("LOCAL_API_KEY", raising=False)
    tc, _ = _router_app({"LOCAL_MODEL": "/nonexistent/llm-levels-test-model"})
    r = tc.post("/v1/chat/completions", json={"model": "local", "messages": HELLO, "max_tokens": 2})
    err = _assert_error_shape(r, 503)
    assert err["message"].startswith("The local model is not available") and "LOCAL_MODEL" in err["message"]
    # A path is never listed: only the local ids (the default engine, then each engine by name).
    assert [m["id"] for m in tc.get("/v1/models").json()["data"]] == ["local", "local-llama.cpp", "local-transformers"]


def test_validation_errors_are_one_line_and_name_the_first_bad_field():
    from llm_levels.config import Settings
    from llm_levels.web.openai_errors import ApiError
    from llm_levels.web.openai_schema import parse_request

    settings = Settings.from_env({})
    cases = [
        ({"messages": HELLO, "temprature": 0, "tools": [{}]}, "temprature", "Unrecognized request argument"),
        ({"messages": HELLO, "tools": [{}]}, "tools", "not supported"),
        ({"messages": HELLO, "top_k": 1.5}, "top_k", "whole number"),
        ({"messages": HELLO, "logprobs": "yes"}, "logprobs", "true or false"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content", "text"),
        ({"messages": [{"role": "tool", "content": "x"}, *HELLO]}, "messages[0]", "tool messages"),
        ({"messages": HELLO, "stream_options": "yes"}, "stream_options", "object"),
    ]
    for body, param, words in cases:
        with pytest.raises(ApiError) as e:
            parse_request({"model": "local", **body}, settings)
        err = e.value
        assert err.status == 400 and err.param == param and words in err.message, (body, err.body())
        assert "\n" not in err.message and "pydantic" not in err.message.lower()
    # Harmless fields are ignored; "off" values of unsupported ones are accepted.
    req = parse_request(
        {
            "model": "local",
            "messages": HELLO,
            "user": "u",
            "store": False,
            "tools": [],
            "presence_penalty": 0,
            "tool_choice": "none",
            "n": 1,
            "stop": None,
        },
        settings,
    )
    assert req.params.stop == () and req.params.top_logprobs is None


def test_a_bug_answers_500_without_internals(monkeypatch, caplog):
    monkeypatch.delenv("LOCAL_API_KEY", raising=False)
    tc, runtime = _router_app({})

    def broken(engine=None):
        raise RuntimeError("internal detail 0xDEADBEEF")

    monkeypatch.setattr(runtime, "line", broken)
    with caplog.at_level("INFO", logger="llm_levels.web.openai"):
        r = tc.post("/v1/chat/completions", json={"model": "local", "messages": HELLO, "max_tokens": 2})
        bad = tc.post("/v1/chat/completions", json={"model": "local", "messages": HELLO, "n": 30})
    err = _assert_error_shape(r, 500)
    assert err["code"] == "internal" and "DEADBEEF" not in r.text
    assert [rec.exc_info is not None for rec in caplog.records if "DEADBEEF" in str(rec.exc_info)] == [True]
    # Refused input: one log line, no traceback.
    _assert_error_shape(bad, 400, param="n")
    refusals = [rec for rec in caplog.records if "400" in rec.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None


def test_a_model_still_loading_answers_503_with_retry_after(monkeypatch):
    from llm_levels.web import openai_turn

    monkeypatch.delenv("LOCAL_API_KEY", raising=False)
    monkeypatch.setattr(openai_turn, "MODEL_WAIT_S", 0.3)
    tc, runtime = _router_app({})
    release = threading.Event()

    def slow_load(*args, **kwargs):
        release.wait(30)
        raise RuntimeError("never loads in this test")

    monkeypatch.setattr(runtime.models, "get", slow_load)
    try:
        t0 = time.monotonic()
        r = tc.post("/v1/chat/completions", json={"model": "local", "messages": HELLO, "max_tokens": 2})
        err = _assert_error_shape(r, 503)
        assert err["code"] == "model_loading" and int(r.headers["retry-after"]) >= 1
        assert time.monotonic() - t0 < 10
    finally:
        release.set()
