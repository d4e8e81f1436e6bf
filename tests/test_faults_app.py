"""Faults of the hosted API, through the running app's real Gradio API (gradio_client).

The app is ``hardened_app`` (tests/fixtures/hardened_app.py): a real ``app.py`` configured like a public
Space, ``REQUEST_TIMEOUT_S=4``, ``MAX_RETRIES=2``, whose configured endpoints are real servers that fail:
llm-katan with ``--error-rate 1.0`` (500) and ``--rate-limit-after 1`` (429), a slow llm-katan stream that a
test kills in the middle of an answer, and our scripted HTTP server (hangs, cuts streams, scripted
errors, counts requests). Every case must end with a clear note in the chat, keep the partial answer
(marked "✂️ Answer cut off"), keep the history, let the next prompt work and leave other sessions and
other tabs alone. Retries happen only before the first token, so no text is ever doubled.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from llm_levels import history as H
from tests.fixtures.hardened_app import H_DOOMED, H_ERRORS, H_KATAN, H_RATE, H_SCRIPTED, TIMEOUT_S
from tests.fixtures.katan import Act

pytestmark = pytest.mark.slow

API_FIELDS = ("chat", "textbox", "metrics", "snippet", "request", "response", "table")


def chat_send(client, text, backend, max_tokens=64):
    chat, _textbox, metrics = client.predict(text, backend, max_tokens, api_name="/chat_send")
    return chat, metrics


def api_send(client, text, endpoint, model, max_tokens=64) -> dict:
    out = client.predict(text, endpoint, "", model, "", 0.0, 1.0, max_tokens, "", True, api_name="/api_send")
    return dict(zip(API_FIELDS, out))


def last_note(chat) -> tuple[str, str, str]:
    """(title, text, kind) of the chat's last message, which must be a note."""
    item = chat[-1]
    assert H.is_note(item), chat
    meta = item["metadata"]
    return meta["title"], H.content_text(item["content"]), meta.get("log", "")


def real_turns(chat) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in H.to_messages(chat)]


def assert_no_secret(app, *things) -> None:
    shown = json.dumps(things, ensure_ascii=False, default=str)
    for key in app.secrets:
        assert key not in shown


def echo_ok(chat, text: str) -> None:
    turns = real_turns(chat)
    assert turns[-1][0] == "assistant" and f"User: {text}" in turns[-1][1], chat


# ----------------------------------------------------------------------------------- HTTP errors
def test_a_server_failing_every_time_is_retried_then_reported_within_the_timeout(hardened_app):
    """llm-katan --error-rate 1.0: every request 500. Two retries with backoff, then one clear note."""
    client = hardened_app.client()
    chat_send(client, "first, a good turn", H_KATAN)
    t0 = time.monotonic()
    chat, metrics = chat_send(client, "please fail", H_ERRORS)
    took = time.monotonic() - t0
    title, text, kind = last_note(chat)
    assert title == H.ERROR_TITLE and kind == "server"
    assert "500" in text and "try again" in text.lower()
    assert "not answered (server)" in metrics
    assert took < TIMEOUT_S + 3, took
    # history intact: the good turn and the failed user message are there, the note is not sent on
    assert [r for r, _ in real_turns(chat)] == ["user", "assistant", "user"]
    chat, _ = chat_send(client, "next prompt", H_KATAN)
    echo_ok(chat, "next prompt")
    # the model got the whole conversation (the unanswered message included), minus the note
    assert "messages=4" in real_turns(chat)[-1][1]
    assert_no_secret(hardened_app, chat, metrics, text)


def test_retries_happen_before_the_first_token_and_never_double_text(hardened_app):
    """Scripted: 500, then 503 with Retry-After, then a good stream: the user sees the answer once."""
    srv = hardened_app.scripted
    srv.push(
        Act.status(500), Act.status(503, headers={"Retry-After": "0.2"}), Act.stream("Hello", " from", " attempt three")
    )
    before = len(srv.requests)
    client = hardened_app.client()
    chat, _ = chat_send(client, "retry me", H_SCRIPTED)
    assert len(srv.requests) - before == 3
    assert real_turns(chat)[-1] == ("assistant", "Hello from attempt three")
    # A stream that breaks before any text is retried too (nothing was shown yet).
    srv.push(Act.cut(), Act.stream("clean", " answer"))
    chat, _ = chat_send(client, "cut before text", H_SCRIPTED)
    assert real_turns(chat)[-1] == ("assistant", "clean answer")
    assert sum(1 for r, _ in real_turns(chat) if r == "assistant") == 2


