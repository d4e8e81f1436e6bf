"""Every example prompt the Chat tab shows is answered sensibly by the default local engine (llama.cpp on the
embedded SmolLM2-135M-Instruct), five times each, through the Chat tab's real handler with its defaults:
greedy decoding (so the checks below are about a deterministic answer, not a lucky sample), the model's own
system prompt, the slider's default answer length. Each check is a shape that shows the answer is on topic."""

from __future__ import annotations

import re

import pytest

from llm_levels import history as H
from llm_levels.ui.chat_layout import DEFAULT_MAX_TOKENS, EXAMPLES
from tests.fixtures.app_server import LOCAL

pytestmark = pytest.mark.slow

RUNS = 5
COLORS = {"red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink", "brown"}


def sensible(prompt: str, answer: str) -> bool:
    """Whether ``answer`` is on topic for the example ``prompt`` (a keyword or a shape)."""
    low = answer.lower()
    if "large language model" in prompt:
        return "language model" in low and len(answer) < 1200
    if "palindrome" in prompt:
        return "def " in answer and "palindrome" in low
    if "three tips" in prompt:
        return len(re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+\S", answer, flags=re.M)) >= 3
    if "French" in prompt:
        return "bonjour" in low
    if "three colors" in prompt:
        return len(COLORS & set(re.findall(r"[a-z]+", low))) >= 3
    raise AssertionError(f"no check for the example {prompt!r}: add one")


def test_each_example_has_a_check_that_an_empty_answer_fails():
    for example in EXAMPLES:  # raises for an example without a check
        assert sensible(example["text"], "") is False


@pytest.mark.parametrize("example", [e["text"] for e in EXAMPLES], ids=lambda t: t[:30])
def test_every_example_answers_sensibly_on_the_default_engine(app_server, example):
    for run in range(RUNS):
        client = app_server.client()  # a new session: the example alone, as a first click
        chat, _textbox, metrics = client.predict(example, LOCAL, DEFAULT_MAX_TOKENS, api_name="/chat_send")
        last = chat[-1]
        assert not H.is_note(last), f"run {run + 1}: ended with a note, not an answer: {last}"
        answer = H.content_text(last["content"])
        assert sensible(example, answer), f"run {run + 1} of {example!r}: {answer!r}"
        assert "cut at the token limit" not in metrics, f"run {run + 1}: the answer did not end: {answer[-200:]!r}"
