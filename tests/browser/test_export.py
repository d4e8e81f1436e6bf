"""Export and import in a real browser: a Chat conversation downloads as Markdown, JSON and a replay script,
and the JSON, loaded in another browser session, brings the conversation back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages, type_and_enter, user_messages

pytestmark = pytest.mark.slow


def test_a_chat_conversation_exports_and_imports(new_page, tmp_path):
    page = new_page()
    type_and_enter(page, "chat-input", "Name three colors.")
    expect(bot_messages(page, "chat-window")).to_have_count(1, timeout=180_000)
    expect(page.locator("#chat-metrics")).to_contain_text("in all", timeout=180_000)  # the answer is complete
    page.locator("#chat-export-box").click()
    page.locator("#chat-export").click()
    links = page.locator("#chat-export-files a")
    expect(links).to_have_count(3, timeout=60_000)
    names = page.locator("#chat-export-files").inner_text().replace("\n.", ".")
    assert "colors.md" in names and "-replay.py" in names and "colors.json" in names, names
    with page.expect_download() as info:
        page.locator("#chat-export-files tr", has_text=".json").locator("a").first.click()
    saved = tmp_path / "chat.json"
    info.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["format"] == "llm-levels-transcript" and data["settings"]["temperature"] == 0.0
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][0]["content"] == "Name three colors."

    other = new_page()  # another browser session, empty chat
    other.locator("#chat-export-box").click()
    other.locator("#chat-import").locator("xpath=..").locator("input[type=file]").set_input_files(str(saved))
    expect(user_messages(other, "chat-window")).to_have_count(1, timeout=60_000)
    expect(user_messages(other, "chat-window").first).to_contain_text("Name three colors.")
    expect(bot_messages(other, "chat-window").first).to_contain_text(data["messages"][1]["content"][:20])
    assert Path(saved).stat().st_size > 0