def test_rate_limited_server_says_wait_and_try_again(hardened_app):
    client = hardened_app.client()
    chat, _ = chat_send(client, "am I limited?", H_RATE)
    title, text, kind = last_note(chat)
    assert title == H.ERROR_TITLE and kind == "rate_limit"
    assert "429" in text and "try again" in text
    chat, _ = chat_send(client, "and now?", H_KATAN)
    echo_ok(chat, "and now?")


def test_scripted_errors_each_say_what_to_do(hardened_app):
    """401, 404 (unknown model) and a non-JSON stream: one clear, non-retried note each."""
    srv = hardened_app.scripted
    client = hardened_app.client()
    cases = [
        (
            Act.status(401, {"error": {"message": "Incorrect API key provided: sk-test-***", "type": "auth"}}),
            "auth",
            "rejected the API key",
        ),
        (
            Act.status(
                404, {"error": {"message": "The model `scripted-model` does not exist", "code": "model_not_found"}}
            ),
            "not_found",
            "does not know the model",
        ),
        (Act.events("this is not json"), "server", "malformed stream chunk"),
    ]
    for action, kind, words in cases:
        before = len(srv.requests)
        srv.push(action)
        chat, _ = chat_send(client, f"case {kind}", H_SCRIPTED)
        title, text, got_kind = last_note(chat)
        assert got_kind == kind and words in text, text
        assert len(srv.requests) - before == 1, "a request that cannot succeed is not retried"
        assert_no_secret(hardened_app, chat)
    chat, _ = chat_send(client, "still fine", H_KATAN)
    echo_ok(chat, "still fine")


# ------------------------------------------------------------------------------------- hangs
def test_a_server_that_never_answers_is_given_up_on_within_the_timeout(hardened_app):
    """Accepts the connection, never answers: given up on after REQUEST_TIMEOUT_S (retries included)."""
    srv = hardened_app.scripted
    srv.push(Act.hang(), Act.hang(), Act.hang())
    client = hardened_app.client()
    t0 = time.monotonic()
    chat, metrics = chat_send(client, "hello?", H_SCRIPTED)
    took = time.monotonic() - t0
    title, text, kind = last_note(chat)
    assert kind == "timeout" and f"within {TIMEOUT_S:g} s" in text and "REQUEST_TIMEOUT_S" in text, text
    assert TIMEOUT_S - 0.5 < took < TIMEOUT_S + 3, took
    srv._queue.clear()  # unused hangs (no retry was attempted past the deadline)
    chat, _ = chat_send(client, "after the hang", H_KATAN)
    echo_ok(chat, "after the hang")


def test_a_hanging_api_tab_request_does_not_block_other_sessions_or_tabs(hardened_app):
    """Session A's Hosted-API request hangs; session B's chat and A's own Chat tab answer meanwhile."""
    srv = hardened_app.scripted
    srv.push(Act.hang())
    a, b = hardened_app.client(), hardened_app.client()
    job = a.submit("hang here", H_SCRIPTED, "", "scripted-model", "", 0.0, 1.0, 32, "", True, api_name="/api_send")
    deadline = time.monotonic() + 10
    while len(srv.requests) == 0 or srv.requests[-1].body["messages"][-1]["content"] != "hang here":
        assert time.monotonic() < deadline, "the hanging request never arrived"
        time.sleep(0.05)
    t0 = time.monotonic()
    chat_b, _ = chat_send(b, "B is not blocked", H_KATAN)
    chat_a, _ = chat_send(a, "A's chat tab is not blocked", H_KATAN)
    assert time.monotonic() - t0 < TIMEOUT_S - 1, "other sessions/tabs waited for the hanging request"
    echo_ok(chat_b, "B is not blocked")
    echo_ok(chat_a, "A's chat tab is not blocked")
    out = dict(zip(API_FIELDS, job.result(timeout=30)))
    title, text, kind = last_note(out["chat"])
    assert kind == "timeout"
    srv._queue.clear()


def test_a_hanging_chat_request_does_not_block_other_sessions_chats(hardened_app):
    """Chat has its own Gradio lane (not the local model's, LOCAL_CONCURRENCY=1 here): session A's hanging
    hosted chat holds no one else's turn."""
    srv = hardened_app.scripted
    srv.push(Act.hang())
    a, b = hardened_app.client(), hardened_app.client()
    job = a.submit("chat hang", H_SCRIPTED, 32, api_name="/chat_send")
    deadline = time.monotonic() + 10
    while not srv.requests or srv.requests[-1].body["messages"][-1]["content"] != "chat hang":
        assert time.monotonic() < deadline, "the hanging request never arrived"
        time.sleep(0.05)
    t0 = time.monotonic()
    chat_b, _ = chat_send(b, "B waits?", H_KATAN)
    waited = time.monotonic() - t0
    job.result(timeout=30)
    srv._queue.clear()
    echo_ok(chat_b, "B waits?")
    assert waited < 1.5, f"session B's hosted chat waited {waited:.1f} s behind A's hanging request"


