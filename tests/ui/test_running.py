"""llm_levels.ui.running (each session's running turn; page refusals as toasts) and the browser memory of
llm_levels.ui.shared (what a tab keeps in localStorage, and that an API key is never among it). No model."""

from __future__ import annotations

import dataclasses
import inspect
import threading

import gradio as gr
import pytest
from gradio.utils import get_type_hints

from llm_levels import history as H
from llm_levels.ui import running
from llm_levels.ui.running import Turns, for_page, on_page
from llm_levels.ui.shared import BROWSER_HISTORY_CHARS, for_browser, remembered, restored

CHAT, STATE = "chatbot", "state"  # stand-ins for the components (dict keys)


# ------------------------------------------------------------------------------------------ Turns
def test_a_session_runs_one_turn_at_a_time_and_stop_frees_it():
    turns = Turns()
    first = turns.begin("s1")
    assert first is not None and not first.stopped
    assert turns.begin("s1") is None  # still answering: a second message is refused
    assert turns.begin("s2") is not None  # another session is not affected
    assert turns.stop("s1") and first.stopped and first.cancel.is_set() and not first.dropped
    second = turns.begin("s1")  # a stopped turn no longer blocks the session
    assert second is not None and second is not first
    turns.end("s1", first)  # the old turn ending late does not forget the new one
    assert turns.begin("s1") is None
    turns.end("s1", second)
    assert not turns.stop("s1")  # nothing runs
    assert turns.begin(None) is not None and turns.begin(None) is not None  # no session: never refused


def test_a_dropped_turn_shows_nothing_more_but_what_clear_left():
    turns = Turns()
    turn = turns.begin("s")
    gen_closed = threading.Event()

    def updates():
        try:
            yield {CHAT: ["partial 1"], STATE: ["partial 1"]}
            turns.drop("s", [H.user("kept")])  # Clear/Undo while the turn runs
            yield {CHAT: ["partial 2"], STATE: ["partial 2"]}
            yield {CHAT: ["final"], STATE: ["final"]}
        finally:
            gen_closed.set()

    out = list(turns.guarded("s", turn, updates(), CHAT, STATE))
    assert out == [{CHAT: ["partial 1"], STATE: ["partial 1"]}, {CHAT: [H.user("kept")], STATE: [H.user("kept")]}]
    assert turn.dropped and turn.cancel.is_set() and gen_closed.is_set()
    assert turns.begin("s") is not None  # the session is free


def test_a_dropped_turn_leaves_a_newer_turn_alone():
    turns = Turns()
    old = turns.begin("s")
    turns.drop("s", [])
    new = turns.begin("s")  # the next message started before the old turn noticed
    out = list(turns.guarded("s", old, iter([{CHAT: ["late"], STATE: ["late"]}]), CHAT, STATE))
    assert out == []  # neither its late piece nor the cleared chat over the new turn
    assert turns.begin("s") is None  # the new turn still runs
    turns.end("s", new)


# ---------------------------------------------------------------------------------------- on_page
def test_on_page_turns_a_refusal_into_a_toast_that_changes_nothing(monkeypatch):
    toasts = []
    monkeypatch.setattr(running.gr, "Warning", lambda message, *a, **k: toasts.append(message))

    def refused():
        raise gr.Error("Type a message first.")
        yield  # pragma: no cover

    out = list(on_page(refused(), CHAT, STATE))
    assert toasts == ["Type a message first."]
    assert out == [gr.skip()]


def test_on_page_ends_a_turn_that_hit_a_bug_with_a_note_and_keeps_what_was_shown(monkeypatch):
    monkeypatch.setattr(running.gr, "Warning", lambda *a, **k: None)
    shown = [H.user("Hi"), H.note("…", title=H.WAIT_TITLE, pending=True)]

    def buggy():
        yield {CHAT: shown, STATE: shown[:1]}
        raise KeyError("oops")

    out = list(on_page(buggy(), CHAT, STATE))
    last = out[-1][STATE]
    assert out[-1][CHAT] == last and last[0] == H.user("Hi")
    assert H.is_note(last[-1]) and "KeyError" in last[-1]["content"] and not any(H.is_pending(m) for m in last)


