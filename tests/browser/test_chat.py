"""The Chat tab in a real browser: streamed tokens arrive and the reply completes; Stop keeps the partial text."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages, pick_dropdown, samples, start_sampling

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
    start_sampling(page, "chat-window")
    # A prompt the model answers at some length, so the stream shows several pieces even at llama.cpp's speed.
    send(page, "Write a short story about a cat who learns to swim.")
    # The reply is complete when the metrics line (speed, tokens) appears under the chat.
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=120_000)
    shown = samples(page)
    final = bot_messages(page, "chat-window").last.inner_text().strip()
    assert final and WAIT_NOTE not in final
    # Streaming: before the final text, the page showed several shorter, growing pieces of the answer.
    partial = [s.strip() for s in shown if s.strip() and WAIT_NOTE not in s and s.strip() != final]
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


def _settled_text(page, *, quiet_s: float = 1.5, limit_s: float = 20.0) -> str:
    """The last bot message once it has not changed for ``quiet_s`` (the stream has ended)."""
    last = bot_messages(page, "chat-window").last.inner_text()
    since = time.monotonic()
    deadline = since + limit_s
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        now = bot_messages(page, "chat-window").last.inner_text()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"the answer kept changing for {limit_s:.0f} s after Stop: {last[-200:]!r}")


def test_stop_mid_reply_keeps_the_partial_text(page):
    use_backend(page, LOCAL_LABEL)  # ~512 new tokens at a few tokens/s: Stop surely lands mid-reply
    send(page, "Write a long story about a dragon who learns to cook.")
    bot = bot_messages(page, "chat-window").last
    # Wait until real text (not the "please wait" note) has streamed in: a few words.
    expect(bot).to_have_text(re.compile(r"^(?!.*⏳)(\S+\s+){3,}"), timeout=120_000)
    page.locator("#chat-stop").click()
    kept = _settled_text(page).strip()
    assert kept and WAIT_NOTE not in kept
    # Generation ended before completing: no metrics line for a finished reply, and the text is a partial story.
    assert "tokens/s" not in page.locator("#chat-metrics").inner_text()
    assert len(kept.split()) < 400, "Stop did not stop the reply"
    # The partial text is part of the conversation: the next turn (the echo server) gets three messages.
    use_backend(page, KATAN_LABEL)
    send(page, "Thanks.")
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=60_000)
    bots = bot_messages(page, "chat-window")
    expect(bots).to_have_count(2)
    assert bots.first.inner_text().strip() == kept
    expect(bots.last).to_contain_text("messages=3 ")
    expect(bots.last).to_contain_text("User: Thanks.")
