"""Talk mode in a real browser, offline on the embedded model: the shipped talk end to end with the keyboard,
a dead hosted server's step showing its rehearsal answer, and a talk file with a mistake."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from llm_levels.config import Settings
from llm_levels.talks import RehearsalStore, load_talk, parse_talk
from llm_levels.talks.runner import plan

pytestmark = pytest.mark.slow

CARDS = "#talk-answer .talk-card"
#: A step's cards are final when none is waiting or answering.
PENDING = "#talk-answer .talk-card.waiting, #talk-answer .talk-card.answering, #talk-answer .talk-card.idle"

DEAD_TALK = """\
title: Wi-Fi down
steps:
  - title: "Level 2: the server is down"
    tab: api
    backend: hosted:dead
    prompt: Say hello in one word.
    temperature: 0
    max_tokens: 8
  - title: "Level 3: still here"
    tab: local
    prompt: Say hello in one word.
    temperature: 0
    max_tokens: 8
"""


def wait_for_answers(page, timeout_ms: int = 240_000) -> list[str]:
    expect(page.locator(CARDS).first).to_be_visible()
    page.wait_for_function(
        "([all, pending]) => document.querySelectorAll(all).length > 0 && !document.querySelector(pending)",
        arg=[CARDS, PENDING],
        timeout=timeout_ms,
    )
    return [c.inner_text() for c in page.locator(CARDS).all()]


def test_the_default_talk_runs_end_to_end_with_the_keyboard(browser, app_server):
    talk = load_talk("default")
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    try:
        page.goto(app_server.url + "?talk=default")
        header = page.locator("#talk-header")
        expect(header).to_contain_text(f"Step 1 of {len(talk.steps)} — {talk.steps[0].title}")
        for i, step in enumerate(talk.steps):
            page.keyboard.press("ArrowRight")
            expect(header).to_contain_text(f"Step {i + 1} of {len(talk.steps)} — {step.title}")
            tab = page.locator(f'button[role="tab"][data-tab-id="{step.tab}"]')
            expect(tab).to_have_attribute("aria-selected", "true")  # it switched to the step's tab
            texts = wait_for_answers(page)
            assert all("⚠️" not in t for t in texts), (step.title, texts)  # offline, every step answers
            if step.tab == "lab":
                expect(page.locator("#talk-lab")).to_contain_text("0.4")  # the article's number beside ours
                assert re.search(r"k=|done", page.locator("#talk-answer").inner_text())
            else:
                n = len(step.temperatures) or len(step.backends) or step.n
                assert len(texts) == n, (step.title, texts)
                assert all(len(t.strip().splitlines()) >= 2 for t in texts), texts  # label + answer
            if step.tab == "api":  # the tab's own widgets show the step's request (its first column's)
                first = plan(step)[0].params
                expect(page.locator("#api-input textarea")).to_have_value(step.prompt)
                expect(page.locator("#api-temperature input[type='number']")).to_have_value(f"{first.temperature:g}")
                expect(page.locator("#api-max-tokens input[type='number']")).to_have_value(str(first.max_new_tokens))
        page.keyboard.press("ArrowLeft")
        expect(header).to_contain_text(f"Step {len(talk.steps) - 1} of")
        page.keyboard.press("Escape")
        expect(page.locator("#talk-presenter")).to_be_hidden()
    finally:
        ctx.close()


def test_a_dead_server_shows_the_rehearsal_answer_and_the_talk_goes_on(page, app_server):
    talk = parse_talk(DEAD_TALK, "wifi.yaml")
    store = RehearsalStore(Settings.from_env({}).cache_dir / "talks")
    # As if rehearsed while the server was up (an edited talk keeps the picked talk's records: "default").
    store.record("default", talk.steps[0], ["Hello!"], ["hosted:dead"])
    page.locator('button[role="tab"][data-tab-id="talk"]').click()
    page.locator("#talk-source .cm-content").fill(DEAD_TALK)
    page.locator("#talk-present").click()
    expect(page.locator("#talk-header")).to_contain_text("Step 1 of 2 — Level 2: the server is down")
    page.keyboard.press("ArrowRight")
    texts = wait_for_answers(page)
    assert "recorded at rehearsal, " in texts[0] and "Hello!" in texts[0], texts
    expect(page.locator("#talk-status")).to_contain_text("live answer failed")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#talk-header")).to_contain_text("Step 2 of 2")
    texts = wait_for_answers(page)
    assert "⚠️" not in texts[0] and len(texts[0].splitlines()) >= 2, texts


def test_a_talk_file_with_a_mistake_names_the_line_and_field_and_nothing_breaks(page):
    page.locator('button[role="tab"][data-tab-id="talk"]').click()
    page.locator("#talk-source .cm-content").fill(
        DEAD_TALK.replace("temperature: 0\n    max_tokens: 8\n", "temperature: 5\n", 1)
    )
    page.locator("#talk-check-btn").click()
    expect(page.locator("#talk-check")).to_contain_text("line 7, field 'temperature'")
    page.locator("#talk-present").click()
    expect(page.locator("#talk-check")).to_contain_text("between 0 and 2")
    expect(page.locator("#talk-presenter")).to_be_hidden()
    page.locator('button[role="tab"][data-tab-id="chat"]').click()
    expect(page.locator("#chat-input textarea")).to_be_editable()  # the rest of the app is untouched
