"""The Lab tab in a real browser: Run with the tab's defaults (plus a small row limit) scores the demo set with
the local model and fills the status, the results table, the chart and the latest run's tables; what is
drawn is read from the page: whole-number k labels, three bars per k that neither cover each other nor share
a colour, a chart for a single k, tables that are not cut off, and no "time left" once Done or Stopped."""

from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import open_tab

pytestmark = pytest.mark.slow

TABLES = ("lab-table", "lab-confusion", "lab-per-class")
#: Every element inside a table that scrolls sideways (its content is wider than what is shown).
_CUT_OFF_JS = """(id) => {
  const out = [];
  document.getElementById(id).querySelectorAll('*').forEach(e => {
    const s = getComputedStyle(e);
    if (e.scrollWidth > e.clientWidth + 1 && s.overflowX !== 'visible') out.push([e.className, e.scrollWidth, e.clientWidth]);
    if (s.overflow === 'visible' && e.getBoundingClientRect().right > document.getElementById(id).getBoundingClientRect().right + 1)
      out.push([e.tagName, 'past the right edge']);
  });
  return out;
}"""
_BARS_JS = """els => els.map(e => { const r = e.getBoundingClientRect();
  return {k: e.dataset.k, metric: e.dataset.metric, left: r.left, right: r.right, height: r.height,
          fill: getComputedStyle(e).fill}; })"""


def start_run(page, shots: str, limit: int) -> None:
    open_tab(page, "lab")
    page.locator("#lab-shots textarea, #lab-shots input").first.fill(shots)
    box = page.locator("#lab-limit input")
    box.fill(str(limit))
    box.press("Tab")
    page.locator("#lab-run").click()


def drawn(page) -> tuple[list[str], list[dict]]:
    """The chart's k labels and its bars, as the browser lays them out."""
    ticks = page.eval_on_selector_all("#lab-chart .k-tick", "els => els.map(e => e.textContent)")
    return ticks, page.eval_on_selector_all("#lab-chart rect.bar", _BARS_JS)


def check_bars(bars: list[dict], ks: list[str]) -> None:
    """Three bars per k, side by side (no two overlap), one colour per metric, the same in every group."""
    assert [b["k"] for b in bars] == [k for k in ks for _ in range(3)], bars
    for k in ks:
        group = sorted((b for b in bars if b["k"] == k), key=lambda b: b["left"])
        assert all(a["right"] <= b["left"] + 0.5 for a, b in itertools.pairwise(group)), group  # none covers another
        assert len({b["fill"] for b in group}) == 3, group
    colours = {(b["metric"], b["fill"]) for b in bars}
    assert len(colours) == 3, colours  # each metric keeps its colour across k


def check_not_cut_off(page) -> None:
    for table in TABLES:
        assert page.evaluate(_CUT_OFF_JS, table) == [], f"#{table} is cut off"


def no_time_left(page) -> None:
    """Neither the status nor anything else in the tab still counts down."""
    tab = page.locator('[role="tabpanel"]').filter(visible=True).last.inner_text()
    assert not re.search(r"\bleft\b", tab), tab


def test_lab_run_from_the_page_fills_the_results_and_a_readable_chart(page):
    start_run(page, "0,1,3", 9)
    expect(page.locator("#lab-status")).to_contain_text("Done", timeout=120_000)
    cells = page.locator("#lab-table").inner_text().split("invalid %", 1)[1].split()
    # one row per k: k, n, accuracy, macro F1, weighted F1, invalid % (after the headers)
    rows = [cells[i : i + 6] for i in range(0, len(cells), 6)]
    assert [r[0] for r in rows] == ["0", "1", "3"] and all(r[1] == "9" for r in rows), cells
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows)
    assert "score · template instruct" in page.locator("#lab-status").inner_text()
    ticks, bars = drawn(page)
    assert ticks == ["0", "1", "3"]  # whole numbers, only the k that ran (not 0.0, 0.2, …)
    check_bars(bars, ticks)
    conf = page.locator("#lab-confusion").inner_text()
    assert all(label in conf for label in ("negative", "neutral", "positive"))
    check_not_cut_off(page)
    no_time_left(page)
    # No error toast: every value the page sent passed validation.
    assert page.locator(".toast-body.error, .toast-wrap .error").count() == 0


def test_a_single_k_draws_a_chart(page):
    start_run(page, "0", 6)
    expect(page.locator("#lab-status")).to_contain_text("Done", timeout=120_000)
    ticks, bars = drawn(page)
    assert ticks == ["0"]
    check_bars(bars, ["0"])
    values = page.locator("#lab-chart").text_content()
    assert re.search(r"\d\.\d\d", values), values  # each bar has its value written on it
    no_time_left(page)


def test_stop_keeps_the_rows_and_no_time_left(page):
    start_run(page, "0,1,3,5", 0)  # all 150 rows × 4 k: far from done when Stop is pressed
    status = page.locator("#lab-status")
    expect(status).to_contain_text("left", timeout=120_000)  # running: progress with time left
    page.get_by_role("button", name="Stop").click()
    expect(status).to_contain_text("Stopped", timeout=30_000)
    page.wait_for_timeout(1500)  # a late update of the run would land now
    assert "Stopped" in status.inner_text()
    no_time_left(page)
    ticks, bars = drawn(page)
    assert ticks and ticks[0] == "0"
    check_not_cut_off(page)  # "n" reads e.g. "40/150" now, wider than a whole run's
