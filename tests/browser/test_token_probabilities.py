"""Token probabilities in a real browser on the real app and model (the Local tab, llama.cpp, greedy): the answer
as shaded tokens, a token's alternatives, continuing from one of them, Restore, and the next-token explorer.

With ``TOKEN_SCREENSHOTS=<folder>`` set, the tests also save the pictures for the docs there:
``token_probabilities.png`` (the shaded answer with a token's alternatives), ``next_token_t0.png`` and
``next_token_t15.png`` (the explorer at temperature 0 and 1.5); bench/screenshots_tokens.py does the same
on an app that is already running.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import bot_messages
from tests.browser.token_steps import (
    answer_text,
    ask_with_probabilities,
    continue_with,
    explore,
    explorer_bars,
    read_from_here,
    select_token,
)

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


def shot(locator, name: str) -> None:
    """Save a screenshot of ``locator`` as ``name`` in ``TOKEN_SCREENSHOTS`` (when set)."""
    folder = os.environ.get("TOKEN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(Path(folder) / name))


def test_select_a_token_see_its_alternatives_continue_from_one_and_restore(page):
    ask_with_probabilities(page, PROMPT)
    original = answer_text(page)
    chat = bot_messages(page, "local-chat")
    assert chat.last.inner_text().startswith(original.strip()[:20])  # the panel's tokens spell the chat's answer
    alternatives = select_token(page, 0)
    assert len(alternatives) == 5 and sum(chosen for _, chosen in alternatives) == 1  # greedy: its token is listed
    expect(page.locator("#local-tok-alts")).to_contain_text("✓ in the answer")
    shot(page.locator("#local-tok"), "token_probabilities.png")

    branch = continue_with(page, 0)
    # The answer now starts with the chosen token, in the chat and in the panel, and the chat says what changed.
    assert branch.after.startswith(branch.chosen) and branch.after != original
    expect(chat.first).to_contain_text(branch.chosen.strip())
    assert chat.first.inner_text().startswith(branch.chosen.strip())
    expect(page.locator("#local-chat")).to_contain_text("🔀 Branch")

    page.locator("#local-tok-restore").click()
    expect(page.locator("#local-tok-restore")).to_be_hidden()
    assert answer_text(page) == original
    expect(page.locator("#local-chat")).not_to_contain_text("🔀 Branch")
    assert chat.first.inner_text().startswith(original.strip()[:20])


def test_continue_from_a_later_token_keeps_the_answer_before_it(page):
    ask_with_probabilities(page, PROMPT)
    tokens = page.locator("#local-tok-answer [data-i]").all_text_contents()
    index = next(i for i, t in enumerate(tokens) if i >= 2 and t.strip().isalpha())
    branch = continue_with(page, index)
    kept = "".join(tokens[:index])
    assert branch.after.startswith(kept + branch.chosen), (kept, branch)


def test_the_next_token_explorer_greedy_is_one_bar_and_a_seed_draws_the_same_token(page):
    ask_with_probabilities(page, PROMPT)
    read_from_here(page, 0)
    explore(page, 0)
    bars = explorer_bars(page)
    kept = [b for b in bars if not b[2]]
    assert len(bars) == 20 and len(kept) == 1 and kept[0][1].endswith("→ 100.0%")
    assert kept[0][0] == bars[0][0]  # the most likely token
    shot(page.locator("#local-nt"), "next_token_t0.png")

    explore(page, 1.5, top_k=10)
    bars = explorer_bars(page)
    assert [cut for *_, cut in bars] == [False] * 10 + [True] * 10
    assert all("cut by top-k" in text for _, text, cut in bars if cut)
    drawn = []
    for seed in ("7", "8", "7"):  # the same seed twice, another between (so the line changes each time)
        page.locator("#local-nt-seed textarea").fill(seed)
        page.locator("#local-nt-sample").click()
        expect(page.locator("#local-nt-drawn")).to_contain_text(f"seed {seed}:")
        drawn.append(page.locator("#local-nt-drawn").inner_text())
    assert drawn[0] == drawn[2]
    shot(page.locator("#local-nt"), "next_token_t15.png")
