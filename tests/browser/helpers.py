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


def visible_button(page: Any, name: str) -> Any:
    """The one visible button named ``name`` (each tab has its own Stop; only the open tab's shows)."""
    return page.get_by_role("button", name=name, exact=True).filter(visible=True)


def api_endpoint(page: Any, option: str) -> None:
    """Pick the Hosted API tab's endpoint whose label starts with ``option``, by keyboard (type, Enter)."""
    box = page.locator("#api-endpoint input")
    box.click()
    box.fill(option)
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


def type_and_enter(page: Any, input_id: str, text: str) -> None:
    """Type ``text`` into the gr.Textbox with elem_id ``input_id`` (e.g. ``chat-input``) and press Enter."""
    box = page.locator(f"#{input_id} textarea")
    box.fill(text)
    box.press("Enter")


def toast(page: Any, text: str) -> Any:
    """The toast (gr.Warning / gr.Info / gr.Error pop-up) whose text contains ``text``."""
    return page.locator(".toast-body", has_text=text)


def error_badges(page: Any, *elem_ids: str) -> int:
    """How many red "Error" badges Gradio shows over the components with these elem_ids (it puts one on
    each output of an event that failed, hiding the component's content)."""
    return sum(page.locator(f"#{i}").get_by_text("Error", exact=True).count() for i in elem_ids)


def user_messages(page: Any, chat_id: str) -> Any:
    """The user messages of a Chatbot (elem_id given), as rendered."""
    return page.locator(f'#{chat_id} [data-testid="user"]')
