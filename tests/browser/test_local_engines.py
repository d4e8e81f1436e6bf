"""The Local tab's engine picker in a real browser: transformers answers (loaded on first use if needed) and the
Python panel shows transformers code; back on llama.cpp, the panel shows xllamacpp code. Greedy throughout
(do_sample stays off), so nothing here depends on a sampled answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages, open_tab, set_number

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
    # Both turns are in the conversation, one answer per engine.
    expect(bot_messages(page, "local-chat")).to_have_count(2)
