"""llm_levels.history: Gradio 6 Chatbot history <-> list[core.Message]."""

from __future__ import annotations

import inspect

import gradio as gr
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llm_levels import history as H
from llm_levels.core import Message

roles = st.sampled_from(["system", "user", "assistant"])
texts = st.text(min_size=0, max_size=40)
messages = st.lists(st.builds(Message, role=roles, content=texts), max_size=8)


def _kept(msgs: list[Message]) -> list[Message]:
    """What to_messages must keep of a list of messages: those with some non-blank text."""
    return [m for m in msgs if m.content.strip()]


# ------------------------------------------------------------------------------------ unit tests
def test_string_and_block_contents_give_the_same_text():
    hist = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "user", "content": {"type": "text", "text": "Again"}},
    ]
    assert H.to_messages(hist) == [Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Again")]


def test_files_and_components_are_dropped_text_beside_them_kept():
    file_block = {"type": "file", "file": {"path": "/tmp/cat.png", "mime_type": "image/png"}}
    hist = [
        {"role": "user", "content": [file_block, {"type": "text", "text": "What is this?"}]},
        {"role": "user", "content": {"path": "/tmp/cat.png"}},  # a file only: no text, dropped
        {"role": "user", "content": {"file": {"path": "/tmp/x.pdf"}, "alt_text": "x"}},
        {
            "role": "assistant",
            "content": {"type": "component", "component": "image", "value": None, "constructor_args": {}, "props": {}},
        },
        {"role": "assistant", "content": "A cat."},
    ]
    assert H.to_messages(hist) == [Message("user", "What is this?"), Message("assistant", "A cat.")]


def test_notes_are_shown_but_never_sent_to_the_model():
    hist = [
        H.user("Hi"),
        H.assistant("Hel"),  # a partial answer cut by an error stays: the user saw it
        H.note("The server is down: try again later.", log="connection"),
        H.note("Loading (40%)", title=H.WAIT_TITLE, pending=True),
        H.user("Still there?"),
    ]
    assert H.to_messages(hist) == [Message("user", "Hi"), Message("assistant", "Hel"), Message("user", "Still there?")]
    assert [H.is_note(h) for h in hist] == [False, False, True, True, False]
    assert H.is_pending(hist[3]) and not H.is_pending(hist[2])
    assert H.without_pending(hist) == hist[:3] + hist[4:]


def test_system_prompt_goes_first_and_blank_one_is_ignored():
    hist = [H.user("Hi")]
    assert H.to_messages(hist, system="Be brief.") == [Message("system", "Be brief."), Message("user", "Hi")]
    assert H.to_messages(hist, system="   ") == [Message("user", "Hi")]


def test_odd_items_do_not_break_conversion():
    hist = [
        None,
        42,
        "just a string",
        {"content": "no role"},
        {"role": "tool", "content": "x"},
        {"role": "user", "content": None},
        {"role": "user", "content": 7},
        {"role": "user", "content": ["a", ["b", {"text": "c"}]]},
        {"role": "assistant", "content": "ok", "metadata": None},
    ]
    assert H.to_messages(hist) == [Message("user", "7"), Message("user", "a\nb\nc"), Message("assistant", "ok")]
    assert H.to_messages(None) == []


def test_gradio_message_objects_are_read():
    hist = [
        gr.ChatMessage(role="user", content="Hi"),
        gr.ChatMessage(role="assistant", content="Thinking…", metadata={"title": "🧠 thought"}),
        gr.ChatMessage(role="assistant", content="Hello!"),
    ]
    assert H.to_messages(hist) == [Message("user", "Hi"), Message("assistant", "Hello!")]


def test_text_is_passed_on_exactly():
    code = "    indented\n\n```python\nprint('x')\n```\n  "
    assert H.to_messages([H.user(code)]) == [Message("user", code)]


def test_retry_and_undo_edit_the_last_turn():
    hist = [H.user("a"), H.assistant("A"), H.user("b"), H.assistant("B1"), H.note("cut", log="stream_cut")]
    assert H.for_retry(hist) == hist[:3]
    rest, text = H.undo(hist)
    assert rest == hist[:2] and text == "b"
    assert H.for_retry([]) == [] and H.undo([]) == ([], "")
    # A user message that got no answer (it failed) is still the one retried / undone.
    failed = [H.user("a"), H.note("down")]
    assert H.for_retry(failed) == failed[:1]
    assert H.undo(failed) == ([], "a")


def test_plain_copies_chatbot_output_into_state_shape():
    bot = gr.Chatbot()
    shown = bot.postprocess([H.user("Hi"), H.note("down", log="connection")])
    back = bot.preprocess(shown)  # what an event receives: blocks, metadata dicts
    assert H.plain(back) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "down", "metadata": {"title": H.ERROR_TITLE, "log": "connection"}},
    ]


