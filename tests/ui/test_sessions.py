"""Two browser sessions at once (two gradio_client sessions): separate histories, separate API keys."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_levels import history as H
from tests.fixtures.app_server import KATAN

pytestmark = pytest.mark.slow

#: A recognisable fake key: the tests grep every output and the app's log for it.
SESSION_KEY = "sk-test-SECRET-A-123"


def chat(client, text):
    result, _textbox, metrics = client.predict(text, KATAN, 8, api_name="/chat_send")
    return result, metrics


def conversation(client, who, n):
    """n turns from one session; returns the last history."""
    out = None
    for i in range(n):
        out, _ = chat(client, f"{who} says {i}")
    return out


def test_parallel_sessions_keep_separate_histories(app_server):
    a, b = app_server.client(), app_server.client()
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(conversation, a, "alice", 3)
        fb = pool.submit(conversation, b, "bob", 2)
        hist_a, hist_b = fa.result(timeout=120), fb.result(timeout=120)
    text_a, text_b = json.dumps(hist_a), json.dumps(hist_b)
    assert "alice says 2" in text_a and "bob" not in text_a
    assert "bob says 1" in text_b and "alice" not in text_b
    # Each model request carried only that session's conversation.
    assert "messages=5 " in H.content_text(hist_a[-1]["content"])
    assert "messages=3 " in H.content_text(hist_b[-1]["content"])


def test_a_key_typed_in_one_session_is_used_only_there_and_never_shown(app_server):
    a, b = app_server.client(), app_server.client()
    shown = a.predict(SESSION_KEY, api_name="/api_set_key")
    assert SESSION_KEY not in json.dumps(shown)

    # Session A now sends its own (wrong) key: katan refuses it, and A's chat says so without the key.
    hist_a, metrics_a = chat(a, "hello from A")
    note = hist_a[-1]
    assert H.is_note(note) and note["metadata"]["title"] == H.ERROR_TITLE
    assert "key" in H.content_text(note["content"]).lower()
    assert "not answered" in metrics_a

    # Session B never sees or uses A's key: its chat goes out with the configured key and works.
    hist_b, _ = chat(b, "hello from B")
    assert H.content_text(hist_b[-1]["content"]).startswith("[echo]")
    compare_b = b.predict("hi", "", 8, 0.0, [KATAN], api_name="/compare_run")
    assert "[echo]" in compare_b[2]  # columns: local, local:transformers, the endpoint
    compare_a = a.predict("hi", "", 8, 0.0, [KATAN], api_name="/compare_run")
    assert "Not answered" in compare_a[2]

    # Forgetting the key in A brings back the configured one.
    a.predict(api_name="/api_clear_key")
    hist_a, _ = chat(a, "again from A")
    assert H.content_text(hist_a[-1]["content"]).startswith("[echo]")

    everything = json.dumps([hist_a, hist_b, compare_a, compare_b, metrics_a])
    assert SESSION_KEY not in everything and app_server.api_key not in everything
    assert SESSION_KEY not in app_server.log() and app_server.api_key not in app_server.log()
