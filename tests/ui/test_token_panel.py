"""The token-probabilities panel, continuing an answer from a token, and the next-token explorer, in process on
fake backends (fast: no server, no model); the real app and model: tests/browser/test_token_probabilities.py
and the API tests at the end (marked slow)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from llm_levels import history as H
from llm_levels.core import Chunk, GenParams, Message, TokenLogprob, Usage
from llm_levels.engine import LLAMA_CPP
from llm_levels.tokens import Distribution, NextToken
from llm_levels.ui import next_token_panel
from llm_levels.ui.token_branch import BRANCH_TITLE, ends_answer
from llm_levels.ui.token_panel import AnswerTokens, top_logprobs, with_top_logprobs
from tests.fakes import FakeBackend

LOADED = SimpleNamespace(
    engine=LLAMA_CPP,
    display_name="Fake-135M",
    dtype="Q4_1",
    threads=2,
    parallel=4,
    context_window=1536,
    load_s=0.1,
    device="cpu",
    label="llama.cpp · Q4_1",
    tokenize=lambda text: [(1, "<|im_start|>"), (2, text[12:])],
)

#: The fake model's answer: each token with its alternatives (token, probability), most likely first.
ANSWER = [
    ("The", [("The", 0.6), ("Paris", 0.3), (" It", 0.1)]),
    (" capital", [(" capital", 0.9), (" city", 0.1)]),
    (" is", [(" is", 0.8), ("<|im_end|>", 0.2)]),
]
#: What it writes after a started answer (the continuation).
CONTINUATION = [(" a", [(" a", 0.5), (" the", 0.5)]), (" city", [(" city", 1.0)])]


def tok(text: str, alts: list[tuple[str, float]]) -> TokenLogprob:
    import math

    p = dict(alts).get(text, 0.05)
    return TokenLogprob(text, math.log(p), tuple((a, math.log(q)) for a, q in alts))


class FakeLocal(FakeBackend):
    """A local backend on llama.cpp that answers :data:`ANSWER`, or :data:`CONTINUATION` after a started answer,
    with the tokens' probabilities when asked."""

    engine = LLAMA_CPP
    loaded = LOADED

    def prepare(self, messages, max_new_tokens=None):
        return SimpleNamespace(text="<|im_start|>" + messages[-1].content, ids=[1, 2], truncated_turns=0)

    def stream(self, messages, params, cancel=None):
        self.calls.append((list(messages), params))
        pieces = CONTINUATION if messages[-1].role == "assistant" else ANSWER
        pieces = pieces[: params.max_new_tokens]
        for text, alts in pieces:
            yield Chunk(text=text, logprobs=(tok(text, alts),) if params.top_logprobs is not None else ())
        yield Chunk(usage=Usage(3, len(pieces)), finish_reason="stop")


class Models:
    def get(self, spec=None, progress=None, *, engine=None):
        return LOADED

    def peek(self, spec=None, *, engine=None):
        return LOADED

    def status(self, spec=None, *, engine=None):
        return SimpleNamespace(state="ready", fraction=1.0, message="")

    def loaded(self):
        return [LOADED]


@pytest.fixture
def local_tab(monkeypatch):
    """The Local tab built in a Blocks on :class:`FakeLocal` (its panel: ``tab.probs``)."""
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui import local, local_panels

    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))
    backend = FakeLocal(name="local · Fake")
    monkeypatch.setattr(runtime, "models", Models())
    monkeypatch.setattr(runtime, "local_backend", lambda spec=None, *, engine=None, slots=None: backend)
    monkeypatch.setattr(local_panels, "local_snippet", lambda *a, **k: "# code")
    with gr.Blocks():
        tab = local.build(runtime, None)
    tab.fake = backend
    return tab


def send(tab, text="What is it?", *, show=True, k=3, hist=()):
    """The Local tab's send (greedy, 8 tokens), probabilities on or off; returns the last update."""
    args = (text, "embedded", "", False, 0.7, 0, 1.0, 1.0, 8, "", "llama.cpp", list(hist), [], None)
    return list(tab.send(*args, show, k))[-1]