# --------------------------------------------------------------------------------- cut streams
def test_a_stream_cut_mid_way_keeps_the_partial_answer_marked_as_cut(hardened_app):
    srv = hardened_app.scripted
    for chunked in (True, False):  # a broken chunked body, and a clean close without [DONE]
        srv.push(Act.cut("The beginning", " of an answer", chunked=chunked))
        before = len(srv.requests)
        client = hardened_app.client()
        chat, metrics = chat_send(client, "tell me", H_SCRIPTED)
        assert len(srv.requests) - before == 1, "text was shown: no retry (it would double the text)"
        assert real_turns(chat) == [("user", "tell me"), ("assistant", "The beginning of an answer")]
        title, text, kind = last_note(chat)
        assert title == H.CUT_TITLE and kind == "stream_cut" and "cut off" in text, (chunked, text)
        # The next prompt works and carries the partial answer as part of the conversation.
        chat, _ = chat_send(client, "go on", H_KATAN)
        echo_ok(chat, "go on")
        assert "messages=3" in real_turns(chat)[-1][1]


def test_a_server_killed_in_the_middle_of_a_stream(hardened_app):
    """A real llm-katan process (slow stream) is SIGKILLed while it answers: partial kept and marked cut,
    history intact, the next prompt works, another session and the Hosted-API tab are unaffected."""
    doomed = hardened_app.doomed
    a, b = hardened_app.client(), hardened_app.client()
    chat_send(a, "warm-up turn", H_KATAN)
    job = a.submit("a long echo " * 8, H_DOOMED, 64, api_name="/chat_send")
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        outs = job.outputs()
        if outs and outs[-1][0] and not H.is_note(outs[-1][0][-1]) and outs[-1][0][-1]["role"] == "assistant":
            seen = H.content_text(outs[-1][0][-1]["content"])
            if len(seen) > 20:
                break
        time.sleep(0.05)
    assert len(seen) > 20, "the slow stream never started"
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(10)
    chat, _textbox, metrics = job.result(timeout=30)
    turns = real_turns(chat)
    assert [r for r, _ in turns] == ["user", "assistant", "user", "assistant"]
    partial = turns[-1][1]
    assert partial.startswith(seen[:20]) and len(partial) >= len(seen)
    assert "[echo]" in partial and not partial.rstrip().endswith(("a long echo a long echo",))
    title, text, kind = last_note(chat)
    assert title == H.CUT_TITLE and kind == "stream_cut" and "cut off" in text
    # The session goes on; another session and the Hosted API tab never noticed.
    chat, _ = chat_send(a, "after the crash", H_KATAN)
    echo_ok(chat, "after the crash")
    assert "messages=5" in real_turns(chat)[-1][1]
    chat_b, _ = chat_send(b, "other session", H_KATAN)
    echo_ok(chat_b, "other session")
    out = api_send(b, "other tab", "hosted:OpenAI-compatible", "katan-echo")
    echo_ok(out["chat"], "other tab")
    # The dead server itself now gives a one-line "cannot connect" note.
    chat, _ = chat_send(b, "to the dead one", H_DOOMED)
    title, text, kind = last_note(chat)
    assert kind == "connection" and "connection refused" in text and "\n" not in text


def test_stop_during_a_slow_hosted_stream_keeps_the_partial_and_frees_the_lane(hardened_app):
    """Stop (job.cancel, what the Stop button does) on an endless stream: the server sees the disconnect."""
    srv = hardened_app.scripted
    srv.push(Act.trickle("tick ", 0.1))
    srv.disconnects.clear()
    client = hardened_app.client()
    job = client.submit("stream forever", H_SCRIPTED, 64, api_name="/chat_send")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        outs = job.outputs()
        if outs and outs[-1][0] and "tick tick" in H.content_text(outs[-1][0][-1]["content"]):
            break
        time.sleep(0.05)
    t0 = time.monotonic()
    threading.Thread(target=job.cancel, daemon=True).start()
    gone = srv.wait_for_disconnect(10)
    assert gone is not None and gone - t0 < 3, "the server never saw the client go"
    chat, _ = chat_send(client, "after stop", H_KATAN)
    turns = real_turns(chat)
    assert turns[0] == ("user", "stream forever") and turns[1][1].startswith("tick tick")
    echo_ok(chat, "after stop")
