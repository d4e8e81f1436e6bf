"""Conversations as files: JSON round trip, Markdown for reading, and a clear message for a bad import."""

from __future__ import annotations

import json

import pytest

from llm_levels.core import BackendError, GenParams, Message
from llm_levels.transcript import MAX_IMPORT_BYTES, Transcript, transcript_from_json

T = Transcript(
    level="local",
    backend="local",
    model="SmolLM2-135M-Instruct",
    engine="llama.cpp",
    system="Be brief.",
    messages=(Message("user", "Hi"), Message("assistant", "Hello!\nHow can I help?")),
    params=GenParams(temperature=0.8, seed=42, max_new_tokens=32),
    turns=(
        {
            "model": "SmolLM2",
            "ttft_s": 0.1,
            "tokens_per_s": 90.0,
            "total_s": 0.3,
            "usage": {"input_tokens": 20, "output_tokens": 7},
        },
    ),
)


def test_json_round_trips_everything() -> None:
    back = transcript_from_json(T.to_json())
    assert back.messages == T.messages and back.params == T.params and back.system == T.system
    assert back.engine == "llama.cpp" and back.turns == T.turns and back.level == "local"
    assert back.replay_messages() == [Message("system", "Be brief."), Message("user", "Hi")]
    assert back.last_answer == "Hello!\nHow can I help?"


def test_markdown_shows_settings_seed_and_numbers() -> None:
    md = T.to_markdown()
    assert "seed 42" in md and "temperature 0.8" in md and "llama.cpp" in md
    assert "> Hello!\n> How can I help?" in md and "20 → 7 tokens" in md and "**System:**" in md


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "not JSON"),
        ("[" * 100_000, "not JSON"),
        (json.dumps({"format": "other"}), "not a transcript"),
        (json.dumps({**T.to_dict(), "version": 9}), "version 9"),
        (json.dumps({**T.to_dict(), "level": "moon"}), "level must be"),
        (json.dumps({**T.to_dict(), "messages": []}), "non-empty list"),
        (json.dumps({**T.to_dict(), "messages": [{"role": "system", "content": "x"}]}), "message 1"),
        (json.dumps({**T.to_dict(), "settings": {"temperature": 9}}), "temperature must be between"),
        (json.dumps({**T.to_dict(), "model": 5}), "model must be text"),
        ("x" * (MAX_IMPORT_BYTES + 1), "too large"),
    ],
)
def test_a_bad_import_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(BackendError) as err:
        transcript_from_json(text)
    assert err.value.status == 400 and words in str(err.value) and "Could not import" in str(err.value)