# ----------------------------------------------------------------------------------------- settings
def test_the_box_and_slider_become_top_logprobs_only_when_ticked():
    assert top_logprobs(False, 5) is None and top_logprobs("false", 20) is None
    assert top_logprobs(True, 5) == 5 and top_logprobs(True, "20") == 20 and top_logprobs(True, None) == 5
    with pytest.raises(gr.Error, match="1 to 20"):
        top_logprobs(True, 21)
    with pytest.raises(gr.Error, match="number"):
        top_logprobs(True, "many")
    assert with_top_logprobs(GenParams(), True, 3).top_logprobs == 3
    assert with_top_logprobs({"temperature": 0.0}, False, 3) == {"temperature": 0.0, "top_logprobs": None}


def test_an_end_token_alternative_ends_the_answer():
    assert all(ends_answer(t) for t in ("", "<|im_end|>", "</s>", "<|endoftext|>", "<eos>", "<end_of_turn>"))
    assert not any(ends_answer(t) for t in (" Paris", "<div>", "<", "end"))


# ----------------------------------------------------------------------------------------- the panel
def test_off_by_default_nothing_is_asked_for_and_the_panel_says_how(local_tab):
    tab, panel = local_tab, local_tab.probs
    last = send(tab, show=False)
    assert tab.fake.calls[-1][1].top_logprobs is None
    assert last[panel.data] is None and "Tick “Show token probabilities”" in last[panel.answer]
    assert set(tab.outputs) - {tab.textbox} <= set(last)  # the final update still holds every output


def test_a_sent_message_shows_its_tokens_shaded_and_a_click_shows_the_alternatives(local_tab):
    tab, panel = local_tab, local_tab.probs
    last = send(tab, k=3)
    assert tab.fake.calls[-1][1].top_logprobs == 3
    data = last[panel.data]
    assert isinstance(data, AnswerTokens) and [t.token for t in data.tokens] == ["The", " capital", " is"]
    assert H.to_messages(last[tab.chatbot])[-1].content == "The capital is"
    html = last[panel.answer]
    assert html.count("data-i=") == 3 and 'data-i="2"' in html and "mean probability" in html
    picked = panel.select(data, gr.SelectData(None, {"index": 0, "value": "The"}))
    chart = picked[panel.chart]
    assert "Token #0" in chart and "Paris" in chart and "60.0%" in chart and "✓ in the answer" in chart
    assert 'data-a="1"' in chart  # clickable bars on the Local tab
    assert picked[panel.index] == 0 and picked[panel.alt] == 1  # the first alternative that differs
    assert "Paris" in picked[panel.continue_btn].value and "sel" in picked[panel.answer]
    with pytest.raises(gr.Error, match="tokens 0 to 2"):
        panel.pick_token(data, 7)
    api = panel.api_data(data)
    assert api["count"] == 3 and api["tokens"][0]["alternatives"][1]["token"] == "Paris"
    assert abs(api["mean_probability"] - (0.6 + 0.9 + 0.8) / 3) < 1e-9 and api["engine"] == LLAMA_CPP
    json.dumps(api)  # JSON-friendly
    assert panel.api_data(None)["tokens"] == [] and "Tick" in panel.api_data(None)["note"]


