"""Tests for llm_levels/sessions.py: Gradio's per-session memory is bounded by SessionJanitor.

Everything here runs real Gradio (the pinned version) served by uvicorn on a free port and driven
by real ``gradio_client`` sessions over HTTP: first a tiny Blocks that has the Chat tab's output
pattern (a ``gr.skip()`` and then a value for the same components in one event), then the real app
(``webapp.create_app``, hosted backend = the llm-katan echo server, no local model loaded). The
janitor's clock is injected, so "an hour later" takes no time.
"""

from __future__ import annotations

import datetime
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import gradio as gr
import pytest
import uvicorn
from fastapi import FastAPI
from gradio_client import Client

from llm_levels.config import Settings
from llm_levels.sessions import LeanSessionState, SessionJanitor, use_lean_session_state
from tests.fixtures.katan import free_port

HOUR = datetime.timedelta(hours=1)


@pytest.fixture(autouse=True, scope="module")
def fast_heartbeat():
    """Gradio's heartbeat every 0.5 s (read per connection): a closed Client's heartbeat stream then
    ends within a second instead of 15 s, so "the page was closed" is seen quickly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")
        yield


class Clock:
    """A settable "now" for the janitor (Gradio itself keeps using the real time)."""

    def __init__(self) -> None:
        self.offset = datetime.timedelta(0)

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.now() + self.offset


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its URL, stops it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def stale_ids(blocks: gr.Blocks, session_hash: str) -> set[int]:
    """Ids in a session's component table that are not components of the app (stale copies)."""
    state = blocks.state_holder.session_data[session_hash]
    return set(state.blocks_config.blocks) - set(blocks.default_config.blocks)


def wait_until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# ============================================================================ a tiny Blocks, served
def tiny_blocks() -> gr.Blocks:
    """The Chat tab's pattern in miniature: one event first yields ``gr.skip()`` for a textbox and a
    markdown, then values for them; a ``gr.State`` counts the session's sends."""
    with gr.Blocks() as demo:
        count = gr.State(0)
        box = gr.Textbox()
        line = gr.Markdown()
        btn = gr.Button()

        def send(text: str, n: int):
            yield gr.skip(), gr.skip(), n
            yield "", f"sent {n + 1}: {text}", n + 1

        btn.click(send, [box, count], [box, line, count], api_name="send")

        release = threading.Event()
        demo.release = release  # the test sets it to end a "slow" event

        def slow(n: int):
            release.wait(30)
            return f"count {n}"

        gr.Button().click(slow, count, line, api_name="slow")
    demo.queue()
    return demo


@contextmanager
def tiny_app(clock: Clock, *, lean: bool = False, **limits: Any) -> Iterator[tuple[str, gr.Blocks, SessionJanitor]]:
    demo = tiny_blocks()
    janitor = SessionJanitor(demo, clock=clock, **{"max_sessions": 100, "idle_ttl_s": 7200,
                                                   "closed_ttl_s": 600, **limits})
    janitor.configure()
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    if lean:
        use_lean_session_state(demo)
    with serve(app) as url:
        yield url, demo, janitor


def test_stale_component_copies_pile_up_and_a_sweep_drops_them_keeping_the_session():
    clock = Clock()
    with tiny_app(clock) as (url, demo, janitor):
        c = client(url)
        try:
            for i in range(5):
                c.predict(f"m{i}", api_name="/send")
            # What the janitor is for: Gradio 6.31 files a copy of each updated component under a new id
            # at every send. (If this fails, Gradio stopped doing it: the copy pruning can then go.)
            assert len(stale_ids(demo, c.session_hash)) >= 5
            result = janitor.sweep()
            assert result.copies_dropped >= 5
            assert stale_ids(demo, c.session_hash) == set()
            # The session itself is untouched: its gr.State still counts its sends, and it keeps working.
            assert c.predict("again", api_name="/send")[1] == "sent 6: again"
        finally:
            c.close()


