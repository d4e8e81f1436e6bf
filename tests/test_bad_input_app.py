"""Bad input through the running app's real Gradio API (gradio_client), not through the sliders.

Every case must end with a one-line message that says what to do, change nothing on screen (a refused
send is a ``gr.Error``: the conversation is as before), never show the configured key, and leave the
worker healthy: the same session's next ordinary request is answered.

The shared ``app_server`` runs as on a laptop (its hosted backend is a real llm-katan echo server that
answers ``... User: <the last user message>``; its local model is the real embedded SmolLM2).
"""

from __future__ import annotations

import json
import time

import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H
from tests.fixtures.app_server import APP_ENDPOINT, KATAN, LOCAL

pytestmark = pytest.mark.slow

API_FIELDS = ("chat", "textbox", "metrics", "snippet", "request", "response", "table")


def chat_send(client, text, backend=KATAN, max_tokens=16):
    chat, _textbox, metrics = client.predict(text, backend, max_tokens, api_name="/chat_send")
    return chat, metrics


def api_send(
    client,
    text,
    *,
    endpoint=KATAN,
    url="",
    model="katan-echo",
    system="",
    temperature=0.0,
    top_p=1.0,
    max_tokens=32,
    seed=None,
    stream=True,
) -> dict:
    out = client.predict(
        text, endpoint, url, model, system, temperature, top_p, max_tokens, seed, stream, api_name="/api_send"
    )
    return dict(zip(API_FIELDS, out))


def refused(call, *args, **kwargs) -> str:
    """The one-line message of a refused call (a gr.Error reaches gradio_client as an AppError)."""
    with pytest.raises(AppError) as info:
        call(*args, **kwargs)
    msg = str(info.value)
    assert msg.strip(), "an empty error message"
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert "Traceback" not in msg and "upstream Gradio app has raised an exception" not in msg, msg
    return msg


def healthy(client, app_server, marker: str) -> None:
    """The session still works: an ordinary chat send is answered, echoing ``marker``."""
    chat, _ = chat_send(client, marker)
    assert f"User: {marker}" in H.to_messages(chat)[-1].content


