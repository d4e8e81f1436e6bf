"""An answer's tokens as a table, and the conversation that continues it from a token (pure functions);
the contract pieces in core that continuing relies on."""

from __future__ import annotations

import math

import pytest

from llm_levels.core import BackendError, Chunk, Message, ReplyBuilder, TokenLogprob, check_conversation, split_prefix
from llm_levels.tokens import continue_with, table_rows, token_rows, token_table, visible

Q = [Message("user", "What is the capital of France?")]
TOKENS = (
    TokenLogprob("The", math.log(0.6), (("The", math.log(0.6)), ("Paris", math.log(0.3)))),
    TokenLogprob(" capital", math.log(0.9), ((" capital", math.log(0.9)), (" city", math.log(0.05)))),
    # Sampled: the chosen token is not among the most likely ones listed.
    TokenLogprob(" is", math.log(0.01), ((" of", math.log(0.95)), (",", math.log(0.02)))),
)


def test_rows_hold_probabilities_alternatives_and_the_chosen_rank():
    rows = token_rows(TOKENS)
    assert [r.token for r in rows] == ["The", " capital", " is"]
    assert [round(r.probability, 6) for r in rows] == [0.6, 0.9, 0.01]
    assert [a for a, _ in rows[0].alternatives] == ["The", "Paris"]
    assert [p for _, p in rows[0].alternatives] == pytest.approx([0.6, 0.3])
    assert [r.rank for r in rows] == [1, 1, None]


def test_table_rows_show_whitespace_and_percentages():
    rows = table_rows(TOKENS)
    assert rows[1][:3] == [1, "␣capital", 90.0]
    assert rows[0][3] == "✓The 60.0% · Paris 30.0%"
    assert visible("a b\n") == "a␣b↵" and visible("") == "∅"


def test_token_table_json():
    table = token_table(TOKENS)
    assert table["count"] == 3
    assert table["tokens"][0]["alternatives"][1] == {
        "token": "Paris",
        "probability": pytest.approx(0.3),
        "logprob": math.log(0.3),
    }
    assert table["mean_probability"] == pytest.approx((0.6 + 0.9 + 0.01) / 3)
    assert table["perplexity"] == pytest.approx(math.exp(-(math.log(0.6) + math.log(0.9) + math.log(0.01)) / 3))
    assert token_table([]) == {"tokens": [], "count": 0, "mean_probability": None, "perplexity": None}


def test_continue_with_cuts_at_the_token_and_puts_the_alternative_in_its_place():
    assert continue_with(Q, TOKENS, 1, 1) == [*Q, Message("assistant", "The city")]
    assert continue_with(Q, TOKENS, 0, 0) == [*Q, Message("assistant", "The")]
    assert continue_with(Q, TOKENS, 2, " was") == [*Q, Message("assistant", "The capital was")]
    # An answer that was itself a continuation keeps the text it continued.
    started = [*Q, Message("assistant", "Well,")]
    assert continue_with(started, TOKENS, 1, 1)[-1] == Message("assistant", "Well,The city")
    for index, alt in ((3, 0), (-1, 0), (0, 2)):
        with pytest.raises(BackendError) as e:
            continue_with(Q, TOKENS, index, alt)
        assert e.value.status == 400


def test_a_final_assistant_message_after_a_user_message_is_a_started_answer():
    started = [*Q, Message("assistant", "The cap")]
    check_conversation(started)  # accepted: the local engines continue it
    assert split_prefix(started) == (Q, "The cap")
    assert split_prefix(Q) == (Q, None)
    for bad in (
        [Message("assistant", "hi")],
        [Message("system", "s"), Message("assistant", "hi")],
        [Message("user", " "), Message("assistant", "x")],
    ):
        with pytest.raises(BackendError):
            check_conversation(bad)


def test_a_chunk_note_reaches_the_reply():
    b = ReplyBuilder()
    b.add(Chunk(text="hi"))
    b.add(Chunk(finish_reason="stop", note="No per-token probabilities: x"))
    assert b.reply().note == "No per-token probabilities: x" and b.reply().text == "hi"
