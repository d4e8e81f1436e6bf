"""The Chat tab, driven through gradio_client against the real running app (real model, real katan server)."""

from __future__ import annotations

import json
import re
import time

import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H
from tests.fixtures.app_server import DEAD, KATAN, LOCAL

pytestmark = pytest.mark.slow


def send(client, text, backend, max_tokens=8):
    chat, _textbox, metrics = client.predict(text, backend, max_tokens, api_name="/chat_send")
    return chat, metrics


def turns(chat) -> list[tuple[str, str]]:
    """(role, text) of the real turns shown, notes left out."""
    return [(m.role, m.content) for m in H.to_messages(chat)]


def tokens_in(metrics: str) -> int:
    m = re.search(r"(\d+) → (\d+) tokens", metrics)
    assert m, metrics
    return int(m.group(1))


def test_local_model_streams_and_remembers_the_conversation(app_server):
    client = app_server.client()
    job = client.submit("Remember this: the code word is PINEAPPLE.", LOCAL, 12, api_name="/chat_send")
    chat, _, metrics1 = job.result(timeout=300)
    # Streaming: the answer grew over several updates before the final one.
    partials = {
        H.content_text(out[0][-1]["content"])
        for out in job.outputs()
        if out[0] and out[0][-1]["role"] == "assistant" and not H.is_note(out[0][-1])
    }
    assert len(partials) >= 2, partials
    assert [r for r, _ in turns(chat)] == ["user", "assistant"] and turns(chat)[1][1].strip()
    assert "local" in metrics1 and "tokens/s" in metrics1

    chat2, metrics2 = send(client, "What is the code word?", LOCAL)
    assert turns(chat2)[:2] == turns(chat)
    assert [r for r, _ in turns(chat2)] == ["user", "assistant", "user", "assistant"]

    # Memory: the second prompt carried the first turn; a fresh session's same question does not.
    _, metrics_fresh = send(app_server.client(), "What is the code word?", LOCAL)
    assert tokens_in(metrics2) > tokens_in(metrics_fresh) + 10, (metrics2, metrics_fresh)


def test_hosted_katan_chat_sends_the_whole_conversation(app_server):
    client = app_server.client()
    chat, metrics = send(client, "hello there", KATAN)
    answer = turns(chat)[-1][1]
    assert answer.startswith("[echo] model=") and "messages=1 " in answer and "User: hello there" in answer
    assert "OpenAI-compatible" in metrics
    chat, _ = send(client, "second", KATAN)
    assert "messages=3 " in turns(chat)[-1][1] and len(turns(chat)) == 4


def test_failing_backend_keeps_history_adds_a_note_and_next_prompt_works(app_server):
    client = app_server.client()
    before, _ = send(client, "first", KATAN)
    chat, metrics = send(client, "this one fails", DEAD)
    assert chat[: len(before)] == before  # nothing lost
    assert chat[len(before)]["role"] == "user" and H.content_text(chat[len(before)]["content"]) == "this one fails"
    note = chat[-1]
    assert H.is_note(note) and note["metadata"]["title"] == H.ERROR_TITLE
    assert "connect" in H.content_text(note["content"]).lower()
    assert "not answered" in metrics
    # The next prompt works; the model gets the failed user message but never the note.
    chat, _ = send(client, "after the error", KATAN)
    assert "messages=4 " in turns(chat)[-1][1] and "User: after the error" in turns(chat)[-1][1]
    assert any(H.is_note(m) for m in chat)  # the note stays on screen
    shown = json.dumps(chat)
    assert app_server.api_key not in shown and "sk-test-dead-endpoint-000" not in shown


