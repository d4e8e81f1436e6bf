"""Small Playwright helpers shared by the browser tests and bench/screenshots.py (selectors live here only)."""

from __future__ import annotations

from typing import Any

#: The last assistant message of a Chatbot (elem_id given), as rendered.
BOT = '#{chat} [data-testid="bot"]'
#: One Compare answer box (the class sits on the block and on its inner element: take the innermost).
COMPARE_ANSWER = ".compare-answer:not(:has(.compare-answer))"

# Records every distinct text of the last bot message of a Chatbot, with a timestamp, in window.__samples.
_SAMPLER_JS = """(sel) => {
  window.__samples = [];
  let last = null;
  window.__sampler = setInterval(() => {
    const bots = document.querySelectorAll(sel);
    const text = bots.length ? bots[bots.length - 1].innerText : "";
    if (text !== last) { last = text; window.__samples.push([performance.now(), text]); }
  }, 20);
}"""


def open_tab(page: Any, tab_id: str) -> None:
    """Click a top-level tab by its id (chat, api, local, compare, lab)."""
    page.locator(f'button[role="tab"][data-tab-id="{tab_id}"]').click()


def pick_dropdown(page: Any, elem_id: str, option: str) -> None:
    """Choose the option whose visible label contains ``option`` in the gr.Dropdown with this elem_id."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()  # substring: the chosen one starts with "✓"


def set_number(page: Any, label: str, value: int | float) -> None:
    """Type a value into a gr.Slider's number box (its aria-label is "number input for <label>")."""
    box = page.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def bot_messages(page: Any, chat_id: str) -> Any:
    return page.locator(BOT.format(chat=chat_id))


def start_sampling(page: Any, chat_id: str) -> None:
    """Start recording each new text of the chat's last bot message (see :func:`samples`)."""
    page.evaluate(_SAMPLER_JS, BOT.format(chat=chat_id))


def samples(page: Any) -> list[str]:
    """The distinct texts recorded since :func:`start_sampling`, in order; stops the recording."""
    out = page.evaluate("() => { clearInterval(window.__sampler); return window.__samples; }")
    return [text for _t, text in out]