def no_key(app_server, *things) -> None:
    assert app_server.api_key not in json.dumps(things, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("text", ["", " ", "\n\n\t ", "\u200b", "\u3000\u00a0"])
def test_empty_and_whitespace_prompts_are_refused_in_every_tab(app_server, text):
    client = app_server.client()
    chat_send(client, "before")
    msg = refused(chat_send, client, text)
    assert "Type a message" in msg or "empty" in msg
    refused(api_send, client, text)
    chat, _ = chat_send(client, "after")  # the refused sends left no trace in the conversation
    assert [m.content for m in H.to_messages(chat)][::2] == ["before", "after"]


def test_a_1mb_prompt_is_refused_quickly_everywhere_and_nothing_is_lost(app_server):
    client = app_server.client()
    big = "x" * 1_000_000
    chat_send(client, "keep me")
    for call, args in ((chat_send, (client, big)), (api_send, (client, big))):
        t0 = time.monotonic()
        msg = refused(call, *args)
        assert time.monotonic() - t0 < 15
        assert "too long" in msg and "1,000," in msg and "limit is 20,000" in msg and "Shorten" in msg
    try:
        out = client.predict(big, "", 8, 0.0, [KATAN], api_name="/compare_run")
        raise AssertionError(f"compare ran a 1 MB prompt: {str(out)[:500]}")
    except AppError as e:
        assert "too long" in str(e)
    chat, _ = chat_send(client, "still here")
    assert [m.content for m in H.to_messages(chat)][::2] == ["keep me", "still here"]


def test_control_characters_emoji_and_rtl_text_arrive_exactly(app_server):
    """The text reaches the hosted server byte for byte (katan echoes it) and stays exact in the history."""
    client = app_server.client()
    text = "ctrl:\x01\x07\x1b[31m tab:\t emoji:👩‍👩‍👧‍👦🇫🇷 rtl:\u202eשלום عربى\u202c cjk:语言 nul?\x7f end"
    chat, metrics = chat_send(client, text, max_tokens=64)
    msgs = H.to_messages(chat)

    # The Chatbot's display expands tabs (Gradio runs inspect.cleandoc on shown text); the rest is exact.
    def same(a: str, b: str) -> bool:
        return a.split() == b.split()

    assert same(msgs[0].content, text)
    assert same(msgs[-1].content.split("User: ", 1)[1], text), msgs[-1].content
    # What was sent is exact: the raw request body of the API tab, and katan's echo of it.
    out = api_send(client, text, max_tokens=64)
    assert out["request"]["messages"][-1]["content"] == text
    assert same(H.to_messages(out["chat"])[-1].content.split("User: ", 1)[1], text)
    chat, _ = chat_send(client, "and the next one")  # the conversation goes on
    assert len(H.to_messages(chat)) == 4


def test_a_prompt_over_the_local_models_context_is_handled_visibly(app_server):
    """Under MAX_PROMPT_CHARS but over the local engine's 1,536-token context per request (LOCAL_CONTEXT; rare
    symbols cost several tokens each): the app must say so (a note or a refusal naming the context), never
    crash or cut silently."""
    client = app_server.client()
    filler = "漢字𝔘𝔫𝔦𝔠𝔬𝔡𝔢🙂" * 1500  # 15,000 characters, far more than 1,536 tokens
    try:
        prompt, _tokens, tokens_md, _snippet, _info = client.predict(
            filler, "", False, 0.7, 0, 1.0, 1.0, 8, None, api_name="/local_render_prompt"
        )
    except AppError as e:
        msg = str(e)
        assert "\n" not in msg.strip() and "1,536 tokens" in msg and "Shorten" in msg, msg
    else:
        assert "context" in tokens_md.lower(), tokens_md
    healthy(client, app_server, "after the long prompt")


def test_chat_with_the_local_model_says_when_old_turns_no_longer_fit(app_server):
    """Two ~1,100-token messages: the second answer is made without the first turn (1,536-token context per
    request, LOCAL_CONTEXT), and the chat says so in a note; the conversation on screen keeps everything."""
    client = app_server.client()
    # ~1,100 tokens each (several per character): two do not fit in 1,536.
    block = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢🙂漢字" * 40
    chat, _ = chat_send(client, block + " first", backend=LOCAL, max_tokens=2)
    # It fits: no "left out" note (two tokens of an answer may be whitespace: an "empty answer" note is fine).
    assert not any(H.is_note(m) and m["metadata"]["title"] == H.TRUNCATED_TITLE for m in chat), chat[-1]
    chat, _ = chat_send(client, block + " second", backend=LOCAL, max_tokens=2)
    title, text = chat[-1]["metadata"]["title"], H.content_text(chat[-1]["content"])
    assert title == H.TRUNCATED_TITLE and "context window" in text and "left out" in text, chat[-1]
    # Everything stays on screen, in order (with 2 tokens an answer may be only whitespace: then an "empty"
    # note stands in its place, and notes are not part of the conversation).
    users = [m.content for m in H.to_messages(chat) if m.role == "user"]
    assert users == [block + " first", block + " second"]
    assert chat[1]["role"] == "assistant", chat[1]  # the first turn's answer (or its "empty" note) stays


# --------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("max_tokens", [0, -5, 10**9, 1.5e308])
def test_out_of_range_max_tokens_through_the_api_are_refused(app_server, max_tokens):
    client = app_server.client()
    msg = refused(chat_send, client, "hello", max_tokens=max_tokens)
    assert "minimum" in msg or "maximum" in msg or "between" in msg or "at most" in msg, msg
    no_key(app_server, msg)
    healthy(client, app_server, "next")


@pytest.mark.parametrize("max_tokens", ["abc", None, "12; DROP TABLE", [5], {"x": 1}])
def test_non_numeric_max_tokens_through_the_api_are_refused(app_server, max_tokens):
    client = app_server.client()
    msg = refused(chat_send, client, "hello", max_tokens=max_tokens)
    assert "number" in msg.lower(), msg
    healthy(client, app_server, "next")


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("temperature", 5.0, "temperature"),
        ("temperature", -1, "temperature"),
        ("temperature", "hot", "temperature"),
        ("top_p", 1.5, "top_p"),
        ("top_p", "nan", "top_p"),
        ("seed", "1.5", "seed must be a whole number"),
        ("seed", "1e400", "seed"),
        ("max_tokens", 100_000, "max"),
    ],
)
def test_bad_hosted_parameters_are_refused_with_the_field_named(app_server, field, value, expect):
    client = app_server.client()
    msg = refused(api_send, client, "hello", **{field: value})
    assert expect in msg, msg
    chat, _ = client.predict(api_name="/api_undo")
    assert chat == []  # nothing reached the conversation
    assert "User: fine" in H.to_messages(api_send(client, "fine")["chat"])[-1].content