def test_retry_undo_clear(app_server):
    client = app_server.client()
    send(client, "one", KATAN)
    chat, _ = send(client, "two", KATAN)
    chat_r, _, _ = client.predict(KATAN, 8, api_name="/chat_retry")
    assert len(turns(chat_r)) == 4 and turns(chat_r)[:3] == turns(chat)[:3]
    assert "messages=3 " in turns(chat_r)[-1][1] and "User: two" in turns(chat_r)[-1][1]

    chat_u, textbox, _ = client.predict(api_name="/chat_undo")
    assert turns(chat_u) == turns(chat)[:2] and textbox == "two"
    # After undo the conversation goes on from the first turn.
    chat, _ = send(client, "two again", KATAN)
    assert "messages=3 " in turns(chat)[-1][1]

    cleared, textbox, metrics = client.predict(api_name="/chat_clear")
    assert cleared == [] and textbox == "" and metrics == ""
    chat, _ = send(client, "fresh", KATAN)
    assert "messages=1 " in turns(chat)[-1][1]


def test_empty_message_and_nothing_to_retry_are_refused(app_server):
    client = app_server.client()
    with pytest.raises(AppError, match="Type a message"):
        send(client, "   ", KATAN)
    with pytest.raises(AppError, match="Nothing to retry"):
        client.predict(KATAN, 8, api_name="/chat_retry")


def test_a_message_over_the_size_limit_is_refused_and_not_added(app_server):
    client = app_server.client()
    send(client, "short", KATAN)
    with pytest.raises(AppError, match="too long"):
        send(client, "word " * 5000, KATAN)  # 25,000 characters; MAX_PROMPT_CHARS is 20,000 by default
    chat, _ = send(client, "next", KATAN)
    assert "messages=3 " in turns(chat)[-1][1] and len(turns(chat)) == 4


def test_stop_keeps_the_partial_answer_and_frees_the_model(app_server):
    client = app_server.client()
    job = client.submit("Write a long story about a dragon who learns to cook.", LOCAL, 400, api_name="/chat_send")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until some text has streamed
        outs = job.outputs()
        if outs and outs[-1][0] and outs[-1][0][-1]["role"] == "assistant" and not H.is_note(outs[-1][0][-1]):
            break
        time.sleep(0.1)
    job.cancel()
    t0 = time.monotonic()
    # The same session goes on: the partial answer is part of the conversation, and the model answers
    # a new short request long before 400 tokens could have been generated (~15 tokens/s on a CPU).
    chat, metrics = send(client, "Thanks.", LOCAL, 4)
    waited = time.monotonic() - t0
    roles = [r for r, _ in turns(chat)]
    assert roles == ["user", "assistant", "user", "assistant"], chat
    assert "local" in metrics
    assert waited < 60, f"the stopped generation kept the model busy ({waited:.0f} s)"


def test_answers_cut_by_the_limit_or_by_stop_are_tagged_and_a_second_message_meanwhile_is_refused(app_server):
    client = app_server.client()
    chat, metrics = send(client, "Write a long story about a dragon.", LOCAL, 4)
    assert (
        H.plain(chat[-1:]) == [H.ending_note("length")]
        and not H.is_note(chat[-2])
        and "cut at the token limit" in metrics
    )

    job = client.submit("Write a long story about a dragon who learns to cook.", LOCAL, 400, api_name="/chat_send")
    wait_for(lambda: streaming(job), "no text streamed", 240)
    with pytest.raises(AppError, match="Still answering your previous message"):  # the same session
        send(client, "a second message", KATAN)
    client.predict(api_name="/chat_stop")
    chat, _, metrics = job.result(timeout=60)
    assert H.plain(chat[-1:]) == [H.ending_note("stopped")] and "stopped" in metrics
    partial = H.content_text(chat[-2]["content"])
    assert partial.strip() and len(partial.split()) < 300
    # Both tags are notes: the model sees the two answers, not the tags.
    assert [m.role for m in H.to_messages(chat)] == ["user", "assistant", "user", "assistant"]
    chat, _ = send(client, "Thanks.", KATAN)  # the session is free again
    assert "messages=5 " in turns(chat)[-1][1]


