"""The Lab's fine-tune panel in a real browser: a tiny fine-tune shows its progress, a loss line and the metrics,
and the saved adapter is then a Chat backend (after a reload) that answers."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from llm_levels.config import Settings
from tests.browser.helpers import bot_messages, open_tab
from tests.browser.test_chat import send, use_backend

pytestmark = pytest.mark.slow

#: Every text the status line shows, recorded in the page (a short fine-tune can pass a state between two looks).
RECORD = """() => {
  window.__ftTexts = [];
  const el = document.querySelector('#ft-status');
  new MutationObserver(() => window.__ftTexts.push(el.innerText)).observe(
    el, {childList: true, subtree: true, characterData: true});
}"""


def fill_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")


@pytest.fixture
def adapter_name():
    """A name of its own; its folder (beside the app's model cache) is removed afterwards."""
    name = f"ui test {uuid.uuid4().hex[:8]}"
    yield name
    # The test app leaves LLM_LEVELS_CACHE_DIR empty: the default cache, as Settings reads it here.
    folder = Path(Settings.from_env().cache_dir) / "adapters" / name.replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)


def test_a_tiny_fine_tune_shows_progress_loss_and_metrics_and_its_adapter_answers_in_chat(new_page, adapter_name):
    page = new_page()
    open_tab(page, "lab")
    page.get_by_text("Fine-tune the local model (LoRA)").click()
    fill_number(page, "ft-examples", 16)
    fill_number(page, "ft-epochs", 1)
    fill_number(page, "ft-eval", 15)
    page.get_by_label("Adapter name").fill(adapter_name)
    page.evaluate(RECORD)
    page.locator("#ft-run").click()

    status = page.locator("#ft-status")
    expect(status).to_contain_text("Fine-tuned on 16 rows", timeout=90_000)
    expect(status).to_contain_text("weighted F1")
    expect(status).to_contain_text(f"Adapter saved: {adapter_name}")
    seen = page.evaluate("window.__ftTexts")
    assert any("examples/s" in t and "s left" in t and "loss" in t for t in seen), seen[-5:]
    expect(page.locator("#ft-loss canvas, #ft-loss svg").first).to_be_visible()  # the loss line was drawn
    expect(page.locator("#ft-table")).to_contain_text("15")  # n evaluated
    expect(page.locator("#ft-confusion")).to_contain_text("positive")

    # A picker is built when the page loads: the new adapter is there after a reload.
    page.reload()
    expect(page.locator("#chat-input textarea")).to_be_editable()
    use_backend(page, f"SmolLM2 + {adapter_name} adapter (transformers)")
    send(page, "Say hello.")
    bot = bot_messages(page, "chat-window").last
    expect(bot).not_to_have_text(re.compile(r"^\s*$"), timeout=60_000)
    expect(page.locator("#chat-metrics")).to_contain_text(re.compile(r"tok/s|tokens"), timeout=60_000)
