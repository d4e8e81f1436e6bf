"""The Hosted API tab in a real browser: the endpoint's own model right after a switch, answers cut by the
length limit or by Stop tagged so, the raw response readable chunk by chunk."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import api_endpoint, open_tab, set_number, visible_button

pytestmark = pytest.mark.slow

APP_ENDPOINT_LABEL = "This app's local endpoint"


def send(page, text: str) -> None:
    box = page.locator("#api-input textarea")
    box.fill(text)
    box.press("Enter")


def test_a_message_sent_right_after_switching_the_endpoint_uses_that_endpoints_model(page):
    open_tab(page, "api")
    page.locator("#api-input textarea").fill("Say hi.")
    api_endpoint(page, APP_ENDPOINT_LABEL)
    # The switch sets the endpoint's model in the page; on a loaded machine that can take a moment.
    expect(page.locator("#api-model input")).to_have_value("local")
    page.locator("#api-input textarea").press("Enter")
    expect(page.locator("#api-metrics")).to_contain_text("cost", timeout=120_000)
    metrics = page.locator("#api-metrics").inner_text()
    assert "not answered" not in metrics and "· local ·" in metrics, metrics
    expect(page.locator("#api-model input")).to_have_value("local")
    # The model box offers this endpoint's models (both engines), not the previous endpoint's.
    page.locator("#api-model input").click()
    options = page.get_by_role("option").all_inner_texts()
    assert any("local-transformers" in o for o in options) and not any("katan" in o for o in options), options


def test_length_and_stop_tags_and_the_raw_chunks(page):
    open_tab(page, "api")
    api_endpoint(page, APP_ENDPOINT_LABEL)
    expect(page.locator("#api-model input")).to_have_value("local")
    set_number(page, "max tokens", 3)
    send(page, "Describe the sea in detail.")
    chat = page.locator("#api-chat")
    expect(chat).to_contain_text("Cut off at the length limit", timeout=120_000)

    # The Response panel shows each streamed chunk as JSON, its delta's text included (not "Object(4)").
    page.get_by_role("tab", name="Response", exact=True).click()
    panel = page.locator("#api-response")
    expect(panel).to_contain_text('"delta": {"content": ')
    assert "Object(" not in panel.inner_text()
    lines = [json.loads(line) for line in page.locator("#api-response .cm-line").all_inner_texts() if line.strip()]
    text = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in lines)
    assert text.strip() and text.strip() in chat.inner_text()

    set_number(page, "max tokens", 800)
    send(page, "Write a long story about a lighthouse keeper and the sea.")
    bots = page.locator('#api-chat [data-testid="bot"]')
    expect(bots).to_have_count(3, timeout=60_000)  # the first answer and its tag, then this turn's
    expect(bots.last).not_to_contain_text("⏳", timeout=60_000)  # its answer streams (no longer waiting)
    visible_button(page, "Stop").click()
    expect(chat).to_contain_text("Stopped", timeout=30_000)
    expect(page.locator("#api-metrics")).to_contain_text("stopped")
    assert "Not answered" not in chat.inner_text()