def test_continue_from_a_token_prefills_the_answer_streams_the_rest_and_restore_brings_it_back(local_tab):
    tab, panel = local_tab, local_tab.probs
    first = send(tab)
    data, hist = first[panel.data], first[tab.state]
    updates = list(tab_branch(tab).continue_from(0, 1, "embedded", data, hist, None))
    messages, params = tab.fake.calls[-1]
    # Not a new user message: the conversation, then the started answer (the alternative in the token's place).
    assert [m.role for m in messages] == ["user", "assistant"] and messages[-1].content == "Paris"
    assert params.max_new_tokens == 8 - 1 and params.top_logprobs == 3
    assert H.to_messages(updates[0][tab.chatbot])[-1].content == "Paris"  # the cut answer shows at once
    last = updates[-1]
    chat = last[tab.state]
    assert H.to_messages(chat)[-1].content == "Paris a city"
    assert chat[-1]["metadata"]["title"] == BRANCH_TITLE and "replaced by Paris" in chat[-1]["content"]
    branched = last[panel.data]
    assert [t.token for t in branched.tokens] == ["Paris", " a", " city"]
    assert abs(branched.tokens[0].probability - 0.3) < 1e-9 and branched.original is data
    assert "🔀" in last[panel.answer] and last[panel.restore_btn].visible
    # Branch again from the branch: continue_with keeps the tokens before the cut.
    again = list(tab_branch(tab).continue_from(1, 1, "embedded", branched, chat, None))[-1]
    assert H.to_messages(again[tab.state])[-1].content == "Paris the a city"
    assert again[panel.data].original is data  # Restore still goes back to the very first answer
    back = tab_branch(tab).restore(again[panel.data], again[tab.state])
    assert back[tab.state] == list(data.shown) and back[panel.data] is data
    assert not back[panel.restore_btn].visible
    with pytest.raises(gr.Error, match="not a branch"):
        tab_branch(tab).restore(data, back[tab.state])


def test_picking_the_end_token_ends_the_answer_there_without_the_model(local_tab):
    tab, panel = local_tab, local_tab.probs
    first = send(tab)
    calls = len(tab.fake.calls)
    last = list(tab_branch(tab).continue_from(2, 1, "embedded", first[panel.data], first[tab.state], None))[-1]
    assert len(tab.fake.calls) == calls
    assert H.to_messages(last[tab.state])[-1].content == "The capital"
    assert [t.token for t in last[panel.data].tokens] == ["The", " capital"]


def test_continue_refuses_what_it_cannot_do(local_tab):
    tab, panel = local_tab, local_tab.probs
    branch = tab_branch(tab)
    with pytest.raises(gr.Error, match="No answer"):
        list(branch.continue_from(0, 0, "embedded", None, [], None))
    first = send(tab)
    data, hist = first[panel.data], first[tab.state]
    with pytest.raises(gr.Error, match="alternatives 0 to 2"):
        list(branch.continue_from(0, 5, "embedded", data, hist, None))
    with pytest.raises(gr.Error, match="changed"):  # another message was sent since
        list(branch.continue_from(0, 1, "embedded", data, hist + [H.user("more")], None))
    hosted = AnswerTokens(data.tokens, data.text, base=data.base)  # no engine: a hosted answer
    with pytest.raises(gr.Error, match="local model"):
        list(branch.continue_from(0, 1, "embedded", hosted, hist, None))


def test_clear_empties_the_panel(local_tab):
    cleared = local_tab.probs.cleared()
    assert cleared[local_tab.probs.data] is None and not cleared[local_tab.probs.continue_btn].interactive


def tab_branch(tab):
    from llm_levels.ui.token_branch import Branching

    return Branching(tab, tab.probs)


# ----------------------------------------------------------------------------------------- the explorer
DIST = Distribution(
    (
        NextToken(" Paris", 0.5, 1),
        NextToken(" the", 0.2, 2),
        NextToken(" a", 0.15, 3),
        NextToken("<|im_end|>", 0.05, 4, True),
    ),
    "transformers",
    "fake-model",
    12,
)


READING = next_token_panel.Reading(DIST, "after “…x”")


@pytest.fixture
def explorer(monkeypatch):
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime

    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))
    seen = {}
    monkeypatch.setattr(runtime, "local_backend", lambda spec=None, *, engine=None: SimpleNamespace(engine=engine))

    def fake_distribution(backend, messages, k):
        seen["messages"], seen["k"] = list(messages), k
        return DIST

    monkeypatch.setattr(next_token_panel, "next_token_distribution", fake_distribution)
    with gr.Blocks():
        e = next_token_panel.build(runtime)
    e.seen = seen
    return e


