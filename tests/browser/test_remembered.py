"""A page reload keeps the Hosted API tab's conversation and Compare's last prompt and results (in this
browser's localStorage), each in its own tab; the session's API key is not kept."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import COMPARE_ANSWER, open_tab, set_number

pytestmark = pytest.mark.slow


def test_a_reload_keeps_the_api_conversation_and_the_last_comparison(page):
    open_tab(page, "api")
    box = page.locator("#api-input textarea")
    box.fill("remember me")
    box.press("Enter")
    expect(page.locator("#api-metrics")).to_contain_text("cost", timeout=60_000)
    page.get_by_text("Your API key (this session only)").click()  # closed: the test app has a key configured
    page.locator("#api-key input").fill("sk-test-never-kept-0000")
    page.locator("#api-key-save").click()
    expect(page.locator("#api-key-status")).to_contain_text("A key is set")

    open_tab(page, "compare")
    page.get_by_text("Options", exact=True).click()
    set_number(page, "Max new tokens", 3)
    prompt = page.locator("#compare-prompt textarea")
    prompt.fill("Name a colour.")
    prompt.press("Enter")
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=180_000)
    before = page.locator(COMPARE_ANSWER).filter(visible=True).all_inner_texts()

    page.reload()
    expect(page.locator("#chat-input textarea")).to_be_editable()
    open_tab(page, "api")
    chat = page.locator("#api-chat")
    expect(chat.locator('[data-testid="user"]')).to_have_text(["remember me"])
    expect(chat.locator('[data-testid="bot"]')).to_contain_text(["User: remember me"])
    page.get_by_text("Your API key (this session only)").click()
    expect(page.locator("#api-key-status")).to_contain_text("No key set")  # the key stayed on the old session
    # The restored conversation is the one the model gets: the next message continues it.
    box.fill("and now?")
    box.press("Enter")
    expect(chat.locator('[data-testid="bot"]').last).to_contain_text("messages=3 ", timeout=60_000)

    open_tab(page, "compare")
    expect(prompt).to_have_value("Name a colour.")
    expect(page.locator("#compare-status")).to_contain_text("kept in this browser")
    expect(page.locator(COMPARE_ANSWER).filter(visible=True)).to_have_text(before)
    rows = page.locator("#compare-table [role=row]").filter(has=page.get_by_role("gridcell"))
    expect(rows).to_have_count(len(before))

    # Each tab keeps its own: the Hosted API conversation does not show up in the Chat tab.
    open_tab(page, "chat")
    assert "remember me" not in page.locator("#chat-window").inner_text()