# ---------------------------------------------------------------------------- property tests
@given(messages)
def test_round_trip_from_messages_to_messages(msgs):
    assert H.to_messages(H.from_messages(msgs)) == _kept(msgs)


@given(messages, st.lists(st.tuples(st.integers(0, 8), texts, st.booleans()), max_size=4))
def test_notes_anywhere_change_nothing_for_the_model(msgs, notes):
    hist = H.from_messages(msgs)
    for pos, text, pending in notes:
        hist.insert(min(pos, len(hist)), H.note(text or "x", pending=pending))
    assert H.to_messages(hist) == _kept(msgs)


@given(st.lists(st.tuples(roles, st.lists(texts, max_size=3)), max_size=6))
def test_content_as_text_blocks_reads_back_joined_by_newlines(items):
    """Content as a list of text blocks (how the Chatbot hands history to an event) reads back as text."""
    hist = [{"role": r, "content": [{"type": "text", "text": p} for p in parts]} for r, parts in items]
    expected = [Message(r, "\n".join(p for p in parts if p)) for r, parts in items]
    assert H.to_messages(hist) == _kept(expected)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(messages)
def test_round_trip_through_a_real_chatbot(msgs):
    """Display in a gr.Chatbot and read back: the same conversation, for text the Chatbot leaves alone.

    (The Chatbot runs inspect.cleandoc on strings, which is why tabs keep the exact history in a State.)
    """
    assume(all(inspect.cleandoc(m.content) == m.content for m in msgs))
    bot = gr.Chatbot()
    back = bot.preprocess(bot.postprocess(H.from_messages(msgs)))
    assert H.to_messages(back) == _kept(msgs)
    assert H.to_messages(H.plain(back)) == _kept(msgs)


@given(messages)
def test_undo_then_resend_restores_the_conversation(msgs):
    hist = H.from_messages(msgs)
    i = H.last_user_index(hist)
    rest, text = H.undo(hist)
    if i is None:
        assert rest == [] and text == ""
    else:
        assert rest + [H.user(text)] == hist[: i + 1]


@pytest.mark.parametrize("content", [b"bytes", object(), 3.5, True])
def test_content_text_of_unreadable_things(content):
    assert H.content_text(content) == ("3.5" if content == 3.5 else "")


# ------------------------------------------------------------------------------------ endings
def test_ending_note_tags_a_stopped_or_cut_answer_as_a_note_the_model_never_sees():
    stopped, cut = H.ending_note("stopped"), H.ending_note("length")
    assert stopped["metadata"]["title"] == H.STOPPED_TITLE and "Stop" in stopped["content"]
    assert cut["metadata"]["title"] == H.LENGTH_TITLE and "max-tokens setting" in cut["content"]
    assert H.is_note(stopped) and H.is_note(cut) and not H.is_pending(stopped)
    hist = [H.user("Hi"), H.assistant("Hel"), stopped, cut]
    assert H.to_messages(hist) == [Message("user", "Hi"), Message("assistant", "Hel")]
    with pytest.raises(ValueError, match="unknown ending"):
        H.ending_note("cancelled")


def test_ended_tags_only_answers_that_did_not_end_by_themselves():
    hist = [H.user("Hi")]
    assert H.ended(hist, "Hello!", "stop") == hist + [H.assistant("Hello!")]
    assert H.ended(hist, "Hello", "length") == hist + [H.assistant("Hello"), H.ending_note("length")]
    assert H.ended(hist, "Hel", "cancelled") == hist + [H.assistant("Hel"), H.ending_note("stopped")]
    # Stopped before a word came: only the tag, no empty answer.
    assert H.ended(hist, "", "cancelled") == hist + [H.ending_note("stopped")]
    assert H.ended(hist, "", None)[-1]["metadata"]["title"] == "ℹ️ Empty answer"
