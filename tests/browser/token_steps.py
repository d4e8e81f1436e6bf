"""Playwright steps on the Local tab's token-probabilities panel and next-token explorer, shared by
tests/browser/test_token_probabilities.py and bench/screenshots_tokens.py (selectors live here only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.browser.helpers import open_tab, set_number, type_and_enter

#: A CPU model on a shared machine can take a while for a sentence (and the first answer loads the model).
LONG_MS = 240_000

TOKENS = "#local-tok-answer [data-i]"
BARS = "#local-tok-alts [data-a]"
EXPLORER_BARS = "#local-nt-bars .tok-row"


@dataclass
class Branch:
    """What a continue did: the answer before, the token replaced, the one put in its place, the answer after."""

    before: str
    index: int
    replaced: str
    chosen: str
    after: str


def plain(visible_token: str) -> str:
    """A token as the panel shows it (``␣`` for a space, ``↵`` for a newline) back to its text."""
    return visible_token.replace("␣", " ").replace("↵", "\n").replace("⇥", "\t")


def answer_text(page: Any) -> str:
    """The panel's answer: its tokens' text joined."""
    return "".join(page.locator(TOKENS).all_text_contents())


def ask_with_probabilities(page: Any, prompt: str) -> None:
    """Open the Local tab, tick "Show token probabilities", send ``prompt`` and wait for the shaded tokens."""
    from playwright.sync_api import expect

    open_tab(page, "local")
    page.locator("#local-tok-show input").check()
    type_and_enter(page, "local-input", prompt)
    expect(page.locator(TOKENS).first).to_be_visible(timeout=LONG_MS)


def select_token(page: Any, index: int) -> list[tuple[str, bool]]:
    """Click token ``index``; its alternatives' labels as shown, each with whether it is the answer's token."""
    from playwright.sync_api import expect

    page.locator(TOKENS).nth(index).click()
    expect(page.locator("#local-tok-alts")).to_contain_text(f"Token #{index}")
    bars = page.locator(BARS)
    return [
        (bars.nth(i).locator(".tok-label").inner_text(), "chosen" in (bars.nth(i).get_attribute("class") or ""))
        for i in range(bars.count())
    ]


def continue_with(page: Any, index: int, *, word: bool = True) -> Branch:
    """Select token ``index``, pick the first alternative that is not the answer's token (a word, when
    ``word``: it reads well at the start of a sentence), continue from it, and wait for the new answer."""
    from playwright.sync_api import expect

    before = answer_text(page)
    alternatives = select_token(page, index)
    replaced = next(label for label, chosen in alternatives if chosen) if any(c for _, c in alternatives) else ""
    pick = next(
        i
        for i, (label, chosen) in enumerate(alternatives)
        if not chosen and (not word or plain(label).strip().isalpha())
    )
    page.locator(BARS).nth(pick).click()
    chosen = alternatives[pick][0]
    expect(page.locator("#local-tok-continue")).to_contain_text(f"Continue with {chosen} (")
    page.locator("#local-tok-continue").click()
    expect(page.locator("#local-tok-restore")).to_be_visible(timeout=LONG_MS)
    expect(page.locator("#local-tok-answer")).to_contain_text("was replaced by")
    return Branch(before, index, plain(replaced), plain(chosen), answer_text(page))


def explore(page: Any, temperature: float, *, top_k: int = 0) -> None:
    """In the explorer (already read), set the temperature and top-k and wait for the bars to follow."""
    from playwright.sync_api import expect

    set_number(page, "explorer temperature", temperature)
    set_number(page, "explorer top-k", top_k)
    expect(page.locator("#local-nt-bars")).to_contain_text(f"at temperature {temperature:g}")


def read_from_here(page: Any, index: int) -> None:
    """Select token ``index`` and open the explorer there ("Next-token explorer from here")."""
    from playwright.sync_api import expect

    select_token(page, index)
    page.locator("#local-tok-explore").click()
    expect(page.locator("#local-nt-bars")).to_contain_text("Next token ", timeout=LONG_MS)


def explorer_bars(page: Any) -> list[tuple[str, str, bool]]:
    """Each explorer bar: (token label, the text beside it, whether it is cut)."""
    rows = page.locator(EXPLORER_BARS)
    out = []
    for i in range(rows.count()):
        row = rows.nth(i)
        out.append(
            (
                row.locator(".tok-label").inner_text(),
                row.locator(".tok-value").inner_text(),
                "cut" in (row.get_attribute("class") or "").split(),
            )
        )
    return out