def places_seen(job) -> list[int]:
    """The "N ahead of you" numbers of the waiting notes this chat job has streamed so far, in order."""
    seen = []
    for out in job.outputs():
        chat = out[0]
        if isinstance(chat, list) and chat and H.is_pending(chat[-1]):
            m = re.search(r"(\d+) ahead of you", chat[-1]["metadata"]["title"])
            if m and (not seen or seen[-1] != int(m.group(1))):
                seen.append(int(m.group(1)))
    return seen


def streaming(job) -> bool:
    outs = job.outputs()
    return bool(
        outs
        and isinstance(outs[-1][0], list)
        and outs[-1][0]
        and outs[-1][0][-1]["role"] == "assistant"
        and not H.is_note(outs[-1][0][-1])
    )


def wait_for(cond, what: str, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_waiting_users_see_their_place_in_the_local_queue(app_server):
    """LOCAL_CONCURRENCY local generations at once (the app's line, for every tab and /v1): the next users
    wait in the chat with a "⏳ Waiting for the local model — N ahead of you" note that moves as the line
    does; Stop while waiting leaves the line at once (the one behind moves up with no slot freed), and a
    waiting user gets its answer when a slot frees."""
    from tests.fixtures.app_server import LOCAL_CONCURRENCY

    busy = []
    for i in range(LOCAL_CONCURRENCY):
        # Long answers, so they still hold every slot while the others queue (a fast path is fast).
        busy.append(
            app_server.client().submit(f"Write a long story about robot number {i}.", LOCAL, 600, api_name="/chat_send")
        )
    wait_for(lambda: all(streaming(j) for j in busy), "the first users never started")
    first = app_server.client().submit("Write a short poem about the sea.", LOCAL, 8, api_name="/chat_send")
    wait_for(lambda: places_seen(first)[-1:] == [0], "the first waiter never saw '0 ahead of you'", 30)
    second = app_server.client().submit("Say hi.", LOCAL, 4, api_name="/chat_send")
    wait_for(lambda: places_seen(second)[-1:] == [1], "the second waiter never saw '1 ahead of you'", 30)
    note = second.outputs()[-1][0][-1]
    assert note["metadata"]["title"] == "⏳ Waiting for the local model — 1 ahead of you"
    assert "at a time" in H.content_text(note["content"])

    first.cancel()  # Stop while waiting: out of the line at once, though no slot has freed
    wait_for(lambda: places_seen(second)[-1:] == [0], "Stop did not take the first waiter out of the line", 10)
    assert not any(j.done() for j in busy), "a slot freed meanwhile: this did not test the line"
    assert places_seen(second) == [1, 0]

    busy[0].cancel()  # a slot frees: the waiter gets it and its answer
    chat2, _, metrics = second.result(timeout=300)
    assert turns(chat2)[-1][0] == "assistant" and turns(chat2)[-1][1].strip()
    assert not any(H.is_pending(m) for m in chat2) and "local" in metrics
    busy[1].cancel()
    # The stopped waiter never started: nothing was answered for it.
    assert not any(
        isinstance(o[0], list) and o[0] and o[0][-1]["role"] == "assistant" and not H.is_note(o[0][-1])
        for o in first.outputs()
    )


def test_model_status_names_the_loaded_model(app_server):
    html, data, *_ = app_server.client().predict(api_name="/model_status")
    assert data["state"] == "ready" and data["fraction"] == 1.0 and not data["error"]
    # e.g. "SmolLM2-135M-Instruct (embedded GGUF)", and the engines loaded: "llama.cpp · Q4_1 · 2 threads".
    assert "SmolLM2-135M-Instruct" in data["model"]
    # The default engine first (another may have been loaded on first use by an earlier test).
    assert data["engines"].startswith("engines loaded: llama.cpp · Q4_1 · ") and "thread" in data["engines"]
    page = html.replace("&#x27;", "'")
    assert data["model"] in page and data["engines"] in page and "ready" in page