def test_a_closed_session_is_forgotten_after_the_closed_ttl_an_open_one_is_kept():
    clock = Clock()
    with tiny_app(clock, closed_ttl_s=600, idle_ttl_s=7200) as (url, demo, janitor):
        gone, kept = client(url), client(url)
        try:
            gone.predict("a", api_name="/send")
            kept.predict("b", api_name="/send")
            gone_hash = gone.session_hash
            gone.close()  # its heartbeat ends, as when a browser tab is closed
            sessions = demo.state_holder.session_data
            wait_until(lambda: sessions[gone_hash].is_closed)

            assert janitor.sweep().sessions_dropped == 0  # not yet: the page may come back
            clock.offset = datetime.timedelta(seconds=601)
            result = janitor.sweep()
            assert gone_hash not in sessions and gone_hash not in demo.state_holder.time_last_used
            assert kept.session_hash in sessions and result.sessions_dropped == 1
            assert kept.predict("c", api_name="/send")[1] == "sent 2: c"  # its state survived the sweep
        finally:
            kept.close()


def test_an_idle_open_session_is_forgotten_after_the_idle_ttl_and_starts_fresh():
    clock = Clock()
    with tiny_app(clock, idle_ttl_s=3600) as (url, demo, janitor):
        c = client(url)
        try:
            c.predict("a", api_name="/send")
            c.predict("b", api_name="/send")
            clock.offset = HOUR - datetime.timedelta(seconds=5)
            assert janitor.sweep().sessions_dropped == 0
            clock.offset = HOUR + datetime.timedelta(seconds=5)
            assert janitor.sweep().sessions_dropped == 1
            assert c.session_hash not in demo.state_holder.session_data
            # Coming back after that works, with fresh state (like a reloaded page).
            assert c.predict("c", api_name="/send")[1] == "sent 1: c"
        finally:
            c.close()


def test_a_session_with_an_event_in_flight_is_never_forgotten():
    clock = Clock()
    with tiny_app(clock, idle_ttl_s=60) as (url, demo, janitor):
        c = client(url)
        try:
            c.predict("a", api_name="/send")
            job = c.submit(api_name="/slow")
            queue = demo._queue
            wait_until(lambda: queue.pending_event_ids_session.get(c.session_hash))
            clock.offset = HOUR
            assert janitor.sweep().sessions_dropped == 0
            assert c.session_hash in demo.state_holder.session_data
            demo.release.set()
            assert job.result(timeout=30) == "count 1"  # its state was still there when the event ran
            wait_until(lambda: not queue.pending_event_ids_session.get(c.session_hash))
            assert janitor.sweep().sessions_dropped == 1
            # Gradio's queue leaves an empty set per session that ever queued; it goes with the session.
            assert c.session_hash not in queue.pending_event_ids_session
        finally:
            c.close()


def test_max_sessions_caps_how_many_sessions_gradio_keeps():
    clock = Clock()
    with tiny_app(clock, max_sessions=3) as (url, demo, janitor):
        clients = [client(url) for _ in range(5)]
        try:
            for i, c in enumerate(clients):
                c.predict(f"hello {i}", api_name="/send")
            held = demo.state_holder.session_data
            assert len(held) <= 3  # Gradio's own cap, which configure() set before mounting
            assert clients[-1].session_hash in held and clients[0].session_hash not in held
            janitor.sweep()
            assert len(held) <= 3
        finally:
            for c in clients:
                c.close()


def deep_link_of(url: str, session_hash: str) -> str:
    """What Gradio's deep-link route saves for a session: the JSON of its component values, as the
    content hash the route answers with (see gradio/routes.py ``deep_link``)."""
    import httpx

    r = httpx.get(url + "/gradio_api/deep_link", params={"session_hash": session_hash}, timeout=10)
    r.raise_for_status()
    return r.json()