def test_the_explorer_reads_the_conversation_and_the_answer_so_far(explorer):
    hist = [H.user("Capital of France?"), H.assistant("Paris.")]
    out = explorer.read("The capital is", 1.0, 0, 1.0, "", "Be brief.", "embedded", "llama.cpp", hist)
    assert explorer.seen["messages"] == [
        Message("system", "Be brief."),
        Message("user", "Capital of France?"),
        Message("assistant", "The capital is"),
    ]
    assert explorer.seen["k"] == 20 and out[explorer.dist].dist is DIST
    assert "after “…The capital is”" in out[explorer.chart]
    assert "␣Paris" in out[explorer.chart] and "50.0% → " in out[explorer.chart]
    assert out[explorer.json]["distribution"]["tokens"][0]["token"] == " Paris"
    # Before anything was sent: the message in the box.
    explorer.read("", 1.0, 0, 1.0, "Hi there", "", "embedded", "llama.cpp", [])
    assert explorer.seen["messages"] == [Message("user", "Hi there")]
    with pytest.raises(gr.Error, match="Type a message first"):
        explorer.read("", 1.0, 0, 1.0, "", "", "embedded", "llama.cpp", [])


def test_greedy_is_one_bar_at_100_and_the_cuts_are_marked(explorer):
    reading = next_token_panel.Reading(DIST, "after “…x”")
    greedy = explorer.reshaped(reading, 0, 0, 1.0)
    bars = greedy[explorer.json]["reshaped"]["bars"]
    assert [b["probability"] for b in bars] == [1.0, 0.0, 0.0, 0.0]
    assert [b["cut"] for b in bars] == [None, "greedy", "greedy", "greedy"]
    assert greedy[explorer.chart].count("not drawn (greedy)") == 3 and "100.0%" in greedy[explorer.chart]
    cut = explorer.reshaped(READING, 1.0, 2, 1.0)
    assert [b["cut"] for b in cut[explorer.json]["reshaped"]["bars"]] == [None, None, "top_k", "top_k"]
    assert cut[explorer.chart].count("cut by top-k") == 2
    nucleus = explorer.reshaped(READING, 1.0, 0, 0.6)
    assert [b["cut"] for b in nucleus[explorer.json]["reshaped"]["bars"]] == [None, None, "top_p", "top_p"]
    hot = explorer.reshaped(READING, 1.5, 0, 1.0)[explorer.json]["reshaped"]["bars"]
    assert hot[0]["probability"] < 0.5 / 0.9  # a high temperature flattens the bars
    assert explorer.reshaped(None, 1.0, 0, 1.0) == {explorer.chart: gr.skip()}


def test_sample_draws_reproducibly_with_the_seed_shown(explorer):
    one = explorer.draw(READING, 1.0, 0, 1.0, "1234")
    two = explorer.draw(READING, 1.0, 0, 1.0, "1234")
    assert one[explorer.json]["drawn"] == two[explorer.json]["drawn"] and "**1234**" in one[explorer.drawn]
    random_seed = explorer.draw(READING, 1.0, 0, 1.0, "")
    assert f"**{random_seed[explorer.json]['drawn']['seed']}**" in random_seed[explorer.drawn]
    assert explorer.draw(READING, 0, 0, 1.0, "")[explorer.json]["drawn"]["token"] == " Paris"  # greedy
    with pytest.raises(gr.Error, match="Read the next tokens"):
        explorer.draw(None, 1.0, 0, 1.0, "1")


# ----------------------------------------------------------------------------------------- the Hosted API tab
class Hosted(FakeBackend):
    """A fake hosted backend (it builds a request, as the ``openai`` one does)."""

    last_request = last_response = None

    def build_request(self, messages, params):
        self.last_request = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        return self.last_request


