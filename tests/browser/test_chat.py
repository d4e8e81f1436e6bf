"""The Chat tab in a real browser: streamed tokens arrive and the reply completes; Stop keeps the partial text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages, pick_dropdown, samples, set_number, start_sampling

pytestmark = pytest.mark.slow

LOCAL_LABEL = "Local model (in this app · llama.cpp)"
KATAN_LABEL = "OpenAI-compatible (katan-echo)"
WAIT_NOTE = "⏳"


def use_backend(page, label: str) -> None:
    if not page.locator("#chat-backend input").is_visible():  # the Settings accordion starts closed
        page.get_by_text("Settings", exact=True).click()
    pick_dropdown(page, "chat-backend", label)
    expect(page.locator("#chat-backend input")).to_have_value(re.compile(re.escape(label)))


def send(page, text: str) -> None:
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")


def test_typed_prompt_streams_tokens_and_completes(page):
    use_backend(page, LOCAL_LABEL)
    # Greedy decoding can repeat itself up to the limit: a short limit keeps this test quick on busy cores.
    set_number(page, "Longest answer (tokens)", 300)
    start_sampling(page, "chat-window")
    # A prompt the model answers at some length, so the stream shows several pieces even at llama.cpp's speed.
    send(page, "Write a short story about a cat who learns to swim.")
    # The reply is complete when the metrics line (speed, tokens) appears under the chat.
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=240_000)
    shown = samples(page)
    # The answer is the first bot message (a "✂️ Cut off" tag may follow it, if it reached the limit).
    final = bot_messages(page, "chat-window").first.inner_text().strip()
    assert final and WAIT_NOTE not in final and "✂️" not in final
    # Streaming: before the final text, the page showed several shorter, growing pieces of the answer.
    partial = [s.strip() for s in shown if s.strip() and WAIT_NOTE not in s and "✂️" not in s and s.strip() != final]
    assert len(partial) >= 2, shown
    lengths = [len(s) for s in partial]
    assert lengths == sorted(lengths) and lengths[-1] < len(final), shown
    assert final.startswith(partial[0].split()[0]), (partial[0], final)
    # The user's message is on screen above it, and the input box was emptied.
    expect(page.locator('#chat-window [data-testid="user"]').last).to_have_text(
        "Write a short story about a cat who learns to swim."
    )
    expect(page.locator("#chat-input textarea")).to_have_value("")
    assert "local" in page.locator("#chat-metrics").inner_text()


def test_stop_mid_reply_keeps_the_partial_text(page):
    use_backend(page, LOCAL_LABEL)  # ~512 new tokens at a few tokens/s: Stop surely lands mid-reply
    send(page, "Write a long story about a dragon who learns to cook.")
    bot = bot_messages(page, "chat-window").last
    # Wait until real text (not the "please wait" note) has streamed in: a few words.
    expect(bot).to_have_text(re.compile(r"^(?!.*⏳)(\S+\s+){3,}"), timeout=120_000)
    page.locator("#chat-stop").click()
    # The answer ends with a "⏹️ Stopped" tag under the partial text, and the metrics line says so.
    expect(bot_messages(page, "chat-window").last).to_contain_text("⏹️ Stopped", timeout=30_000)
    expect(page.locator("#chat-metrics")).to_contain_text("stopped")
    page.wait_for_timeout(1_500)  # nothing streams in after the tag
    bots = bot_messages(page, "chat-window")
    expect(bots).to_have_count(2)
    kept = bots.first.inner_text().strip()
    assert kept and WAIT_NOTE not in kept and "Stopped" not in kept
    assert len(kept.split()) < 400, "Stop did not stop the reply"
    # The partial text is part of the conversation (the tag is not): the next turn (the echo server) gets
    # three messages.
    use_backend(page, KATAN_LABEL)
    send(page, "Thanks.")
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=60_000)
    expect(bots).to_have_count(3)
    assert bots.first.inner_text().strip() == kept
    expect(bots.last).to_contain_text("messages=3 ")
    expect(bots.last).to_contain_text("User: Thanks.")


def test_clicking_an_example_sends_it_and_the_local_model_answers_it_sensibly(page):
    """The examples are chosen for the embedded model with Chat's greedy decoding (every one, five times each:
    tests/ui/test_chat_examples.py); here one is clicked as a presenter would."""
    use_backend(page, LOCAL_LABEL)
    page.locator("#chat-window").get_by_text("How do you say 'hello' in French?").click()
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=120_000)
    expect(page.locator('#chat-window [data-testid="user"]')).to_have_text(["How do you say 'hello' in French?"])
    assert "bonjour" in bot_messages(page, "chat-window").first.inner_text().lower()
