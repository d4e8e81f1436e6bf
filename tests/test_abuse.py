"""Hostile input at the entrances, in process (milliseconds; issue 14): ``/v1`` built around a real, never
started runtime, the text cleaner, and the page's body bound. Every case must be answered 4xx in OpenAI's
shape, at once, with one log line and no traceback. The served app's side is in test_abuse_app.py."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llm_levels.text_clean import REPLACEMENT, clean_text, clean_value

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """The /v1 routes of a runtime whose model cannot load: a request that gets past the checks is a 503."""
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.web.openai_routes import create_router

    settings = Settings.from_env({"PRELOAD_MODEL": "false", "LOCAL_MODEL": str(tmp_path_factory.mktemp("none"))})
    api = FastAPI()
    api.include_router(create_router(AppRuntime(settings)))
    with TestClient(api, raise_server_exceptions=False) as tc:
        yield tc


def post(tc: TestClient, body: bytes | dict, **headers: str | bytes):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return tc.post("/v1/chat/completions", content=content, headers={"content-type": "application/json", **headers})


def request(**fields) -> dict:
    return {"model": "local", "messages": HELLO, "max_tokens": 2, **fields}


def refused(r, status: int = 400, param: str | None = None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "\n" not in err["message"] and len(err["message"]) < 400, err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err["message"]


# ------------------------------------------------------------------------------------------ the cleaner
def test_clean_text_replaces_lone_surrogates_pairs_split_ones_and_drops_nul():
    assert clean_text("a\ud800b") == f"a{REPLACEMENT}b"
    assert clean_text("\udfff\ud800") == REPLACEMENT * 2
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a pair that arrived as two code points
    assert clean_text("a\x00b") == "ab"
    kept = "tab\t nl\n esc\x1b[31m rtl\u202e emoji👩‍👩‍👧 é"
    assert clean_text(kept) is kept  # valid text: the same object, untouched
    for text in ("\ud800", "x\udc00y\x00", "\ud83d"):
        clean_text(text).encode("utf-8")


def test_clean_value_walks_lists_and_objects_keys_included():
    assert clean_value({"k\ud800": ["a\x00", 1, None, ("\udfff",)]}) == {
        f"k{REPLACEMENT}": ["a", 1, None, (REPLACEMENT,)]
    }
    deep: list = ["\ud800"]
    for _ in range(100):
        deep = [deep]
    assert clean_value(deep, max_depth=10) is not None  # stops at the depth it was given, no RecursionError


# -------------------------------------------------------------------------------------------------- /v1
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # past the parser's own recursion limit
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"model":"local","messages":[{"role":"user","content":"x"}],"tools":' + b"[" * 900 + b"]" * 900 + b"}",
        json.dumps(
            request(messages=[{"role": "user", "content": "x", "name": json.loads("[" * 40 + "]" * 40)}])
        ).encode(),
    ],
    ids=["100k-lists", "50k-objects", "900-in-tools", "40-in-a-message"],
)
def test_deep_nesting_is_a_400_not_a_recursion_error(v1, body, caplog):
    with caplog.at_level(logging.INFO):
        message = refused(post(v1, body), 400)
    assert "nested too deeply" in message
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    "raw, param",
    [
        (b'{"model":"local","messages":[{"role":"u\\ud800","content":"ab"}]}', "messages[0]"),
        (b'{"model":"local","messages":[{"role":"user","content":"ab"}],"x\\ud800":1}', None),
        (b'{"model":"l\\ud800","messages":[{"role":"user","content":"ab"}]}', "model"),
    ],
)
def test_surrogates_anywhere_in_a_refused_body_come_back_encodable(v1, raw, param):
    r = post(v1, raw)
    assert r.status_code in (400, 404), r.text
    assert REPLACEMENT in r.json()["error"]["message"] + str(r.json()["error"]["param"])
    r.content.decode("utf-8")


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"max_tokens": 10**4000}, "max_tokens", "..."),
        ({"seed": -(10**4000)}, "seed", "..."),
        ({"top_logprobs": 10**30, "logprobs": True}, "top_logprobs", "between"),
        ({"stop": ["a"] * 100_000}, "stop", "at most 4"),
        ({"stop": ["a" * 100_000]}, "stop", "characters"),
        ({"stop": [1, None]}, "stop", "strings"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content", "string"),
        ({"messages": [{"role": "user", "content": [None, 3]}]}, "messages[0].content", "text"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role", "string"),
        ({"messages": [None]}, "messages[0]", "object"),
        ({"messages": [{"role": "user", "content": "x"}] * 5_000}, "messages", "MAX_MESSAGES"),
        ({"messages": [{"role": "user", "content": ""}] * 30_000}, "messages", "MAX_MESSAGES"),
        ({"model": "m" * 100_000}, "model", "does not exist"),
        ({"x" * 100_000: 1}, None, "Unrecognized"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "true or false"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_odd_values_are_refused_at_once_with_a_short_message(v1, fields, param, words, caplog):
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="llm_levels.web.openai"):
        r = post(v1, request(**fields))
    assert time.perf_counter() - t0 < 2
    message = refused(r, 404 if "model" in fields else 400, param)
    assert words in message
    lines = [rec for rec in caplog.records if rec.name == "llm_levels.web.openai"]
    assert len(lines) == 1 and lines[0].exc_info is None and "\n" not in lines[0].getMessage()


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"model":"local","messages":[{"role":"user","content":"ab"}],"temperature":NaN}', "finite"),
        (b'{"model":"local","messages":[{"role":"user","content":"ab"}],"top_p":Infinity}', "finite"),
        (b'{"model":"local","messages":[{"role":"user","content":"ab"}],"temperature":1e999}', "finite"),
        (b'{"model":"local","messages":[{"role":"user","content":"a\xff\xfeb"}]}', "parse"),
        (b'{"model":"local","messages":[{"role":"user","content":"ab"}],"n":NaN}', "n=NaN"),
        (b"", "parse"),
        (b"[1, 2]", "object"),
    ],
)
def test_nan_infinity_and_invalid_utf8_are_400s(v1, raw, words):
    assert words in refused(post(v1, raw), 400)


def test_a_nul_or_a_surrogate_in_a_message_gets_past_the_checks(v1):
    """Valid after cleaning: such a request is not refused (here it reaches the model, which cannot load)."""
    raw = (
        b'{"model":"local","messages":[{"role":"user","content":"a\\ud800b\\u0000c"}],"stop":"\\udfff","max_tokens":2}'
    )
    r = post(v1, raw)
    assert r.status_code == 503 and "not available" in r.json()["error"]["message"]


def test_huge_and_many_headers_do_not_break_the_endpoint(v1):
    r = post(v1, request(n=30), **{"x-big": "a" * 100_000, "authorization": b"Bearer \xe9\xff"})
    refused(r, 400, "n")


# ------------------------------------------------------------------------------------- the page's bodies
def test_page_bodies_past_the_bound_are_413_before_the_app_reads_them():
    from llm_levels.web.body_limit import JsonBodyLimit

    seen = []
    inner = FastAPI()

    @inner.post("/gradio_api/queue/join")
    async def join(body: dict) -> dict:
        seen.append(len(json.dumps(body)))
        return {"ok": True}

    @inner.post("/v1/x")
    async def v1x(body: dict) -> dict:
        return {"ok": True}

    app = JsonBodyLimit(inner, max_bytes=1000)
    with TestClient(app) as tc:
        assert tc.post("/gradio_api/queue/join", json={"data": ["a" * 900]}).status_code == 200
        big = json.dumps({"data": ["a" * 2000]}).encode()
        r = tc.post("/gradio_api/queue/join", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "too large" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 200

        r = tc.post("/gradio_api/queue/join", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert tc.post("/v1/x", content=big, headers={"content-type": "application/json"}).status_code == 200
    assert seen == [len(json.dumps({"data": ["a" * 900]}))]


def test_messages_from_dicts_keeps_only_text_parts_that_are_text():
    from llm_levels.core import messages_from_dicts

    parts = [{"type": "text", "text": 5}, {"type": "text", "text": "a"}, {"type": "text"}, None, {"type": "image"}]
    (message,) = messages_from_dicts([{"role": "user", "content": parts}])
    assert message.content == "a"
