"""Tests for llm_levels/sessions.py: Gradio's per-session memory is bounded with its public API.

Real Gradio served by uvicorn on a free port and driven by real ``gradio_client`` sessions over HTTP:
first a tiny Blocks (a ``gr.State`` that counts a session's sends), then the real app
(``web.app.create_app``, hosted backend = the llm-katan echo server, no local model loaded). The hooks
that reach inside Gradio have their own tests (tests/test_gradio_compat.py).
"""

from __future__ import annotations

import math
import time

import gradio as gr
import pytest
from fastapi import FastAPI

from llm_levels.config import Settings
from llm_levels.sessions import GradioSessions, SessionLimits
from llm_levels.web.gradio_compat import LeanSessionState
from tests.test_gradio_compat import client, deep_link_of, serve, stale_ids, wait_until


def counting_blocks(deleted: list) -> gr.Blocks:
    with gr.Blocks() as demo:
        count = gr.State(0, delete_callback=deleted.append)
        own = gr.State([], time_to_live=5)  # a tab's own time to live is kept
        line = gr.Markdown()
        gr.Button().click(lambda n: (f"sent {n + 1}", n + 1), count, [line, count], api_name="send")
        gr.Button().click(lambda v: len(v), own, line, api_name="own")
    demo.queue()
    return demo


def test_apply_sets_the_cap_and_a_time_to_live_for_every_state_without_one():
    demo = counting_blocks([])
    limits = SessionLimits(max_sessions=7, idle_ttl_s=60, closed_ttl_s=30)
    assert limits.apply(demo) == 1
    states = sorted(b.time_to_live for b in demo.blocks.values() if isinstance(b, gr.State))
    assert states == [5, 60] and demo.state_session_capacity == 7
    assert (
        SessionLimits.from_settings(Settings.from_env({"MAX_SESSIONS": "12", "SESSION_IDLE_TTL_S": "90"})).max_sessions
        == 12
    )


@pytest.mark.parametrize("lean", [False, True], ids=["gradio's own", "lean"])
def test_an_idle_value_is_emptied_by_gradio_and_the_session_starts_fresh(lean, caplog):
    deleted: list = []
    demo = counting_blocks(deleted)
    limits = SessionLimits(max_sessions=100, idle_ttl_s=1.0, closed_ttl_s=3600)
    limits.apply(demo)
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    sessions = limits.install(app, demo, lean=lean)
    assert isinstance(sessions, GradioSessions) and sessions.lean is lean
    with serve(app) as url:
        c = client(url)
        try:
            with caplog.at_level("INFO", logger="llm_levels.sessions"):
                assert c.predict(api_name="/send") == "sent 1"
                assert c.predict(api_name="/send") == "sent 2"  # set at each send: lives while it is used
                state = demo.state_holder.session_data[c.session_hash]
                assert isinstance(state, LeanSessionState) is lean
                assert "session value freed" not in caplog.text  # nothing freed: nothing said
                # Gradio's own expiry loop (every second) empties the value after its time to live ...
                wait_until(lambda: not state.state_data, timeout_s=10)
            assert deleted == [2]  # ... and hands it to the State's delete_callback
            # One line for the operator, with the value's type only (never the value: it may be a key).
            freed = [r.getMessage() for r in caplog.records if "session value freed" in r.getMessage()]
            assert freed == ["session value freed: a int, unused for 1 s (or its page closed)"], caplog.text
            assert c.predict(api_name="/send") == "sent 1"  # the session starts afresh, as after a reload
            assert sessions.held() == 1
        finally:
            c.close()


def test_max_sessions_caps_how_many_sessions_gradio_keeps():
    demo = counting_blocks([])
    limits = SessionLimits(max_sessions=3, idle_ttl_s=3600, closed_ttl_s=3600)
    limits.apply(demo)
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    limits.install(app, demo)
    with serve(app) as url:
        clients = [client(url) for _ in range(5)]
        try:
            for c in clients:
                c.predict(api_name="/send")
            held = demo.state_holder.session_data
            assert len(held) <= 3 and demo.state_holder.capacity == 3
            assert clients[-1].session_hash in held and clients[0].session_hash not in held
        finally:
            for c in clients:
                c.close()


# ============================================================================== the real app, served
@pytest.fixture(scope="module")
def real_app(katan_echo):
    """The real app (Chat → llm-katan echo), in this process so the test can look inside Gradio."""
    from llm_levels.web.app import create_app

    env = {
        "OPENAI_BASE_URL": katan_echo.base_url,
        "OPENAI_MODEL": katan_echo.model,
        "OPENAI_API_KEY": katan_echo.api_key,
        "PRELOAD_MODEL": "false",
        "REQUESTS_PER_MINUTE": "1000",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", katan_echo.api_key)  # backends read the key when they are built
        settings = Settings.from_env(env)
        app, _runtime = create_app(settings)
        with serve(app) as url:
            yield url, app, settings


def test_the_real_chat_tab_leaves_no_stale_copies_and_keeps_the_conversation(real_app, katan_echo):
    from gradio.route_utils import create_url_safe_hash

    url, app, settings = real_app
    sessions: GradioSessions = app.state.sessions
    demo = sessions.blocks
    assert sessions.lean and demo.state_holder.capacity == settings.max_sessions  # the cap reached Gradio
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert states and all(not math.isinf(s.time_to_live) for s in states)  # every value expires
    c = client(url)
    try:
        c.predict(katan_echo.api_key, api_name="/api_set_key")  # a key typed into the page
        state = demo.state_holder.session_data[c.session_hash]
        assert isinstance(state, LeanSessionState) and settings.session_closed_ttl_s == state.STATE_TTL_WHEN_CLOSED
        assert deep_link_of(url, c.session_hash) == create_url_safe_hash(b"[]")  # nothing saved, no key
        t0 = time.monotonic()
        for i in range(4):
            chat, *_ = c.predict(f"turn {i}: say nonce-{i}", "hosted:OpenAI-compatible", 16, api_name="/chat_send")
        assert "nonce-3" in str(chat[-1]) and time.monotonic() - t0 < 60
        assert stale_ids(demo, c.session_hash) == set()  # no dead component copies, ever
        # The conversation (a gr.State) is intact: the next turn still carries all the earlier ones.
        chat, *_ = c.predict("turn 4: say nonce-4", "hosted:OpenAI-compatible", 16, api_name="/chat_send")
        users = [m for m in chat if (m.get("role") if isinstance(m, dict) else None) == "user"]
        assert len(users) == 5 and "nonce-4" in str(chat[-1])
    finally:
        c.close()


def test_on_another_gradio_the_app_starts_with_gradios_own_sessions_and_says_so(monkeypatch, caplog):
    from llm_levels.web import gradio_compat
    from llm_levels.web.app import create_app

    monkeypatch.setattr(gradio_compat, "GRADIO_SERIES", (6, 30))  # as if Gradio had been upgraded under the hooks
    with caplog.at_level("ERROR"):
        app, _runtime = create_app(Settings.from_env({"PRELOAD_MODEL": "false"}))
    assert "GRADIO UPGRADE" in caplog.text
    sessions: GradioSessions = app.state.sessions
    assert not sessions.lean and type(sessions.blocks.state_holder).__name__ == "StateHolder"
    assert sessions.blocks.state_holder.capacity == Settings.from_env({}).max_sessions  # the public parts still apply
