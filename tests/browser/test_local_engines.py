"""The Local tab's engine picker in a real browser: transformers answers (loaded on first use if needed) and the
Python panel shows transformers code; back on llama.cpp, the panel shows xllamacpp code. Greedy throughout
(do_sample stays off), so nothing here depends on a sampled answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages, error_badges, open_tab, set_number, toast, user_messages

pytestmark = pytest.mark.slow

#: The first transformers load converts the GGUF (tens of seconds on 2 busy cores) unless it is cached.
ANSWER_TIMEOUT_MS = 240_000


def pick_engine(page, engine: str) -> None:
    page.locator("#local-engine label", has_text=engine).click()
    expect(page.locator(f'#local-engine input[value="{engine}"]')).to_be_checked()


def ask(page, text: str, engine: str) -> str:
    """Send ``text`` in the Local tab and wait for the finished answer on ``engine``; returns the answer."""
    box = page.locator("#local-input textarea")
    box.fill(text)
    box.press("Enter")
    # The turn is finished when the metrics line under the chat names the engine that answered.
    expect(page.locator("#local-metrics")).to_contain_text(engine, timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#local-metrics")).to_contain_text("free (your hardware)")
    answer = bot_messages(page, "local-chat").last.inner_text().strip()
    assert answer and "⏳" not in answer
    return answer


def python_panel(page):
    page.get_by_role("tab", name="Python", exact=True).click()
    return page.locator("#local-snippet")


def test_switch_engines_and_see_each_engines_code(page):
    open_tab(page, "local")
    expect(page.locator('#local-engine input[value="llama.cpp"]')).to_be_checked()  # the default
    expect(page.locator("#local-model-info")).to_contain_text("llama.cpp")
    set_number(page, "max_new_tokens", 8)

    pick_engine(page, "transformers")
    # Picking loads nothing by itself; the line says where the model stands on this engine.
    expect(page.locator("#local-model-info")).to_contain_text("transformers")
    ask(page, "What is the capital of France?", "transformers")
    expect(page.locator("#local-model-info")).to_contain_text("engine transformers")
    expect(page.locator("#local-model-info")).to_contain_text("float32")
    snippet = python_panel(page)
    expect(snippet).to_contain_text("from transformers import", timeout=30_000)
    expect(snippet).not_to_contain_text("xllamacpp")

    pick_engine(page, "llama.cpp")
    expect(page.locator("#local-model-info")).to_contain_text("llama.cpp")
    ask(page, "And of Italy?", "llama.cpp")
    expect(page.locator("#local-model-info")).to_contain_text("Q4_1")
    snippet = python_panel(page)
    expect(snippet).to_contain_text("xllamacpp", timeout=30_000)
    expect(snippet).not_to_contain_text("from transformers import")
    # Both turns are in the conversation, one answer per engine (each may carry a "cut off" tag).
    expect(user_messages(page, "local-chat")).to_have_count(2)
    assert bot_messages(page, "local-chat").count() >= 2


def test_refused_input_in_the_local_tab_is_a_toast_and_hides_nothing(page):
    open_tab(page, "local")
    set_number(page, "max_new_tokens", 3)
    ask(page, "Say hi.", "llama.cpp")
    page.locator("#local-input textarea").fill("   ")
    page.locator("#local-input textarea").press("Enter")
    expect(toast(page, "Type a message first.").first).to_be_visible()
    expect(user_messages(page, "local-chat")).to_have_count(1)
    expect(bot_messages(page, "local-chat").first).not_to_be_empty()  # the answer (a "cut off" tag may follow)
    assert error_badges(page, "local-chat", "local-input", "local-metrics", "local-model-info") == 0