class Refusing(Hosted):
    """A hosted backend that answers but gives no probabilities, saying why (as a server that refuses them)."""

    def stream(self, messages, params, cancel=None):
        self.calls.append((list(messages), params))
        yield Chunk(text="Hi there")
        yield Chunk(
            usage=Usage(2, 2), finish_reason="stop", note="This server refused logprobs (400): answered without."
        )


def hosted_send(tab, *, show: bool, k=4):
    form = ("hosted:session", "", "fake-model", "", 0.0, 1.0, 16, "", True)
    return list(tab.send("hello", *form, [], "sk-typed", [], None, show, k))[-1]


def test_the_hosted_tab_shows_its_answer_tokens_and_asks_only_when_ticked(monkeypatch):
    from tests.ui.test_api_in_process import tab_in_process

    backend = Hosted(["Hello", " world"])
    tab, _ = tab_in_process(monkeypatch, backend)
    panel = tab.probs
    off = hosted_send(tab, show=False)
    assert backend.calls[-1][1].top_logprobs is None and off[panel.data] is None
    assert set(tab.outputs) - {tab.textbox} <= set(off)
    on = hosted_send(tab, show=True, k=4)
    assert backend.calls[-1][1].top_logprobs == 4
    data = on[panel.data]
    assert [t.token for t in data.tokens] == ["Hello", " world"] and data.engine is None  # hosted: no continue
    assert on[panel.answer].count("data-i=") == 2 and panel.continue_btn is None
    chart = panel.select(data, gr.SelectData(None, {"index": 1, "value": " world"}))[panel.chart]
    assert "other" in chart and "data-a" not in chart  # alternatives, not clickable here
    assert panel.api_data(data)["count"] == 2


def test_a_server_that_refuses_probabilities_still_answers_and_the_panel_says_why(monkeypatch):
    from tests.ui.test_api_in_process import tab_in_process

    tab, _ = tab_in_process(monkeypatch, Refusing())
    last = hosted_send(tab, show=True)
    assert H.to_messages(last[tab.chatbot])[-1].content == "Hi there"
    assert "refused logprobs" in last[tab.probs.answer]
    api = tab.probs.api_data(last[tab.probs.data])
    assert api["tokens"] == [] and "refused logprobs" in api["note"] and api["text"] == "Hi there"


# ----------------------------------------------------------------------------------------- Compare
def test_compare_reports_each_backends_mean_token_probability_and_why_one_has_none(monkeypatch):
    import math

    from llm_levels.ui import compare_probs
    from tests.ui.test_compare_endings import _tab

    local, hosted = FakeBackend(["a", "b"]), Refusing()
    tab = _tab(monkeypatch, {"local": local, "app-endpoint": hosted})
    last = list(tab.run("hi", "", 8, 0.0, ["local", "app-endpoint"], None, None, True))[-1]
    assert local.calls[-1][1].top_logprobs == compare_probs.TOP_LOGPROBS
    table = last[tab.table]
    cells = dict(zip(table["Backend"], table[compare_probs.COLUMN]))
    assert cells == {"Local model": f"{math.exp(-0.1) * 100:.1f}%", "App endpoint (/v1)": "—"}
    answers = {i: last[md] for i, md in zip(tab.ids, tab.answers)}
    assert answers["local"] == "ab" and "refused logprobs" in answers["app-endpoint"]
    chart = compare_probs.frame(table)
    assert list(chart["backend"]) == ["Local model"] and abs(chart[compare_probs.Y][0] - math.exp(-0.1) * 100) < 0.1
    off = list(tab.run("hi", "", 8, 0.0, ["local"], None, None))[-1]  # unticked (and API clients from before)
    assert local.calls[-1][1].top_logprobs is None and list(off[tab.table][compare_probs.COLUMN]) == ["—"]


