"""The Hosted API tab in process, on the turn service with a fake backend (no server, no network): its updates,
a refused base URL, the local model loading first. Also the helpers the other in-process tests build on."""

from __future__ import annotations

import pytest

from llm_levels import history as H
from tests.fixtures.app_server import APP_ENDPOINT


def fake_hosted(name="fake"):
    """A fake backend that also keeps its last request and response, as the ``openai`` one does."""
    from tests.fakes import FakeBackend

    class FakeHosted(FakeBackend):
        last_request = last_response = None

        def build_request(self, messages, params):
            self.last_request = {
                "model": self.model,
                "messages": [{"role": m.role, "content": m.content} for m in messages],
                "stream": True,
            }
            self.last_response = None
            return self.last_request

        def stream(self, messages, params, cancel=None):
            self.build_request(messages, params)
            yield from super().stream(messages, params, cancel)
            self.last_response = [{"object": "chat.completion.chunk", "api_key": "sk-typed"}]

    return FakeHosted(name=name)


def tab_in_process(monkeypatch, backend, models=None):
    """The tab built in a Blocks, its runtime building ``backend`` for every request (no server, no network)."""
    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui import api
    from llm_levels.ui.shared import create_session_state

    runtime = AppRuntime(
        Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000", "ALLOW_PRIVATE_BASE_URL": "false"})
    )
    if models is not None:
        monkeypatch.setattr(runtime, "models", models)
    with gr.Blocks():
        tab = api.build(runtime, create_session_state())
    built = []

    def hosted_backend(option_id, **kw):
        built.append((option_id, kw))
        return runtime_hosted(option_id, **kw) if kw.get("base_url") else backend

    runtime_hosted = runtime.hosted_backend
    monkeypatch.setattr(runtime, "hosted_backend", hosted_backend)
    return tab, built


def _send(tab, text, endpoint="hosted:session", url="", model="fake-model", max_tokens=16):
    return list(
        tab.send(text, endpoint, url, model, "Be brief.", 0.0, 1.0, max_tokens, "", True, [], "sk-typed", [], None)
    )


def test_in_process_a_turn_comes_back_as_component_updates(monkeypatch):
    tab, built = tab_in_process(monkeypatch, fake_hosted())
    updates = _send(tab, "hello")
    assert all(isinstance(u, dict) and u and set(u) <= set(tab.outputs) for u in updates)
    first, last = updates[0], updates[-1]
    assert H.is_note(first[tab.chatbot][-1]) and first[tab.textbox] == ""  # "…" at once, the box emptied
    # What is about to be sent shows before the answer: the snippet and the request, no response yet.
    preview = next(u for u in updates if tab.request_json in u)
    assert preview[tab.response_json] == "" and preview[tab.request_json]["messages"][-1]["content"] == "hello"
    # The final update holds every output an API client reads, the panels included (secrets masked).
    assert set(tab.outputs) - {tab.textbox} <= set(last)
    assert 'model="fake-model"' in last[tab.snippet] and last[tab.request_json]["model"] == "fake-model"
    assert last[tab.response_json] == '{"object": "chat.completion.chunk", "api_key": "[hidden]"}'
    assert H.to_messages(last[tab.chatbot])[-1].content == "Hello, world"
    (row,) = last[tab.rows]
    assert row[:4] == [1, "fake-model", 2, 3] and row[-1] == "unknown"  # system + user in, 3 pieces out
    assert last[tab.metrics_md].startswith("**fake** · ") and "cost unknown" in last[tab.metrics_md]
    ((option_id, kw),) = built
    assert option_id == "hosted:session" and kw == {"api_key": "sk-typed", "model": "fake-model", "stream": True}


def test_in_process_a_refused_base_url_is_a_failed_turn_after_the_checks(monkeypatch):
    from gradio import Error

    tab, _ = tab_in_process(monkeypatch, fake_hosted())
    updates = _send(tab, "hello", endpoint="custom", url="http://10.0.0.7:8000/v1")
    note = updates[-1][tab.chatbot][-1]
    assert H.is_note(note) and "private" in H.content_text(note["content"]).lower()
    assert "not answered" in updates[-1][tab.metrics_md]
    # A request the turn service refuses is refused first, whatever the URL: nothing on screen changes.
    with pytest.raises(Error, match="too long"):
        _send(tab, "x" * 1_000_000, endpoint="custom", url="http://10.0.0.7:8000/v1")


def test_in_process_the_app_endpoint_shows_the_local_models_load_first(monkeypatch):
    import threading
    from types import SimpleNamespace

    class LoadingModels:
        """The local model loads for a little while (what the app's own /v1 endpoint serves)."""

        def __init__(self):
            self.loaded = threading.Event()

        def get(self, spec=None, progress=None, *, engine=None):
            self.loaded.wait(0.8)
            self.loaded.set()

        def peek(self, spec=None, *, engine=None):
            return object() if self.loaded.is_set() else None

        def status(self, spec=None, *, engine=None):
            if self.loaded.is_set():
                return SimpleNamespace(state="ready", fraction=1.0, message="")
            return SimpleNamespace(state="loading", fraction=0.4, message="weights")

    tab, built = tab_in_process(monkeypatch, fake_hosted("this app's local endpoint"), LoadingModels())
    updates = _send(tab, "hello", endpoint=APP_ENDPOINT, model="local")
    titles = [
        u[tab.chatbot][-1]["metadata"]["title"] for u in updates if tab.chatbot in u and H.is_note(u[tab.chatbot][-1])
    ]
    assert any("40%" in t for t in titles), titles
    assert H.to_messages(updates[-1][tab.chatbot])[-1].content == "Hello, world"
    assert updates[-1][tab.rows][0][-1] == "free (your hardware)"
    assert ("app-endpoint", {"model": "local", "stream": True}) in built
