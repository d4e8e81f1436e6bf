"""Every tab renders in a real browser, with the model status bar saying the model is ready."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import open_tab, visible_button

pytestmark = pytest.mark.slow

#: tab id -> an element that only that tab shows.
TAB_MARKERS = {
    "chat": "#chat-input textarea",
    "api": "#api-input textarea",
    "local": "#local-input textarea",
    "compare": "#compare-prompt textarea",
}


def test_status_bar_and_every_tab_render(page, tmp_path):
    expect(page.locator("#model-status")).to_contain_text("Local model ready")
    expect(page.get_by_role("tab")).to_have_text(
        ["1 · Chat", "2 · Hosted API", "3 · Local model", "Compare", "Lab", "🎤 Talk"]
    )
    for tab_id, marker in TAB_MARKERS.items():
        open_tab(page, tab_id)
        expect(page.locator(f'button[role="tab"][data-tab-id="{tab_id}"]')).to_have_attribute("aria-selected", "true")
        expect(page.locator(marker)).to_be_visible()
        shot = tmp_path / f"{tab_id}.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000  # a real rendered page, not a blank one
    open_tab(page, "lab")
    expect(page.locator('button[role="tab"][data-tab-id="lab"]')).to_have_attribute("aria-selected", "true")


#: tab id -> (its message box, what shows that Enter sent it, the tab's Stop button).
ENTER_SENDS = {
    "chat": ("#chat-input textarea", '#chat-window [data-testid="user"]', "#chat-stop"),
    "api": ("#api-input textarea", '#api-chat [data-testid="user"]', None),
    "local": ("#local-input textarea", '#local-chat [data-testid="user"]', None),
    "compare": ("#compare-prompt textarea", "#compare-status", "#compare-stop"),
}


def test_enter_sends_in_every_tab(page):
    """Typing a message and pressing Enter sends it, in every tab with a message box (Compare included)."""
    for tab_id, (box, sent, stop) in ENTER_SENDS.items():
        open_tab(page, tab_id)
        page.locator(box).fill("Hi")
        page.locator(box).press("Enter")
        expect(page.locator(sent).filter(has_text=re.compile(r"Hi|Running|Done"))).to_have_count(1, timeout=30_000)
        # Stop it: the next tab's message should not wait behind this one on the local model.
        (page.locator(stop) if stop else visible_button(page, "Stop")).click()
