"""The Lab tab in a real browser: a click on Run with the tab's defaults (plus a small row limit) scores the
demo set with the local model and fills the status, the results table and the plot."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import open_tab

pytestmark = pytest.mark.slow


def test_lab_run_from_the_page_fills_the_results(page):
    open_tab(page, "lab")
    page.locator("#lab-shots textarea, #lab-shots input").first.fill("0,1")
    limit = page.locator("#lab-limit input")
    limit.fill("9")
    limit.press("Tab")
    page.locator("#lab-run").click()
    expect(page.locator("#lab-status")).to_contain_text("Done", timeout=120_000)
    cells = page.locator("#lab-table").inner_text().split("weighted F1", 1)[1].split()
    # one row per k: k, method, template, n, accuracy, macro F1, weighted F1, invalid % (after the headers)
    rows = [cells[i : i + 8] for i in range(cells.index("0"), len(cells), 8)]
    assert [r[0] for r in rows] == ["0", "1"] and all(r[1] == "score" and r[3] == "9" for r in rows), cells
    assert all(0.0 <= float(r[4]) <= 1.0 for r in rows)
    # No error toast: every value the page sent passed validation.
    assert page.locator(".toast-body.error, .toast-wrap .error").count() == 0
