"""The Chat tab in a real browser when things go wrong or take long: Stop and refused input never hide the
conversation (no "Error" badges, no blank chat); a long turn says what it is doing while Clear and a second
message still work; answers cut by Stop or by the length limit carry a tag. Greedy decoding throughout."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    bot_messages,
    error_badges,
    samples,
    set_number,
    start_sampling,
    toast,
    type_and_enter,
    user_messages,
    visible_button,
)
from tests.browser.test_chat import KATAN_LABEL, LOCAL_LABEL, use_backend

pytestmark = pytest.mark.slow

CHAT_PARTS = ("chat-window", "chat-input", "chat-metrics")
STOPPED = "⏹️ Stopped"
CUT = "✂️ Cut off at the length limit"


def wait_until_idle(page, limit_s: float = 120) -> None:
    """Wait until the chat's last message is no "please wait" note (the turn ended)."""
    expect(bot_messages(page, "chat-window").last).not_to_contain_text("⏳", timeout=limit_s * 1000)


def test_stop_never_wipes_the_conversation_or_shows_error_badges(page):
    """Stop pressed at many moments of short answers (before the first word, mid-answer, as it ends): it
    once wiped the chat and covered it with "Error" badges. Each turn stays on screen, each time."""
    use_backend(page, LOCAL_LABEL)
    for i, delay in enumerate((0.0, 0.3, 0.8, 1.5, 2.2, 3.0, 0.1, 1.0)):
        type_and_enter(page, "chat-input", f"Say hello number {i}.")
        page.wait_for_timeout(delay * 1000)
        page.locator("#chat-stop").click()
        wait_until_idle(page)
        page.wait_for_timeout(800)  # a late update of the stopped turn would land now
        assert error_badges(page, *CHAT_PARTS) == 0, f"Error badges after Stop #{i}"
        expect(user_messages(page, "chat-window")).to_have_count(i + 1)
        expect(user_messages(page, "chat-window").last).to_have_text(f"Say hello number {i}.")
    # The conversation goes on normally after all that.
    use_backend(page, KATAN_LABEL)
    type_and_enter(page, "chat-input", "Still there?")
    expect(bot_messages(page, "chat-window").last).to_contain_text("User: Still there?", timeout=60_000)


def test_an_empty_message_is_a_toast_and_the_conversation_stays(page):
    use_backend(page, KATAN_LABEL)
    type_and_enter(page, "chat-input", "first message")
    expect(bot_messages(page, "chat-window").last).to_contain_text("User: first message", timeout=60_000)
    for blank in ("", "   ", "\u200b"):
        type_and_enter(page, "chat-input", blank)
        expect(toast(page, "Type a message first.").first).to_be_visible()
        assert error_badges(page, *CHAT_PARTS) == 0
        expect(user_messages(page, "chat-window")).to_have_count(1)
        expect(bot_messages(page, "chat-window").last).to_contain_text("User: first message")


def test_a_long_message_says_what_is_happening_and_clear_and_send_still_work(page):
    """A long message on the local model: the wait names the message's size; a second message meanwhile is
    refused with a toast (its text kept); Clear empties the chat at once, for good; the next message works."""
    use_backend(page, LOCAL_LABEL)
    set_number(page, "Longest answer (tokens)", 200)
    long_text = ("The weather in the mountains changes quickly in spring. " * 60)[:3200] + " Summarize this."
    start_sampling(page, "chat-window")
    type_and_enter(page, "chat-input", long_text)
    size = f"{len(long_text):,}"
    expect(bot_messages(page, "chat-window").last).to_contain_text(
        re.compile(rf"Preparing your message|Reading your {size}-character message"), timeout=30_000
    )
    type_and_enter(page, "chat-input", "a second message")
    expect(toast(page, "Still answering your previous message").first).to_be_visible(timeout=30_000)
    expect(page.locator("#chat-input textarea")).to_have_value("a second message")  # not dropped silently
    expect(user_messages(page, "chat-window")).to_have_count(1)

    visible_button(page, "🗑 Clear").click()
    t0 = time.monotonic()
    expect(user_messages(page, "chat-window")).to_have_count(0, timeout=5_000)
    assert time.monotonic() - t0 < 5
    page.wait_for_timeout(3_000)  # the dropped turn shows nothing more
    expect(user_messages(page, "chat-window")).to_have_count(0)
    expect(bot_messages(page, "chat-window")).to_have_count(0)
    shown = samples(page)
    assert any(f"Reading your {size}-character message" in s for s in shown) or any(
        "Preparing your message" in s for s in shown
    ), shown[:5]

    use_backend(page, KATAN_LABEL)
    type_and_enter(page, "chat-input", "after clear")
    expect(bot_messages(page, "chat-window").last).to_contain_text("messages=1 ", timeout=60_000)


def test_answers_cut_by_the_length_limit_or_by_stop_are_tagged(page):
    use_backend(page, LOCAL_LABEL)
    set_number(page, "Longest answer (tokens)", 6)
    type_and_enter(page, "chat-input", "Write a long story about a dragon who learns to cook.")
    expect(page.locator("#chat-window")).to_contain_text(CUT, timeout=120_000)
    expect(page.locator("#chat-metrics")).to_contain_text("cut at the token limit")

    set_number(page, "Longest answer (tokens)", 400)
    type_and_enter(page, "chat-input", "Write a long story about a knight who learns to sing.")
    bot = bot_messages(page, "chat-window").last
    expect(bot).to_have_text(re.compile(r"^(?!.*⏳)(\S+\s+){3,}"), timeout=120_000)
    page.locator("#chat-stop").click()
    expect(bot).to_contain_text(STOPPED, timeout=30_000)
    expect(bot).to_contain_text("You pressed Stop")
    expect(page.locator("#chat-metrics")).to_contain_text("stopped")
    # Exactly one tag each: the cut answer's, then the stopped one's.
    assert page.locator("#chat-window").inner_text().count(CUT) == 1
    assert page.locator("#chat-window").inner_text().count(STOPPED) == 1
