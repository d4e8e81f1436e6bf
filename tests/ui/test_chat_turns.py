"""The Chat tab's handlers in process, on a FakeBackend through the real turn service (fast, no model): what
a turn shows before its first word, the tags under answers cut by Stop or by the length limit, Clear and a
second message while an answer is coming, and refusals on the page as toasts."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import gradio as gr
import pytest

from llm_levels import history as H
from llm_levels.config import Settings
from llm_levels.runtime import AppRuntime
from llm_levels.turns import run_turn as real_run_turn
from llm_levels.ui import chat, running
from llm_levels.ui.running import BUSY, for_page
from llm_levels.ui.shared import create_session_state
from tests.fakes import FakeBackend

LOCAL = "local"


def request(session: str = "s1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session)


@pytest.fixture
def make_tab(monkeypatch):
    """A Chat tab whose turns go to ``backend`` (set by the test) through the real ``run_turn``."""
    box: dict = {}

    def fake_run_turn(runtime, req, *, cancel=None, **kw):
        box["params"] = req.params
        return real_run_turn(runtime, dataclasses.replace(req, backend=box["backend"]), cancel=cancel, **kw)

    monkeypatch.setattr(chat, "run_turn", fake_run_turn)
    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))

    def make(backend: FakeBackend):
        box["backend"] = backend
        with gr.Blocks():
            ui = chat.layout(runtime)
            tab = chat.ChatTab(runtime, ui.chatbot, ui.state, ui.textbox, ui.metrics_md)
        tab.box = box
        return tab

    return make


def titles(updates, tab) -> list[str]:
    return [H.content_text(m.get("metadata", {}).get("title")) for u in updates for m in u.get(tab.chatbot, [])[-1:]]


def test_chat_is_greedy_and_says_what_it_does_before_the_first_word(make_tab):
    tab = make_tab(FakeBackend(["Hello", " there"]))
    updates = list(tab.send("Hi " * 10, LOCAL, 64, [], None, request()))
    assert tab.box["params"]["temperature"] == 0.0 and tab.box["params"]["max_new_tokens"] == 64
    shown = titles(updates, tab)
    assert shown[0] == "⏳ Preparing your message"
    assert "⏳ Reading your 30-character message" in shown  # between the backend's start and the first word
    assert H.to_messages(updates[-1][tab.state])[-1].content == "Hello there"


def test_an_answer_cut_by_the_length_limit_is_tagged(make_tab):
    tab = make_tab(FakeBackend(["a", "b", "c", "d"]))
    final = list(tab.send("Hi", LOCAL, 2, [], None, request()))[-1]
    assert final[tab.state][-2] == H.assistant("ab") and final[tab.state][-1] == H.ending_note("length")
    assert "cut at the token limit" in final[tab.metrics_md]


def test_stop_ends_the_answer_with_its_partial_text_and_a_tag(make_tab):
    backend = FakeBackend(["one "] * 200, delay_s=0.02)
    tab = make_tab(backend)
    updates = []
    for update in tab.send("Tell me a story", LOCAL, 500, [], None, request()):
        updates.append(update)
        shown = update.get(tab.chatbot) or []
        if shown and shown[-1]["role"] == "assistant" and not H.is_note(shown[-1]):
            tab.stop(request())  # Stop once some text is on screen
    final = updates[-1][tab.state]
    assert final[-1] == H.ending_note("stopped") and final[-2]["content"].startswith("one ")
    assert len(final[-2]["content"].split()) < 200 and backend.stopped.is_set()
    assert "stopped" in updates[-1][tab.metrics_md]
    # The session is free again: the next message is answered.
    assert list(tab.send("Next", LOCAL, 500, final, None, request()))[-1][tab.state][-2] == H.user("Next")


def test_stop_while_it_waits_for_the_model_shows_the_tag_alone(make_tab, monkeypatch):
    tab = make_tab(FakeBackend(["never"]))
    hist = [H.user("Hi")]
    stopped_early = threading.Event()

    def waiting_run_turn(runtime, req, *, cancel=None, **kw):
        def events():  # the turn waits in line until Stop, then ends with no answer (as run_turn does)
            cancel.wait(5)
            stopped_early.set()
            return
            yield  # pragma: no cover

        return events()

    monkeypatch.setattr(chat, "run_turn", waiting_run_turn)
    turn = tab.answer(hist, 64, LOCAL, None, request(), clear_input=True)
    first = next(turn)
    assert H.is_pending(first[tab.chatbot][-1])
    tab.stop(request())
    final = list(turn)[-1]
    assert stopped_early.is_set() and final[tab.state] == hist + [H.ending_note("stopped")]


def test_a_second_message_while_answering_is_refused_and_clear_drops_the_turn(make_tab, monkeypatch):
    tab = make_tab(FakeBackend(["word "] * 200, delay_s=0.02))
    first = tab.send("Long one", LOCAL, 500, [], None, request())
    next(first), next(first)  # the turn runs
    with pytest.raises(gr.Error, match="Still answering"):  # the API gets the gr.Error ...
        list(tab.send("Second", LOCAL, 500, [], None, request()))
    toasts = []
    monkeypatch.setattr(running.gr, "Warning", lambda message, *a, **k: toasts.append(message))
    page = for_page(tab.send, tab.chatbot, tab.state)
    assert list(page("Second", LOCAL, 500, [], None, request())) == [gr.skip()]  # ... the page a toast
    assert toasts == [BUSY]
    assert list(tab.send("Other session", LOCAL, 3, [], None, request("s2")))  # other sessions go on

    cleared = tab.clear(request())
    assert cleared[tab.chatbot] == [] and cleared[tab.state] == []
    rest = list(first)  # the dropped turn ends showing the cleared chat, nothing of its own
    assert rest[-1] == {tab.chatbot: [], tab.state: []}
    assert list(tab.send("After clear", LOCAL, 3, [], None, request()))  # the session is free


def test_undo_drops_a_running_turn_and_shows_what_undo_left(make_tab):
    tab = make_tab(FakeBackend(["word "] * 200, delay_s=0.02))
    hist = [H.user("one"), H.assistant("1")]
    running_turn = tab.send("two", LOCAL, 500, hist, None, request())
    next(running_turn), next(running_turn)
    undone = tab.undo(hist + [H.user("two"), H.assistant("word word")], request())
    assert undone[tab.state] == hist and undone[tab.textbox] == "two"
    assert list(running_turn)[-1] == {tab.chatbot: hist, tab.state: hist}


def test_on_the_page_a_blank_message_is_a_toast_and_nothing_changes(make_tab, monkeypatch):
    tab = make_tab(FakeBackend())
    toasts = []
    monkeypatch.setattr(running.gr, "Warning", lambda message, *a, **k: toasts.append(message))
    page = for_page(tab.send, tab.chatbot, tab.state)
    assert list(page("  \u200b ", LOCAL, 8, [H.user("kept")], None, request())) == [gr.skip()]
    assert toasts == ["Type a message first."]
    with pytest.raises(gr.Error, match="Type a message"):  # the API still gets the error
        list(tab.send("", LOCAL, 8, [], None, request()))


def test_the_chat_and_local_conversations_are_kept_in_the_browser():
    from llm_levels.ui import local

    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false"}))
    with gr.Blocks() as demo:
        session = create_session_state()
        with gr.Tab("chat"):
            chat.build(runtime, session)
        with gr.Tab("local"):
            local.build(runtime, session)
    stores = {b.storage_key: b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)}
    assert {"llm-levels:chat", "llm-levels:local"} <= set(stores)
    # Created at the page's top level, not inside a tab (a tab's components mount only when it is opened).
    top = {id(c) for c in demo.children}
    assert id(stores["llm-levels:chat"]) in top and id(stores["llm-levels:local"]) in top
    loads = [fn for fn in demo.fns.values() if any(t[1] == "load" for t in fn.targets)]
    restored_from = {b.storage_key for fn in loads for b in fn.inputs if isinstance(b, gr.BrowserState)}
    assert {"llm-levels:chat", "llm-levels:local"} <= restored_from
