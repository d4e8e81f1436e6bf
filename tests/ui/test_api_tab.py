"""The Hosted API tab, driven through gradio_client against the real running app and a real llm-katan.

The app's main endpoint is llm-katan (it checks the key, echoes the request, counts words as tokens).
Every output of every call is searched for the configured key: it must never come back.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H
from tests.fixtures.app_server import APP_ENDPOINT, DEAD, KATAN

pytestmark = pytest.mark.slow

FIELDS = ("chat", "textbox", "metrics", "snippet", "request", "response", "table")


def send(
    client,
    text,
    *,
    endpoint=KATAN,
    url="",
    model="katan-echo",
    system="",
    temperature=0.0,
    top_p=1.0,
    max_tokens=64,
    seed=None,
    stream=True,
    api_name="/api_send",
) -> dict:
    args = ([text] if api_name == "/api_send" else []) + [
        endpoint,
        url,
        model,
        system,
        temperature,
        top_p,
        max_tokens,
        seed,
        stream,
    ]
    return dict(zip(FIELDS, client.predict(*args, api_name=api_name)))


def last_answer(out: dict) -> str:
    msgs = H.to_messages(out["chat"])
    assert msgs and msgs[-1].role == "assistant", out["chat"]
    return msgs[-1].content


def response(out: dict):
    """The Response panel's text as data: one JSON object, or a stream's chunks (one JSON per line)."""
    try:
        return json.loads(out["response"])
    except json.JSONDecodeError:  # several lines, each a JSON object: a stream
        return [json.loads(line) for line in out["response"].splitlines()]


def rows(out: dict) -> list[list]:
    table = out["table"]
    assert table["headers"][:4] == ["Turn", "Model", "In tokens", "Out tokens"], table
    return table["data"]


def assert_no_key(app_server, *outputs) -> None:
    shown = json.dumps(outputs, ensure_ascii=False, default=str)
    assert app_server.api_key not in shown
    assert "Bearer " not in shown


def test_stream_on_fills_snippet_request_response_and_metrics(app_server):
    client = app_server.client()
    out = send(client, 'Hello "API"\nsecond line', system="Answer briefly.", temperature=0.3, seed=7, max_tokens=80)
    answer = last_answer(out)
    assert answer.startswith("[echo] model=") and 'User: Hello "API"\nsecond line' in answer
    assert "messages=2 " in answer and "max_tokens=80" in answer and "temperature=0.3" in answer

    req = out["request"]
    assert req["model"] == "katan-echo" and req["stream"] is True and req["seed"] == 7
    assert req["stream_options"] == {"include_usage": True}
    assert req["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": 'Hello "API"\nsecond line'},
    ]

    chunks = response(out)
    assert isinstance(chunks, list) and all(c.get("object") == "chat.completion.chunk" for c in chunks[:-1])
    text = "".join(
        (c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == answer  # the panel holds the very chunks the answer was made of
    usage = chunks[-1]["usage"]

    (row,) = rows(out)
    assert row[0] == 1 and row[1] == "katan-echo"
    assert row[2] == usage["prompt_tokens"] and row[3] == usage["completion_tokens"] and row[3] > 0
    ttft, total, speed, cost = row[4], row[5], row[6], row[7]
    assert isinstance(ttft, (int, float)) and 0 <= ttft <= total
    assert isinstance(speed, (int, float)) and speed > 0
    assert cost == "unknown"  # "katan-echo" is not a priced model: never guessed
    assert "to first token" in out["metrics"] and "tokens/s" in out["metrics"]

    code = out["snippet"]
    compile(code, "snippet", "exec")
    assert f'base_url="{app_server.katan.base_url}"' in code and 'os.environ["OPENAI_API_KEY"]' in code
    assert "stream=True" in code and "seed=7" in code
    assert_no_key(app_server, out)


def test_stream_off_returns_one_completion_object(app_server):
    client = app_server.client()
    out = send(client, "no streaming please", stream=False)
    assert "User: no streaming please" in last_answer(out)
    assert out["request"]["stream"] is False and "stream_options" not in out["request"]
    resp = response(out)
    assert isinstance(resp, dict) and resp["object"] == "chat.completion"
    assert resp["choices"][0]["message"]["content"] == last_answer(out)
    (row,) = rows(out)
    assert row[2] == resp["usage"]["prompt_tokens"] and row[3] == resp["usage"]["completion_tokens"]
    assert "stream=False" in out["snippet"] and "response.choices[0].message.content" in out["snippet"]
    assert_no_key(app_server, out)


def test_the_snippet_shown_runs_and_prints_the_same_answer(app_server, tmp_path):
    out = send(app_server.client(), "run me as a script", system="Be brief.", max_tokens=60)
    path = tmp_path / "snippet.py"
    path.write_text(out["snippet"], encoding="utf-8")
    env = app_server.katan.env()  # OPENAI_API_KEY set to the server's key, in the environment only
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = run.stdout.split("\n[tokens:")[0]
    strip = lambda s: s.split(" time=")[0] + s.split(" time=")[1].split(" ", 1)[1]  # noqa: E731 - timestamp
    assert strip(printed) == strip(last_answer(out))


def test_conversation_retry_undo_clear(app_server):
    client = app_server.client()
    send(client, "first")
    out = send(client, "second", system="S")
    assert "messages=4 " in last_answer(out)  # system + first + its answer + second
    assert [m["role"] for m in out["request"]["messages"]] == ["system", "user", "assistant", "user"]
    assert [r[0] for r in rows(out)] == [1, 2]

    again = send(client, None, system="S", api_name="/api_retry")
    assert [m.role for m in H.to_messages(again["chat"])] == ["user", "assistant", "user", "assistant"]
    assert "User: second" in last_answer(again) and [r[0] for r in rows(again)] == [1, 2, 3]

    chat, textbox = client.predict(api_name="/api_undo")
    assert textbox == "second" and [m.role for m in H.to_messages(chat)] == ["user", "assistant"]
    cleared = client.predict(api_name="/api_clear")
    assert cleared[0] == [] and cleared[-1]["data"] == []
    with pytest.raises(AppError, match="Nothing to retry"):
        send(client, None, api_name="/api_retry")


def test_session_key_is_used_never_shown_and_stays_in_its_session(app_server):
    wrong = "sk-test-WRONG-session-key-424242"
    client, other = app_server.client(), app_server.client()
    # A base URL a visitor types never receives the operator's key: without a session key, llm-katan
    # (which would accept the configured key) gets a placeholder and answers 401.
    out = send(client, "typed url, no key", endpoint="custom", url=app_server.katan.base_url)
    assert H.is_note(out["chat"][-1]) and "401" in H.content_text(out["chat"][-1]["content"])
    field, status = client.predict(wrong, api_name="/api_set_key")
    assert field == "" and "set" in status and wrong not in status and wrong[-4:] not in status

    # The session key wins over the configured one: llm-katan checks keys, so this turn gets a real 401.
    out = send(client, "with the session key")
    note = out["chat"][-1]
    assert H.is_note(note) and "401" in H.content_text(note["content"])
    assert response(out)["status"] == 401  # the error body is shown, with any key masked
    shown = json.dumps(out)
    assert wrong not in shown and app_server.api_key not in shown

    # Another session is not affected by this session's key.
    assert "User: other session" in last_answer(send(other, "other session"))

    # Forget it: the configured key is used again.
    assert client.predict(api_name="/api_clear_key") == ("", "No key set for this session.")
    assert "User: after forgetting" in last_answer(send(client, "after forgetting"))

    # The right key, typed for the session, with the custom base URL option.
    client.predict(app_server.katan.api_key, api_name="/api_set_key")
    out = send(client, "custom url", endpoint="custom", url=app_server.katan.base_url)
    assert "User: custom url" in last_answer(out)
    assert f'base_url="{app_server.katan.base_url}"' in out["snippet"]
    assert_no_key(app_server, out)
    assert app_server.api_key not in app_server.log()

    with pytest.raises(AppError, match="Paste a key"):
        client.predict("   ", api_name="/api_set_key")


def test_fetch_models_and_pick_endpoint(app_server):
    client = app_server.client()
    update = client.predict(KATAN, "", "whatever", api_name="/api_list_models")
    assert ["katan-echo", "katan-echo"] in update["choices"] and update["value"] == "katan-echo"
    url_box, model_box = client.predict("custom", api_name="/api_pick_endpoint")
    assert url_box["visible"] is True and not model_box["value"]  # not the previous endpoint's model
    url_box, model_box = client.predict(APP_ENDPOINT, api_name="/api_pick_endpoint")
    assert url_box["visible"] is False and model_box["value"] == "local"


def test_input_errors_lose_nothing(app_server):
    client = app_server.client()
    with pytest.raises(AppError, match="Type a message"):
        send(client, "   ")
    with pytest.raises(AppError, match="base URL"):
        send(client, "hello", endpoint="custom", url="")
    with pytest.raises(AppError, match="seed must be a whole number"):
        send(client, "hello", seed="abc")
    chat, _textbox = client.predict(api_name="/api_undo")
    assert chat == []  # none of the refused sends reached the conversation
    # An empty seed is allowed (random) and is not sent at all.
    out = send(client, "hello", seed="")
    assert "seed" not in out["request"] and "User: hello" in last_answer(out)


def test_unreachable_endpoint_keeps_the_turn_and_shows_the_request(app_server):
    client = app_server.client()
    out = send(client, "to nowhere", endpoint=DEAD, model="dead-model")
    note = out["chat"][-1]
    assert H.is_note(note) and "connect" in H.content_text(note["content"]).lower()
    assert H.to_messages(out["chat"])[-1].content == "to nowhere"  # the user's turn stays
    assert out["request"]["model"] == "dead-model"
    assert 'os.environ["DEAD_ENDPOINT_KEY"]' in out["snippet"]
    assert "sk-test-dead-endpoint-000" not in json.dumps(out)
    assert "User: next" in last_answer(send(client, "next"))


def test_app_own_endpoint_needs_no_key(app_server):
    client = app_server.client()
    out = send(client, "Say hi.", endpoint=APP_ENDPOINT, model="local", max_tokens=6)
    answer = last_answer(out)
    assert answer.strip() and not answer.startswith("[echo]")  # the local model answered, not katan
    assert out["request"]["model"] == "local" and out["request"]["max_tokens"] == 6
    (row,) = rows(out)
    assert row[7] == "free (your hardware)" and 0 < row[3] <= 6
    code = out["snippet"]
    assert f'base_url="http://127.0.0.1:{app_server.port}/v1"' in code
    assert 'os.environ.get("LOCAL_API_KEY", "no-key-needed")' in code
    ast.parse(code)
    assert_no_key(app_server, out)


def test_the_app_endpoint_snippet_runs_as_is_from_a_terminal(app_server, tmp_path):
    out = send(app_server.client(), "Name one colour.", endpoint=APP_ENDPOINT, model="local", max_tokens=8)
    path = tmp_path / "local_snippet.py"
    path.write_text(out["snippet"], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "LOCAL_API_KEY", "OPENAI_BASE_URL")}
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n[tokens:")[0].strip()  # the local model's answer, printed by the snippet


def test_without_a_key_the_tab_explains_how_to_set_one():
    """Built in-process with no key and no base URL: the help text shows, and no key is needed to start."""
    from dataclasses import replace

    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import SESSION_HOSTED, AppRuntime
    from llm_levels.ui.app import build_ui

    def parts(settings):
        demo = build_ui(AppRuntime(settings))
        blocks = list(demo.blocks.values())
        texts = " ".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
        endpoint = next(b for b in blocks if isinstance(b, gr.Dropdown) and b.label == "Endpoint")
        return texts, endpoint, blocks

    texts, endpoint, blocks = parts(Settings())
    assert "OPENAI_API_KEY" in texts and ".env" in texts and "secret" in texts
    ids = [v for _, v in endpoint.choices]
    assert endpoint.value == APP_ENDPOINT and SESSION_HOSTED in ids and "custom" in ids
    keys = [b for b in blocks if isinstance(b, gr.Textbox) and b.type == "password"]
    assert len(keys) == 1 and not keys[0].value

    texts, endpoint, _ = parts(replace(Settings(), allow_custom_base_url=False, has_openai_key=True))
    assert "No API key is configured" not in texts
    assert "custom" not in [v for _, v in endpoint.choices]


def test_stop_cuts_the_request_and_the_app_endpoint_frees_the_model(app_server):
    """Stop closes the HTTP stream to the app's own endpoint; its generation ends, the model is free again."""
    import time

    client = app_server.client()
    job = client.submit(
        "Write a long story about a lighthouse.",
        APP_ENDPOINT,
        "",
        "local",
        "",
        0.0,
        1.0,
        1000,
        None,
        True,
        api_name="/api_send",
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        # Updates that skip the chat (the panels' own updates) carry no list there.
        chats = [out[0] for out in job.outputs() if isinstance(out[0], list) and out[0]]
        if chats and chats[-1][-1]["role"] == "assistant" and not H.is_note(chats[-1][-1]):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no text streamed")
    job.cancel()
    t0 = time.monotonic()
    out = send(client, "Thanks.", endpoint=APP_ENDPOINT, model="local", max_tokens=3)
    assert [m.role for m in H.to_messages(out["chat"])] == ["user", "assistant", "user", "assistant"]
    # Unstopped, this greedy story runs all 1000 tokens (~65 s on 2 CPU cores).
    assert time.monotonic() - t0 < 20, "the stopped generation kept the local model busy"