# ----------------------------------------------------------------------------------------- Chat (an option)
def test_chat_shows_token_probabilities_only_when_ticked(monkeypatch):
    import dataclasses

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.turns import run_turn
    from llm_levels.ui import chat
    from llm_levels.ui.shared import create_session_state

    backend = FakeBackend(["Hi", "!"])
    monkeypatch.setattr(
        chat, "run_turn", lambda rt, req, **kw: run_turn(rt, dataclasses.replace(req, backend=backend), **kw)
    )
    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))
    built = {}
    monkeypatch.setattr(chat, "wire", lambda tab, ui, session: built.setdefault("tab", tab))
    monkeypatch.setattr(chat, "chat_export", lambda *a, **k: None)
    monkeypatch.setattr(chat.tp, "wire_chat_panel", lambda *a, **k: None)
    with gr.Blocks():
        chat.build(runtime, create_session_state())
    tab = built["tab"]
    off = list(tab.send("hello", "local", 64, [], None, None))[-1]
    assert backend.calls[-1][1].top_logprobs is None and off[tab.probs.data] is None
    on = list(tab.send("hello", "local", 64, [], None, None, True, 2))[-1]
    assert backend.calls[-1][1].top_logprobs == 2
    data = on[tab.probs.data]
    assert [t.token for t in data.tokens] == ["Hi", "!"] and tab.probs.answer not in on
    assert tab.probs.render(data)[tab.probs.answer].count("data-i=") == 2  # drawn by the data's change event
    # chat_send's API results stay (chat, textbox, metrics): the panel's only output there is a gr.State.
    assert [c for c in tab.outputs if not isinstance(c, gr.State)] == [tab.chatbot, tab.textbox, tab.metrics_md]
    assert chat.chat_params(64) == {"temperature": 0.0, "max_new_tokens": 64}  # unchanged when not asked


# ----------------------------------------------------------------------------------------- the API, real app
@pytest.mark.slow
def test_the_api_gives_the_answers_tokens_continues_from_one_and_reads_the_next_token(app_server):
    client = app_server.client()
    # text, system, do_sample, temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed, engine, probs, k
    sampling = ("", False, 0.7, 0, 1.0, 1.0, 12, "", "llama.cpp")
    assert client.predict(api_name="/token_probabilities")["tokens"] == []  # nothing yet
    first = client.predict("The capital of France is", *sampling, True, 3, api_name="/local_send")
    data = client.predict(api_name="/token_probabilities")
    assert data["count"] == len(data["tokens"]) > 0 and data["engine"] == "llama.cpp" and data["note"] is None
    assert "".join(t["token"] for t in data["tokens"]) == data["text"] == H.to_messages(first[0])[-1].content
    assert all(len(t["alternatives"]) == 3 and t["rank"] == 1 for t in data["tokens"])  # greedy: the most likely
    assert 0 < data["mean_probability"] <= 1 and data["perplexity"] >= 1
    # The explorer at the start of that answer (greedy): its one bar is the answer's first token.
    _html, explored, _drawn = client.predict("", 0, 0, 1.0, "", "", "llama.cpp", api_name="/next_token")
    bars = explored["reshaped"]["bars"]
    assert len(bars) == 20 and [b["probability"] for b in bars] == [1.0] + [0.0] * 19
    assert bars[0]["token"] == data["tokens"][0]["token"]
    assert abs(bars[0]["raw"] - data["tokens"][0]["probability"]) < 0.02
    # Continue from the first token with another of its alternatives.
    token = data["tokens"][0]
    alt = next(i for i, a in enumerate(token["alternatives"]) if a["token"] != token["token"])
    chosen = token["alternatives"][alt]["token"]
    chat = client.predict(0, alt, api_name="/local_continue")[0]
    after = client.predict(api_name="/token_probabilities")
    assert H.to_messages(chat)[-1].content == after["text"] and after["text"].startswith(chosen)
    assert after["tokens"][0]["token"] == chosen and "replaced by" in after["branch"]
    assert [m.role for m in H.to_messages(chat)] == ["user", "assistant"]  # no new user message
    restored = client.predict(api_name="/local_restore")[0]
    assert H.to_messages(restored) == H.to_messages(first[0])
    assert client.predict(api_name="/token_probabilities")["text"] == data["text"]
