"""Every tab renders in a real browser, with the model status bar saying the model is ready."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import open_tab

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
    expect(page.get_by_role("tab")).to_have_text(["1 · Chat", "2 · Hosted API", "3 · Local model", "Compare", "Lab"])
    for tab_id, marker in TAB_MARKERS.items():
        open_tab(page, tab_id)
        expect(page.locator(f'button[role="tab"][data-tab-id="{tab_id}"]')).to_have_attribute("aria-selected", "true")
        expect(page.locator(marker)).to_be_visible()
        shot = tmp_path / f"{tab_id}.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000  # a real rendered page, not a blank one
    open_tab(page, "lab")
    expect(page.locator('button[role="tab"][data-tab-id="lab"]')).to_have_attribute("aria-selected", "true")