@pytest.mark.parametrize(
    "args,expect",
    [
        (dict(top_k=-3), "top_k must be a number between 0 and 200"),
        (dict(repetition_penalty=0), "repetition_penalty must be a number between 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be a number between 1"),
        (dict(temperature="warm"), "temperature must be a number between"),
    ],
)
def test_bad_local_parameters_are_refused(app_server, args, expect):
    client = app_server.client()
    p = dict(
        system="",
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        repetition_penalty=1.0,
        max_new_tokens=4,
        seed=None,
    )
    p.update(args)
    msg = refused(client.predict, "hello", *p.values(), api_name="/local_send")
    assert expect in msg, msg


def test_unknown_backend_and_endpoint_ids_are_refused(app_server):
    client = app_server.client()
    msg = refused(chat_send, client, "hello", backend="hosted:does-not-exist")
    assert "hosted:does-not-exist" in msg
    msg = refused(api_send, client, "hello", endpoint="ftp-magic")
    assert "ftp-magic" in msg
    healthy(client, app_server, "next")


# ------------------------------------------------------------------------------------------- models
def test_an_unknown_model_id_on_a_real_server_says_how_to_find_the_right_one(app_server):
    """The app's own /v1 endpoint is a real OpenAI-compatible server that checks model ids."""
    client = app_server.client()
    out = api_send(client, "hello", endpoint=APP_ENDPOINT, model="no-such-model-xyz", max_tokens=4)
    note = out["chat"][-1]
    assert H.is_note(note) and note["metadata"]["title"] == H.ERROR_TITLE
    text = H.content_text(note["content"])
    assert "no-such-model-xyz" in text and "/models" in text, text
    assert H.to_messages(out["chat"])[-1].content == "hello"  # the user's turn stays
    healthy(client, app_server, "after the unknown model")


@pytest.mark.parametrize(
    "spec,expect",
    [
        # On the default engine (llama.cpp, GGUF files only) a plain Hub id is a model for the other engine.
        ("HuggingFaceTB/definitely-not-a-cached-model-123", "pick the transformers engine"),
        ("./no/such/folder", "No model folder"),
        ("not a model id!!", "neither an existing folder nor a valid"),
    ],
)
def test_loading_a_model_that_cannot_be_had_is_a_clear_error(app_server, spec, expect):
    client = app_server.client()
    t0 = time.monotonic()
    msg = refused(client.predict, spec, api_name="/local_load_model")
    assert time.monotonic() - t0 < 30
    assert expect.lower() in msg.lower(), msg
    # The loaded model still answers.
    out = client.predict("Say hi.", "", False, 0.7, 0, 1.0, 1.0, 3, None, api_name="/local_send")
    assert H.to_messages(out[0])[-1].role == "assistant"


@pytest.mark.parametrize(
    "url,expect",
    [
        ("not-a-url", "http"),
        ("not a url", "spaces"),
        ("ftp://example.com/v1", "http"),
        ("http://", "host"),
        ("http://user:pw@example.com/v1", "password"),
        ("http://exa mple.com/v1", ""),
        ("http://example.com/v1?key=1", "query"),
    ],
)
def test_malformed_base_urls_get_one_line_that_says_what_to_fix(app_server, url, expect):
    client = app_server.client()
    out = None
    try:
        out = api_send(client, "hello", endpoint="custom", url=url)
    except AppError as e:
        msg = str(e)
        assert "\n" not in msg.strip() and "Traceback" not in msg
    else:
        note = out["chat"][-1]
        assert H.is_note(note), out["chat"]
        msg = H.content_text(note["content"])
        assert "\n" not in msg.strip()
    assert expect.lower() in msg.lower(), msg
    assert "base URL" in msg or "URL" in msg, msg
    healthy(client, app_server, "after a bad URL")
