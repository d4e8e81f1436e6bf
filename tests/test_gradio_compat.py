"""Tests for llm_levels/web/gradio_compat.py: the only place this app reaches inside Gradio.

The first test fails on any Gradio other than the one the hooks were written for: an upgrade must come
with a re-check of every hook (the tests below) and a new ``GRADIO_SERIES``. The others serve a tiny
Blocks with real Gradio (uvicorn on a free port, real ``gradio_client`` sessions over HTTP) and show,
for each hook, that Gradio on its own still has the problem and that the hook still removes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import pytest
import uvicorn
from fastapi import FastAPI
from gradio.state_holder import SessionState, StateHolder
from gradio_client import Client
from gradio_client.exceptions import AppError

from llm_levels.web import gradio_compat as compat
from llm_levels.web.gradio_compat import LeanSessionState, LeanStateHolder, install_lean_sessions
from tests.fixtures.katan import free_port


def test_the_installed_gradio_is_the_one_the_hooks_were_written_for():
    problems = compat.compat_problems()
    assert not problems, (
        "GRADIO UPGRADE: " + "; ".join(problems) + ". Re-check every hook in llm_levels/web/gradio_compat.py "
        "against the new Gradio's state_holder.py and blocks.py (postprocess_data), run this file, then update "
        "GRADIO_SERIES. Until then the app runs without the hooks (more memory per session)."
    )


def test_another_version_is_refused_loudly(caplog):
    with caplog.at_level(logging.ERROR, logger=compat.__name__):
        assert compat.check_gradio_version("6.32.0") is False
        assert compat.check_gradio_version("7.0.1") is False
    assert "GRADIO UPGRADE" in caplog.text and "6.31.x" in caplog.text
    caplog.clear()
    assert compat.check_gradio_version("6.31.7") is True and not caplog.text


# ============================================================================ a tiny Blocks, served
@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its URL, stops it afterwards."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
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


def wait_until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def tiny_blocks(deleted: list | None = None) -> gr.Blocks:
    """The Chat tab's pattern in miniature: one event first yields ``gr.skip()`` for a textbox and a
    markdown, then values for them; a ``gr.State`` counts the session's sends. A checked slider too."""
    with gr.Blocks() as demo:
        count = gr.State(0, delete_callback=(deleted.append if deleted is not None else None))
        box = gr.Textbox()
        line = gr.Markdown()
        btn = gr.Button()

        def send(text: str, n: int):
            yield gr.skip(), gr.skip(), n
            yield "", f"sent {n + 1}: {text}", n + 1

        btn.click(send, [box, count], [box, line, count], api_name="send")
        slider = compat.checked_slider(1, 64, value=8, step=1, label="Longest answer (tokens)")
        plain = gr.Slider(1, 64, value=8, step=1, label="plain")
        gr.Button().click(lambda v: f"got {v:g}", slider, line, api_name="checked")
        gr.Button().click(lambda v: f"got {v:g}", plain, line, api_name="plain")
    demo.queue()
    return demo


@contextmanager
def tiny_app(
    *, lean: bool, capacity: int = 100, closed_ttl_s: float | None = None, deleted: list | None = None
) -> Iterator[tuple[str, gr.Blocks]]:
    demo = tiny_blocks(deleted)
    demo.state_session_capacity = capacity
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    if lean:
        install_lean_sessions(app, demo, closed_ttl_s=closed_ttl_s)
    with serve(app) as url:
        yield url, demo


def stale_ids(blocks: gr.Blocks, session_hash: str) -> set[int]:
    """Ids in a session's component table that are not components of the app (dead copies)."""
    state = blocks.state_holder.session_data[session_hash]
    return set(state.blocks_config.blocks) - set(blocks.default_config.blocks)


def deep_link_of(url: str, session_hash: str) -> str:
    """What Gradio's deep-link route saves for a session (the content hash it answers with)."""
    import httpx

    r = httpx.get(url + "/gradio_api/deep_link", params={"session_hash": session_hash}, timeout=10)
    r.raise_for_status()
    return r.json()


# ============================================================================ hooks 1-2: lean sessions
@pytest.mark.parametrize("lean", [False, True], ids=["gradio's own", "lean"])
def test_lean_sessions_keep_no_config_copy_and_no_dead_copies(lean):
    from gradio.route_utils import create_url_safe_hash

    with tiny_app(lean=lean) as (url, demo):
        c = client(url)
        try:
            outs = [c.predict(f"m{i}", api_name="/send") for i in range(5)]
            # The gr.State counts the session's sends either way: a live session is served the same.
            assert [o[1] for o in outs] == [f"sent {i + 1}: m{i}" for i in range(5)]
            state = demo.state_holder.session_data[c.session_hash]
            assert isinstance(state, LeanSessionState) is lean
            assert state._state_ttl  # the State's time to live is recorded (Gradio's expiry reads it)
            link = deep_link_of(url, c.session_hash)
            if lean:
                assert state.config_values == {} and link == create_url_safe_hash(b"[]")
                assert stale_ids(demo, c.session_hash) == set()
            else:
                # What the hooks are for. If these fail, Gradio changed: a hook may be able to go.
                assert len(state.config_values) >= 5 and link != create_url_safe_hash(b"[]")
                assert len(stale_ids(demo, c.session_hash)) >= 5  # a dead copy per updated output per send
            assert c.predict("again", api_name="/send")[1] == "sent 6: again"
        finally:
            c.close()


