"""Two browser sessions at once (two browser contexts) keep separate conversations and API keys; a page
reload keeps each tab's conversation (in the browser's localStorage)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    bot_messages,
    open_tab,
    set_number,
    type_and_enter,
    user_messages,
    visible_button,
)

pytestmark = pytest.mark.slow


def chat(page, text: str) -> None:
    """Send ``text`` in the Chat tab (the test app's default backend is the katan echo server) and wait."""
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")
    expect(bot_messages(page, "chat-window").last).to_contain_text(f"User: {text}", timeout=60_000)


def test_two_sessions_keep_separate_histories_and_keys(new_page, app_server):
    alice, bob = new_page(), new_page()
    chat(alice, "alpha from Alice")
    chat(bob, "beta from Bob")
    chat(alice, "second from Alice")
    # Each server-side history holds only its own turns: the echo server saw 3 messages vs 1.
    expect(bot_messages(alice, "chat-window").last).to_contain_text("messages=3 ")
    expect(bot_messages(bob, "chat-window").last).to_contain_text("messages=1 ")
    alice_text = alice.locator("#chat-window").inner_text()
    bob_text = bob.locator("#chat-window").inner_text()
    assert "alpha from Alice" in alice_text and "Bob" not in alice_text
    assert "beta from Bob" in bob_text and "Alice" not in bob_text

    # A key typed in one session is that session's alone, and is never shown back.
    key = "sk-test-BROWSER-SESSION-789"
    open_tab(alice, "api")
    if not alice.locator("#api-key input").is_visible():  # the key accordion is closed when a key is configured
        alice.get_by_text("Your API key (this session only)").click()
    alice.locator("#api-key input").fill(key)
    alice.locator("#api-key-save").click()
    expect(alice.locator("#api-key-status")).to_contain_text("A key is set")
    expect(alice.locator("#api-key input")).to_have_value("")
    open_tab(bob, "api")
    if not bob.locator("#api-key-status").is_visible():
        bob.get_by_text("Your API key (this session only)").click()
    expect(bob.locator("#api-key-status")).to_contain_text("No key set")
    for pg in (alice, bob):
        assert key not in pg.content() and app_server.api_key not in pg.content()


def test_a_reload_keeps_each_tabs_conversation_in_the_browser(page):
    """The conversation of Chat and of the Local tab comes back after a page reload (it is kept in the
    browser's localStorage), the model still sees it, and Clear forgets it for good."""
    chat(page, "remember me across a reload")
    open_tab(page, "local")
    set_number(page, "max_new_tokens", 4)
    type_and_enter(page, "local-input", "Say hi.")
    expect(page.locator("#local-metrics")).to_contain_text("free (your hardware)", timeout=120_000)

    page.reload()
    expect(page.locator("#chat-input textarea")).to_be_editable()
    expect(user_messages(page, "chat-window")).to_have_count(1)
    expect(user_messages(page, "chat-window").first).to_have_text("remember me across a reload")
    chat(page, "and after the reload")  # the echo server gets the restored turn too
    expect(bot_messages(page, "chat-window").last).to_contain_text("messages=3 ")
    open_tab(page, "local")
    expect(user_messages(page, "local-chat")).to_have_count(1)
    expect(user_messages(page, "local-chat").first).to_have_text("Say hi.")

    visible_button(page, "🗑 Clear").click()  # the Local tab's
    expect(user_messages(page, "local-chat")).to_have_count(0)
    page.wait_for_timeout(1_000)  # the cleared conversation is stored
    page.reload()
    expect(page.locator("#chat-input textarea")).to_be_editable()
    expect(user_messages(page, "chat-window")).to_have_count(2)
    open_tab(page, "local")
    page.wait_for_timeout(1_000)
    expect(user_messages(page, "local-chat")).to_have_count(0)