def test_for_page_keeps_the_handlers_signature_so_gradio_passes_the_request():
    class Tab:
        def send(self, text: str, hist: list, request: gr.Request):
            yield {CHAT: [text], STATE: hist}

    wrapped = for_page(Tab().send, CHAT, STATE)
    assert list(inspect.signature(wrapped).parameters) == ["text", "hist", "request"]
    assert get_type_hints(wrapped)["request"] is gr.Request
    assert inspect.isgeneratorfunction(wrapped)
    assert list(wrapped("hi", [], None)) == [{CHAT: ["hi"], STATE: []}]


# --------------------------------------------------------------------------------- browser memory
def test_for_browser_keeps_the_conversation_without_waiting_notes_and_at_most_the_limit():
    hist = [H.user("a"), H.assistant("b"), H.ending_note("stopped"), H.note("…", title=H.WAIT_TITLE, pending=True)]
    assert for_browser(hist) == hist[:3]
    big = [H.user("x" * (BROWSER_HISTORY_CHARS // 2)), H.assistant("y" * (BROWSER_HISTORY_CHARS // 2)), H.user("z")]
    assert for_browser(big) == big[1:]  # the oldest message that does not fit is not kept


@pytest.mark.parametrize("junk", [None, "text", 3, {"role": "user"}, [1, None, "x", {"role": "hacker", "content": 1}]])
def test_restored_makes_whatever_the_browser_sends_back_a_safe_conversation(junk):
    assert restored(junk) == []


def test_restored_keeps_a_real_conversation_and_makes_its_text_valid():
    saved = [
        {"role": "user", "content": "Say \ud800 hi"},
        {"role": "assistant", "content": "Hi", "metadata": {"title": H.STOPPED_TITLE, "x": 1}},
        {"role": "assistant", "content": "…", "metadata": {"title": H.WAIT_TITLE, "status": "pending"}},
    ]
    out = restored(saved)
    assert out[0] == H.user("Say \ufffd hi")
    assert out[1]["metadata"] == {"title": H.STOPPED_TITLE}  # nothing unknown
    assert len(out) == 2  # a "please wait" spinner left from a reload mid-answer is not brought back


def test_an_api_key_is_never_a_remembered_value():
    with gr.Blocks():
        assert remembered("chat", []).storage_key == "llm-levels:chat"
        for key in ("api_key", "openai-api-key", "API_KEY"):
            with pytest.raises(ValueError):
                remembered(key)


def test_no_value_kept_in_the_browser_is_ever_computed_from_the_api_key():
    """Every BrowserState of the whole app (each tab's): no event that writes one reads the session's API
    key State (the one gr.State that starts as None) or a component named for a key, so a key can never
    reach localStorage."""
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui.app import build_ui

    runtime = AppRuntime(dataclasses.replace(Settings.from_env(), preload_model=False))
    demo = build_ui(runtime)
    stores = {i for i, b in demo.blocks.items() if isinstance(b, gr.BrowserState)}
    assert {demo.blocks[i].storage_key for i in stores} >= {"llm-levels:chat", "llm-levels:local"}
    writers = [fn for fn in demo.fns.values() if {b._id for b in fn.outputs} & stores]
    assert len(writers) >= 2
    for fn in writers:
        for b in fn.inputs:
            named = f"{getattr(b, 'elem_id', '') or ''} {getattr(b, 'label', '') or ''}".lower()
            assert "key" not in named, (fn.name, named)
            assert not (isinstance(b, gr.State) and b.value is None), (fn.name, "reads a State that starts as None")


def test_refusals_as_toasts_returns_skip_for_a_refusal_and_passes_the_rest_through(monkeypatch):
    toasts = []
    monkeypatch.setattr(running.gr, "Warning", lambda message, *a, **k: toasts.append(message))

    def render(text: str, progress: gr.Progress = gr.Progress()):
        if not text:
            raise gr.Error("Type a message first.")
        return {"shown": text}

    page = running.refusals_as_toasts(render)
    assert list(inspect.signature(page).parameters) == ["text", "progress"]
    assert page("hi") == {"shown": "hi"}
    assert page("") == gr.skip() and toasts == ["Type a message first."]