def test_lean_sessions_serve_like_gradios_own_without_the_config_copy():
    from gradio.route_utils import create_url_safe_hash

    clock = Clock()
    for lean in (False, True):
        with tiny_app(clock, lean=lean) as (url, demo, janitor):
            c = client(url)
            try:
                outs = [c.predict(f"m{i}", api_name="/send") for i in range(3)]
                # The gr.State counts the session's sends either way.
                assert [o[1] for o in outs] == ["sent 1: m0", "sent 2: m1", "sent 3: m2"]
                state = demo.state_holder.session_data[c.session_hash]
                assert isinstance(state, LeanSessionState) is lean
                assert state._state_ttl  # the State's time-to-live is recorded (Gradio empties it later)
                # Gradio's own session keeps a copy of every component's config, values included, and a
                # deep link saves it; the lean one keeps none, so a deep link saves nothing.
                link = deep_link_of(url, c.session_hash)
                if lean:
                    assert state.config_values == {} and link == create_url_safe_hash(b"[]")
                else:
                    assert len(state.config_values) >= 5 and link != create_url_safe_hash(b"[]")
                # Stale copies happen and are swept the same way.
                assert len(stale_ids(demo, c.session_hash)) >= 3
                assert janitor.sweep().copies_dropped >= 3
                assert c.predict("again", api_name="/send")[1] == "sent 4: again"
            finally:
                c.close()


def test_a_lean_session_has_every_attribute_of_gradios_own():
    demo = tiny_blocks()
    gr.mount_gradio_app(FastAPI(), demo, path="")
    from gradio.state_holder import SessionState

    own, lean = SessionState(demo), LeanSessionState(demo)
    assert set(vars(lean)) == set(vars(own))
    assert lean.blocks_config.blocks == own.blocks_config.blocks and lean.config_values == {}


# ============================================================================== the real app, served
@pytest.fixture(scope="module")
def real_app(katan_echo, fast_heartbeat):
    """The real app (Chat → llm-katan echo), in this process so the test can look inside Gradio."""
    from llm_levels.webapp import create_app

    env = {"OPENAI_BASE_URL": katan_echo.base_url, "OPENAI_MODEL": katan_echo.model,
           "OPENAI_API_KEY": katan_echo.api_key, "PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", katan_echo.api_key)  # backends read the key when they are built
        settings = Settings.from_env(env)
        app, _runtime = create_app(settings)
        with serve(app) as url:
            yield url, app


def test_the_real_chat_tab_leaves_no_stale_copies_and_keeps_the_conversation(real_app, katan_echo, fast_heartbeat):
    url, app = real_app
    janitor: SessionJanitor = app.state.sessions
    demo = janitor.blocks
    assert demo.state_holder.capacity == Settings.from_env({}).max_sessions  # the cap reached Gradio
    c = client(url)
    try:
        c.predict(katan_echo.api_key, api_name="/api_set_key")  # a key typed into the page
        assert isinstance(demo.state_holder.session_data[c.session_hash], LeanSessionState)
        from gradio.route_utils import create_url_safe_hash

        assert deep_link_of(url, c.session_hash) == create_url_safe_hash(b"[]")  # nothing saved, no key
        for i in range(4):
            chat, *_ = c.predict(f"turn {i}: say nonce-{i}", "hosted:OpenAI-compatible", 16, api_name="/chat_send")
        assert "nonce-3" in str(chat[-1])
        before = stale_ids(demo, c.session_hash)
        assert len(before) >= 4  # two per send (text box and metrics line), see sessions.py
        janitor.sweep()
        assert stale_ids(demo, c.session_hash) == set()
        # The conversation (a gr.State) is intact: the next turn still carries all the earlier ones.
        chat, *_ = c.predict("turn 4: say nonce-4", "hosted:OpenAI-compatible", 16, api_name="/chat_send")
        users = [m for m in chat if (m.get("role") if isinstance(m, dict) else None) == "user"]
        assert len(users) == 5 and "nonce-4" in str(chat[-1])
    finally:
        c.close()
