"""The Compare tab in a real browser: one prompt fills every ticked backend's column and the metrics table."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import COMPARE_ANSWER, open_tab, set_number

pytestmark = pytest.mark.slow


def test_compare_fills_every_column(page):
    open_tab(page, "compare")
    page.get_by_text("Options", exact=True).click()
    set_number(page, "Max new tokens", 12)  # the local model answers twice (two columns share it): keep it short
    page.locator("#compare-prompt textarea").fill("Name one colour.")
    page.locator("#compare-run").click()
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=180_000)

    answers = page.locator(COMPARE_ANSWER).filter(visible=True)
    ticked = page.get_by_role("checkbox", checked=True)
    n = ticked.count()
    assert n >= 4, "the test app offers local, katan, a dead endpoint and the app's own endpoint"
    expect(answers).to_have_count(n)
    texts = [a.inner_text().strip() for a in answers.all()]
    for text in texts:
        assert text and "⏳" not in text and "▌" not in text, texts  # every column got its final content
    assert any(t.startswith("[echo] model=katan-echo") and "User: Name one colour." in t for t in texts), texts
    assert any("Not answered" in t for t in texts), texts  # the dead endpoint says so in its own column
    answered = [t for t in texts if "Not answered" not in t and not t.startswith("[echo]")]
    assert len(answered) == 2 and all(answered), texts  # the local model, in-process and through /v1
    # The metrics table has one row per backend, each with a finish reason.
    rows = page.locator("#compare-table [role=row]").filter(has=page.get_by_role("gridcell"))
    expect(rows).to_have_count(n)
    finishes = [r.get_by_role("gridcell").last.inner_text().strip() for r in rows.all()]
    assert sorted(finishes).count("error") == 1 and all(f in ("stop", "length", "error") for f in finishes), finishes


def test_compare_charts_draw_a_bar_per_answer(page):
    open_tab(page, "compare")
    page.get_by_text("Options", exact=True).click()
    set_number(page, "Max new tokens", 4)
    page.locator("#compare-prompt textarea").fill("Hi")
    page.locator("#compare-run").click()
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=180_000)
    finished = (
        page.locator("#compare-table [role=row]")
        .filter(has_not_text="error")
        .filter(has=page.get_by_role("gridcell"))
        .count()
    )
    # Both charts (time to first token, tokens/s) draw one bar per backend that answered.
    bars = page.locator(".vega-embed .mark-rect path")
    expect(bars).to_have_count(2 * finished, timeout=10_000)


def test_enter_runs_and_answers_cut_by_the_limit_or_by_stop_are_tagged(page):
    open_tab(page, "compare")
    page.get_by_text("Options", exact=True).click()
    set_number(page, "Max new tokens", 3)
    prompt = page.locator("#compare-prompt textarea")
    prompt.fill("Describe the sea in detail.")
    prompt.press("Enter")  # Enter runs the comparison, as it sends in the other tabs
    status = page.locator("#compare-status")
    expect(status).to_contain_text("Done in", timeout=180_000)
    assert prompt.input_value() == "Describe the sea in detail."  # no new line added
    answers = page.locator(COMPARE_ANSWER).filter(visible=True)
    # The local model's answers (in-process and through /v1) hit the 3-token limit: each says it was cut off.
    expect(answers.filter(has_text="Cut off at the length limit")).to_have_count(2)

    set_number(page, "Max new tokens", 800)
    prompt.fill("Write a long story about a lighthouse keeper and the sea.")
    prompt.press("Enter")
    expect(answers.filter(has_text="▌").first).to_be_visible(timeout=120_000)  # an answer is streaming
    page.locator("#compare-stop").click()
    expect(status).to_contain_text("Stopped after", timeout=30_000)
    expect(answers.filter(has_text="Stopped")).not_to_have_count(0)
    texts = answers.all_inner_texts()
    assert not any("▌" in t or "⏳" in t for t in texts), texts
    finishes = [
        r.get_by_role("gridcell").last.inner_text().strip()
        for r in page.locator("#compare-table [role=row]").filter(has=page.get_by_role("gridcell")).all()
    ]
    assert "stopped" in finishes, finishes
