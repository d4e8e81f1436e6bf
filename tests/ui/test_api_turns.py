"""The Hosted API tab in process, on fake backends: what the model is sent after a failed turn, the tags under
answers cut by Stop or by the length limit, the raw response panel, the endpoint's model, typed text made valid.

Fast (no server, no model); tests/ui/test_api_tab.py drives the same tab on the real app.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from llm_levels import history as H
from llm_levels.core import BackendError, Chunk
from llm_levels.runtime import APP_ENDPOINT
from llm_levels.ui.api_panels import CUSTOM, STOPPED_EARLY, answer_messages, response_text, sent_messages
from tests.fakes import FakeBackend
from tests.ui.test_api_in_process import tab_in_process

SESSION = "hosted:session"


class Scripted(FakeBackend):
    """A fake hosted backend that answers each request with the next script entry (a FakeBackend's
    settings) and keeps the last request and response as the ``openai`` one does."""

    last_request = last_response = None

    def __init__(self, *script: dict) -> None:
        super().__init__()
        self.script = list(script)

    def build_request(self, messages, params):
        self.last_request = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        return self.last_request

    def stream(self, messages, params, cancel=None):
        self.build_request(messages, params)
        step = self.script.pop(0) if self.script else {}
        self.pieces = list(step.get("pieces", ("Hello", ", ", "world")))
        self.fail_after, self.delay_s = step.get("fail_after"), step.get("delay_s", 0.0)
        self.last_response = [
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]} for p in self.pieces
        ]
        yield from super().stream(messages, params, cancel)


def send(tab, text, hist, *, endpoint=SESSION, model="fake-model", max_tokens=16, retry=False):
    """All updates of one send (or retry) on ``hist``."""
    form = (endpoint, "", model, "Be brief.", 0.0, 1.0, max_tokens, "", True)
    if retry:
        return list(tab.retry(*form, hist, "sk-typed", [], None))
    return list(tab.send(text, *form, hist, "sk-typed", [], None))


def final_chat(tab, updates):
    return [u for u in updates if tab.chatbot in u][-1][tab.chatbot]


def sent_roles(backend, i=-1):
    return [(m.role, m.content) for m in backend.calls[i][0]]


# ------------------------------------------------------------------ item 9: a failed turn is not sent again
def test_a_message_that_failed_unanswered_stays_on_screen_but_is_not_sent_again(monkeypatch):
    backend = Scripted({"fail_after": 0}, {})
    tab, _ = tab_in_process(monkeypatch, backend)
    failed = final_chat(tab, send(tab, "first", []))
    assert [H.is_note(m) for m in failed] == [False, True]  # the message, then "⚠️ Not answered"

    updates = send(tab, "second", failed)
    # The model gets a valid conversation: the new message only, not two user messages in a row.
    assert sent_roles(backend) == [("system", "Be brief."), ("user", "second")]
    shown = final_chat(tab, updates)
    assert shown[:2] == failed and H.to_messages(shown[2:]) == H.to_messages(
        [H.user("second"), H.assistant("Hello, world")]
    )
    # The Request panel shows what was really sent.
    request = next(u[tab.request_json] for u in updates if tab.request_json in u)
    assert [m["role"] for m in request["messages"]] == ["system", "user"]

    # Retry after a failure sends the failed message itself, once.
    backend.script = [{"fail_after": 0}, {}]
    failed_again = final_chat(tab, send(tab, "third", shown))
    retried = final_chat(tab, send(tab, None, failed_again, retry=True))
    roles = [r for r, _ in sent_roles(backend)]
    assert roles == ["system", "user", "assistant", "user"] and sent_roles(backend)[-1] == ("user", "third")
    assert H.to_messages(retried)[-1].content == "Hello, world"


def test_a_partial_answer_that_failed_is_kept_and_the_conversation_alternates(monkeypatch):
    backend = Scripted({"fail_after": 1}, {})
    tab, _ = tab_in_process(monkeypatch, backend)
    cut = final_chat(tab, send(tab, "first", []))
    assert H.content_text(cut[1]["content"]) == "Hello" and cut[2]["metadata"]["title"] == H.CUT_TITLE
    send(tab, "second", cut)
    assert [r for r, _ in sent_roles(backend)] == ["system", "user", "assistant", "user"]


def test_sent_messages_keeps_only_answered_turns():
    hist = [
        H.user("a"),
        H.note("boom"),  # failed, unanswered
        H.user("b"),
        H.assistant("B"),
        H.user("c"),  # stopped before any text: its stopped note
        *answer_messages("", None, stopped=True),
        H.user("d"),
    ]
    got = [(m.role, m.content) for m in sent_messages(hist, "sys")]
    assert got == [("system", "sys"), ("user", "b"), ("assistant", "B"), ("user", "d")]


# ------------------------------------------------------------------ item 11: stopped / cut-off tags
def _stop_after_first_text(tab, gen):
    """Read ``gen`` and press Stop (for the tab's in-process session) once the answer has started."""
    updates = []
    for u in gen:
        updates.append(u)
        chat = u.get(tab.chatbot)
        if chat and chat[-1]["role"] == "assistant" and not H.is_note(chat[-1]):
            tab.stop(None)
    return updates


def test_stop_keeps_the_partial_answer_tagged_stopped_and_the_row(monkeypatch):
    backend = Scripted({"pieces": ["word "] * 200, "delay_s": 0.02})
    tab, _ = tab_in_process(monkeypatch, backend)
    form = (SESSION, "", "fake-model", "", 0.0, 1.0, 300, "", True)
    updates = _stop_after_first_text(tab, tab.send("tell me", *form, [], "sk-typed", [], None))
    last = updates[-1]
    chat = last[tab.chatbot]
    assert chat[-1] == H.ending_note("stopped") and chat[-2]["role"] == "assistant"
    assert 0 < chat[-2]["content"].count("word") < 200  # the backend stopped early
    assert last[tab.state] == chat and "stopped" in last[tab.metrics_md]
    assert len(last[tab.rows]) == 1 and backend.stopped.is_set()
    # The tag is a note: the next request sends the partial answer, never the tag.
    send(tab, "more", chat)
    assert [r for r, _ in sent_roles(backend)] == ["system", "user", "assistant", "user"]


def test_stop_while_the_model_loads_says_so_and_the_message_is_not_sent_later(monkeypatch):
    from types import SimpleNamespace

    class NeverLoads:
        """A local model that never finishes loading (so the turn waits until Stop)."""

        def __init__(self):
            self.gone = threading.Event()

        def get(self, spec=None, progress=None, *, engine=None):
            self.gone.wait(30)

        def peek(self, spec=None, *, engine=None):
            return None

        def status(self, spec=None, *, engine=None):
            return SimpleNamespace(state="loading", fraction=0.1, message="weights")

    models = NeverLoads()
    tab, _ = tab_in_process(monkeypatch, Scripted(), models)
    updates = []
    try:
        for u in tab.send("hello", APP_ENDPOINT, "", "local", "", 0.0, 1.0, 8, "", True, [], None, [], None):
            updates.append(u)
            chat = u.get(tab.chatbot) or []
            if chat and "10%" in chat[-1].get("metadata", {}).get("title", ""):
                tab.stop(None)
    finally:
        models.gone.set()
    chat = updates[-1][tab.chatbot]
    assert chat[0] == H.user("hello") and chat[-1]["metadata"]["title"] == H.STOPPED_TITLE
    assert STOPPED_EARLY in chat[-1]["content"] and not any(H.is_pending(m) for m in chat)
    assert updates[-1][tab.state] == chat


def test_an_answer_cut_at_the_length_limit_is_tagged(monkeypatch):
    backend = Scripted({"pieces": ["a", "b", "c", "d"]}, {})
    tab, _ = tab_in_process(monkeypatch, backend)
    chat = final_chat(tab, send(tab, "hi", [], max_tokens=2))
    assert chat[-2] == H.assistant("ab") and chat[-1] == H.ending_note("length")
    whole = final_chat(tab, send(tab, "again", chat, max_tokens=16))
    assert not H.is_note(whole[-1])  # an answer that ended by itself carries no tag


def test_answer_messages():
    assert answer_messages("x", "stop", stopped=False) == [H.assistant("x")]
    assert answer_messages("x", "length", stopped=False) == [H.assistant("x"), H.ending_note("length")]
    assert answer_messages("x", "length", stopped=True) == [H.assistant("x"), H.ending_note("stopped")]
    (note,) = answer_messages("", None, stopped=True)
    assert H.is_note(note) and note["metadata"]["title"] == H.STOPPED_TITLE


# ------------------------------------------------------------------ item 13: the raw response, readable
def test_the_response_panel_shows_each_chunk_with_its_text(monkeypatch):
    tab, _ = tab_in_process(monkeypatch, Scripted({"pieces": ["Hel", "lo"]}))
    last = send(tab, "hi", [])[-1]
    lines = last[tab.response_json].splitlines()
    assert [json.loads(line)["choices"][0]["delta"]["content"] for line in lines] == ["Hel", "lo"]
    assert "Object(" not in last[tab.response_json]


def test_response_text():
    assert response_text(None) == ""
    assert response_text({"status": 401, "body": {"error": "no"}}) == json.dumps(
        {"status": 401, "body": {"error": "no"}}, indent=2
    )
    assert response_text([{"a": "é"}, {"b": 2}]) == '{"a": "é"}\n{"b": 2}'


# ------------------------------------------------------------------ item 10: the endpoint's own model
def test_switching_the_endpoint_offers_that_endpoints_models(monkeypatch):
    from llm_levels.runtime import HOSTED_PREFIX

    tab, _ = tab_in_process(monkeypatch, Scripted())
    app = tab.pick_endpoint(APP_ENDPOINT)[tab.model]
    assert app.value == "local" and {"local", "local-llama.cpp", "local-transformers"} <= set(c[0] for c in app.choices)
    custom = tab.pick_endpoint(CUSTOM)[tab.model]
    assert custom.value == "" and tab.pick_endpoint(CUSTOM)[tab.base_url].visible is True
    defaults = tab.endpoints.defaults()
    assert defaults[APP_ENDPOINT] == "local" and defaults[CUSTOM] == ""
    assert all(k.startswith(HOSTED_PREFIX) or k in (APP_ENDPOINT, CUSTOM) for k in defaults)


def test_the_page_switches_the_model_the_moment_the_endpoint_changes():
    """The page itself puts the endpoint's default model in the box (a js step, no round trip), so a message
    sent right after a switch cannot go out with the previous endpoint's model."""
    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui.app import build_ui

    demo = build_ui(AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false"})))
    blocks = demo.blocks.values()
    endpoint = next(b for b in blocks if isinstance(b, gr.Dropdown) and b.elem_id == "api-endpoint")
    model = next(b for b in blocks if isinstance(b, gr.Dropdown) and b.elem_id == "api-model")
    config = demo.get_config_file()
    (dep,) = [
        d
        for d in config["dependencies"]
        if d.get("js") and [endpoint._id, "change"] in [list(t) for t in d["targets"]] and d["outputs"] == [model._id]
    ]
    assert dep["backend_fn"] is False and '"app-endpoint": "local"' in dep["js"]


def test_a_custom_server_needs_a_model_id_first(monkeypatch):
    from gradio import Error

    tab, _ = tab_in_process(monkeypatch, Scripted())
    with pytest.raises(Error, match="model id"):
        list(tab.send("hi", CUSTOM, "http://example.com/v1", "", "", 0.0, 1.0, 8, "", True, [], None, [], None))


# ------------------------------------------------------------------ typed text made valid
def test_typed_text_is_made_valid_before_it_is_sent(monkeypatch):
    backend = Scripted({})
    tab, _ = tab_in_process(monkeypatch, backend)
    updates = list(
        tab.send("a\ud800b\x00c", SESSION, "", "fake-model", "sys\udfff", 0.0, 1.0, 8, "", True, [], "k", [], None)
    )
    assert sent_roles(backend) == [("system", "sys\ufffd"), ("user", "a\ufffdbc")]
    assert final_chat(tab, updates)[0] == H.user("a\ufffdbc")
    json.dumps(updates[-1][tab.state]).encode("utf-8")  # the stored conversation encodes


def test_a_backend_error_after_stop_reads_as_stopped(monkeypatch):
    class FailsOnStop(Scripted):
        """Streams "x" until cancelled, then fails (as a server whose connection is cut may)."""

        def stream(self, messages, params, cancel=None):
            self.build_request(messages, params)
            for i in range(500):
                if cancel is not None and cancel.is_set():
                    raise BackendError("connection closed", kind="network", partial_text="x" * i)
                time.sleep(0.01)
                yield Chunk(text="x")

    tab, _ = tab_in_process(monkeypatch, FailsOnStop())
    form = (SESSION, "", "fake-model", "", 0.0, 1.0, 600, "", True)
    updates = _stop_after_first_text(tab, tab.send("go", *form, [], "k", [], None))
    chat = updates[-1][tab.chatbot]
    assert chat[-1] == H.ending_note("stopped") and chat[-2]["content"].startswith("x")
    assert "Not answered" not in json.dumps(chat) and "stopped" in updates[-1][tab.metrics_md]