def test_a_lean_session_has_every_attribute_of_gradios_own():
    demo = tiny_blocks()
    gr.mount_gradio_app(FastAPI(), demo, path="")
    own, lean = SessionState(demo), LeanSessionState(demo)
    assert set(vars(lean)) - {"_fixed_layout"} == set(vars(own))
    assert lean.blocks_config.blocks == own.blocks_config.blocks and lean.config_values == {}
    assert lean.STATE_TTL_WHEN_CLOSED == own.STATE_TTL_WHEN_CLOSED  # Gradio's hour unless configured
    assert LeanSessionState(demo, closed_ttl_s=5).STATE_TTL_WHEN_CLOSED == 5


# ============================================================================ hook 3: closed TTL
def test_a_closed_pages_values_go_after_the_configured_ttl(monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")  # a closed client's heartbeat ends within a second
    deleted: list = []
    with tiny_app(lean=True, closed_ttl_s=1.0, deleted=deleted) as (url, demo):
        gone, kept = client(url), client(url)
        try:
            gone.predict("a", api_name="/send")
            kept.predict("b", api_name="/send")
            sessions = demo.state_holder.session_data
            gone_hash = gone.session_hash
            gone.close()  # its heartbeat ends, as when a browser tab is closed
            wait_until(lambda: sessions[gone_hash].is_closed)
            # Gradio's own expiry loop (every second) empties it, with the delete callback: not after an hour.
            wait_until(lambda: not sessions[gone_hash].state_data, timeout_s=10)
            assert 1 in deleted
            assert kept.predict("c", api_name="/send")[1] == "sent 2: c"  # an open page keeps its values
        finally:
            kept.close()


# ============================================================================ hook 4: queue leftovers
@pytest.mark.parametrize("lean", [False, True], ids=["gradio's own", "lean"])
def test_the_queues_leftovers_of_forgotten_sessions_are_dropped(lean):
    with tiny_app(lean=lean, capacity=2) as (url, demo):
        clients = [client(url) for _ in range(5)]
        try:
            for i, c in enumerate(clients):
                c.predict(f"hello {i}", api_name="/send")
            held = demo.state_holder.session_data
            assert len(held) <= 2 and clients[-1].session_hash in held  # Gradio's own cap (public)
            pending = demo._queue.pending_event_ids_session
            gone = [c.session_hash for c in clients if c.session_hash not in held]
            if not lean:  # what the hook is for: an empty set per session, kept after the session is gone
                assert all(s in pending and not pending[s] for s in gone)
                return
            demo.state_holder.PRUNE_SLACK = 0  # prune at the next new session, without waiting for 256
            extra = client(url)
            clients.append(extra)
            extra.predict("one more", api_name="/send")
            assert not any(s in pending for s in gone)
            demo.state_holder.prune_queue_leftovers(force=True)  # (the one session the new one evicted)
            assert set(pending) <= set(held)
        finally:
            for c in clients:
                c.close()


def test_install_is_refused_where_it_cannot_work():
    demo = tiny_blocks()
    with pytest.raises(RuntimeError, match="mounted app"):
        install_lean_sessions(FastAPI(), demo)  # never mounted
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    demo.state_holder["early"]  # a session before the install
    with pytest.raises(RuntimeError, match="already started"):
        install_lean_sessions(app, demo)
    demo = tiny_blocks()
    app = gr.mount_gradio_app(FastAPI(), demo, path="")
    holder = install_lean_sessions(app, demo, closed_ttl_s=7)
    assert demo.state_holder is holder and isinstance(holder, LeanStateHolder) and type(holder) is not StateHolder
    assert isinstance(holder["s1"], LeanSessionState) and holder["s1"].STATE_TTL_WHEN_CLOSED == 7
    with pytest.raises(RuntimeError):
        install_lean_sessions(app, demo)  # once


# ============================================================================ hook 5: checked slider
def test_a_non_numeric_slider_value_gets_one_line_naming_the_setting():
    with tiny_app(lean=True) as (url, _demo):
        c = client(url)
        try:
            assert c.predict("12", api_name="/checked") == "got 12"
            for bad in ("abc", None, 1e9, True):
                with pytest.raises(AppError) as err:
                    c.predict(bad, api_name="/checked")
                msg = str(err.value)
                assert "Longest answer (tokens) must be a number between 1 and 64" in msg and "\n" not in msg
            # Gradio's own slider: not this message (what the hook is for).
            with pytest.raises(Exception) as err:
                c.predict("abc", api_name="/plain")
            assert "must be a number between" not in str(err.value)
        finally:
            c.close()
