"""Hostile input against the REAL running app (issue 14): ``/v1`` and the page's own event stream.

The shared ``app_server`` (real embedded model on llama.cpp, a real llm-katan echo server as its hosted
backend). Each case must end in a 4xx or an answer, never a 5xx; the app's log must hold no traceback for
it; and the same session (or the next request) must keep working. The fast, in-process cases are in
test_abuse.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from served_app import dependency, gradio_config  # noqa: E402

HELLO = [{"role": "user", "content": "Say hi."}]


class LogSince:
    """The app log written since this object was made."""

    def __init__(self, app) -> None:
        self.app = app
        self.start = len(app.log())

    def text(self) -> str:
        time.sleep(0.3)  # the app's last lines reach the file
        return self.app.log()[self.start :]


def v1_post(app, raw: bytes, timeout: float = 120) -> httpx.Response:
    return httpx.post(
        f"{app.url.rstrip('/')}/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=timeout,
    )


def page_event(app, api_name: str, values: list | None, session: str, fill: object = None) -> dict:
    """One event through Gradio's queue as the page's own JavaScript sends it (raw JSON, so a lone surrogate
    can travel as ``\\ud800``), read from the event stream: the completion message. ``values`` are the
    inputs that are not ``gr.State``; ``None`` sends ``fill`` for each of them."""
    root = app.url.rstrip("/")
    cfg = gradio_config(root)
    dep, fn_index = dependency(cfg, api_name)
    kinds = {c["id"]: c["type"] for c in cfg["components"]}
    given = iter(values if values is not None else [fill] * len(dep["inputs"]))
    data = [None if kinds[i] == "state" else next(given) for i in dep["inputs"]]
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session})  # ensure_ascii: \ud800
    with httpx.Client(timeout=120) as client:
        r = client.post(root + "/gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        with client.stream("GET", root + "/gradio_api/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        return msg
    raise AssertionError("the event stream ended without a completion")


# ------------------------------------------------------------------------------------------- surrogates
def test_a_lone_surrogate_through_v1_is_answered_and_the_next_request_too(app_server):
    log = LogSince(app_server)
    raw = b'{"model":"local","messages":[{"role":"user","content":"Say \\ud800 hi."}],"max_tokens":4,"temperature":0}'
    r = v1_post(app_server, raw)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] is not None
    streamed = v1_post(app_server, raw.replace(b'"temperature":0', b'"temperature":0,"stream":true'))
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text[-300:]
    with openai.OpenAI(base_url=f"{app_server.url.rstrip('/')}/v1", api_key="x", max_retries=0) as client:
        again = client.chat.completions.create(model="local", messages=HELLO, max_tokens=4, temperature=0)
    assert again.choices[0].message.content
    assert "Traceback" not in log.text()


def test_a_lone_surrogate_through_the_page_leaves_the_session_working(app_server):
    """Through the Chat tab's event stream, as the page sends it: the session used to die (Gradio could not
    encode the conversation any more) and every later prompt in it failed."""
    log = LogSince(app_server)
    session = uuid.uuid4().hex[:12]
    first = page_event(app_server, "chat_send", ["Say \ud800 hi.", "local", 4, False, 5], session)
    assert first.get("success"), first
    chat = first["output"]["data"][0]
    assert H.to_messages(chat)[0].content == "Say \ufffd hi."
    for text in ("And again.", "A NUL\x00 too \udfff."):
        later = page_event(app_server, "chat_send", [text, "local", 4, False, 5], session)
        assert later.get("success"), later
    messages = H.to_messages(later["output"]["data"][0])
    assert [m.content for m in messages if m.role == "user"] == ["Say \ufffd hi.", "And again.", "A NUL too \ufffd."]
    assert "Traceback" not in log.text()


# ----------------------------------------------------------------------------------- refusals on the page
def test_refused_page_input_logs_one_line_and_no_traceback(app_server):
    """A ``gr.Error`` raised for bad input made Gradio print its traceback; now it is one log line."""
    log = LogSince(app_server)
    client = app_server.client()
    for args in (("Hi", "local", "abc"), ("Hi", "no-such-backend", 4), ("", "local", 4)):
        with pytest.raises(AppError) as e:
            client.predict(*args, api_name="/chat_send")
        assert "\n" not in str(e.value).strip()
    text = log.text()
    assert "Traceback" not in text, text[-3000:]
    refusals = [line for line in text.splitlines() if "llm_levels.ui: chat_send: refused:" in line]
    assert len(refusals) == 3, text[-3000:]
    chat, *_ = client.predict("Say hi.", "local", 4, api_name="/chat_send")  # the session goes on
    assert H.to_messages(chat)[-1].role == "assistant"


@pytest.mark.parametrize(
    "api_name, fill, words",
    [
        ("chat_example", None, "event_data"),  # a handler that takes gr.SelectData, sent without it
        ("api_pick_endpoint", [], "one value"),  # Gradio passes a list to a one-value dropdown
        ("api_list_models", [], "one value"),
    ],
)
def test_odd_shapes_sent_to_page_events_are_refused_in_one_line(app_server, api_name, fill, words):
    log = LogSince(app_server)
    done = page_event(app_server, api_name, None, uuid.uuid4().hex[:12], fill=fill)
    assert done.get("success") is False and words in str(done["output"].get("error")), done
    text = log.text()
    assert "Traceback" not in text and f"llm_levels.ui: {api_name}: refused:" in text, text[-2000:]


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"data":[],"fn_index":99999999999999999999,"session_hash":"abuse1"}', 404),
        (b'{"data":[],"fn_index":-1,"session_hash":"abuse2"}', 404),
        (b'{"data":[],"fn_index":0,"session_hash":"' + b"s" * 1_000_000 + b'"}', 400),
        (b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b',"fn_index":0,"session_hash":"abuse3"}', 400),
        (b'{"data":["' + b"a" * 20_000_000 + b'"],"fn_index":0,"session_hash":"abuse4"}', 413),
        (b'{"data":["\xff\xfe"],"fn_index":0,"session_hash":"abuse5"}', 400),
    ],
    ids=["unknown-event", "negative-event", "1mb-session-id", "deep-nesting", "20mb-body", "invalid-utf8"],
)
def test_bad_requests_to_the_page_are_4xx_without_a_traceback(app_server, body, status):
    log = LogSince(app_server)
    r = httpx.post(
        app_server.url.rstrip("/") + "/gradio_api/queue/join",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == status, r.text[:300]
    assert "Traceback" not in log.text()


# ------------------------------------------------------------------------------------------------- flood
def test_a_flood_of_tiny_messages_is_refused_at_once_and_others_are_served_meanwhile(app_server):
    """Issue 14: 5,000 one-letter messages kept the CPU busy for minutes and stalled every local user."""
    log = LogSince(app_server)
    flood = json.dumps(
        {"model": "local", "messages": [{"role": "user", "content": "x"}] * 5000, "max_tokens": 1}
    ).encode()
    results: list[tuple[int, float]] = []

    def send() -> None:
        t0 = time.perf_counter()
        results.append((v1_post(app_server, flood).status_code, time.perf_counter() - t0))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    with openai.OpenAI(base_url=f"{app_server.url.rstrip('/')}/v1", api_key="x", max_retries=0, timeout=60) as c:
        t0 = time.perf_counter()
        answer = c.chat.completions.create(model="local", messages=HELLO, max_tokens=2, temperature=0)
        ordinary_s = time.perf_counter() - t0
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [400] * 4
    assert max(seconds for _, seconds in results) < 3, results
    assert answer.choices[0].message.content is not None and ordinary_s < 10
    text = log.text()
    assert "MAX_MESSAGES" in text and "Traceback" not in text


# -------------------------------------------------------------------------------------- blocked base URL
def test_a_metadata_address_as_base_url_is_reported_as_blocked(app_server):
    """The laptop-mode app allows private base URLs; the cloud metadata address is still blocked, and the
    note says so and why, instead of the metadata server's 403 shown as a key/region/organization problem."""
    client = app_server.client()
    out = client.predict(
        "hello", "custom", "http://169.254.169.254/v1", "m", "", 0.0, 1.0, 8, "", True, api_name="/api_send"
    )
    note = out[0][-1]
    assert H.is_note(note), out[0]
    text = H.content_text(note["content"])
    assert "blocked" in text and "link-local" in text and "metadata" in text, text
    assert "organization" not in text and "region" not in text
