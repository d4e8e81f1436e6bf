"""Screenshots of the token probabilities (issue 15) for the docs, and one recorded branch.

Starts the real app (as bench/screenshots.py does; ``--url`` uses one already running), then in Debian's
chromium: in the Local tab, with "Show token probabilities" ticked, sends "The capital of France is"
(greedy), selects the first token (its alternatives charted), continues from an alternative of it, then opens
the next-token explorer after "is" in the new answer and shows it at temperature 0 and at 1.5 (top-k 10, one
token sampled with a seed). Writes into ``--out`` (default ``docs/``):

- ``token_probabilities.png``: the shaded answer with the first token's alternatives;
- ``next_token_t0.png`` / ``next_token_t15.png``: the explorer at temperature 0 and 1.5;

and the branch, as text, to ``--branch`` (the prompt, the answer, the token replaced and by what, the answer
after). Usage::

    .venv/bin/python bench/screenshots_tokens.py
    .venv/bin/python bench/screenshots_tokens.py --url http://127.0.0.1:7860/ --out /tmp/shots
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from screenshots import start_app  # noqa: E402

from tests.browser.conftest import CHROMIUM, DEFAULT_TIMEOUT_MS, VIEWPORT, chromium_args  # noqa: E402
from tests.browser.token_steps import (  # noqa: E402
    BARS,
    answer_text,
    ask_with_probabilities,
    explore,
    plain,
    read_from_here,
    select_token,
)

PROMPT = "The capital of France is"
#: The alternative to continue with, when the model offers it (else the first other word it offers).
PREFERRED = "The"


def branch(page) -> dict[str, str]:
    """Continue from the first token with :data:`PREFERRED` (or another word); what happened, as text."""
    from playwright.sync_api import expect

    before = answer_text(page)
    alternatives = select_token(page, 0)
    words = [i for i, (label, chosen) in enumerate(alternatives) if not chosen and plain(label).strip().isalpha()]
    pick = next((i for i in words if plain(alternatives[i][0]) == PREFERRED), words[0])
    page.locator(BARS).nth(pick).click()
    page.locator("#local-tok-continue").click()
    expect(page.locator("#local-tok-restore")).to_be_visible(timeout=240_000)
    note = page.locator("#local-tok-answer .tok-note").last.inner_text()
    return {"before": before, "note": note, "after": answer_text(page)}


def run(url: str, out: Path, branch_file: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args())
        ctx = browser.new_context(viewport=VIEWPORT)
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = ctx.new_page()
        page.goto(url)
        ask_with_probabilities(page, PROMPT)
        select_token(page, 0)
        page.mouse.move(0, 0)
        page.locator("#local-tok").screenshot(path=str(out / "token_probabilities.png"))
        done = branch(page)
        tokens = page.locator("#local-tok-answer [data-i]").all_text_contents()
        # The explorer where the capital comes: after "... is" in the new answer (else after its first token).
        after_is = next((i + 1 for i, t in enumerate(tokens[:-1]) if t.strip() == "is"), 1)
        read_from_here(page, after_is)
        explore(page, 0)
        page.locator("#local-nt").screenshot(path=str(out / "next_token_t0.png"))
        explore(page, 1.5, top_k=10)
        page.locator("#local-nt-seed textarea").fill("7")
        page.locator("#local-nt-sample").click()
        page.locator("#local-nt-drawn").get_by_text("seed 7").wait_for()
        page.locator("#local-nt").screenshot(path=str(out / "next_token_t15.png"))
        browser.close()
    text = (
        f"Local tab, llama.cpp, greedy (do_sample off), embedded SmolLM2-135M-Instruct.\n"
        f"Prompt (user message): {PROMPT}\n\n"
        f"Answer:\n{done['before']}\n\n{done['note']}\n\n"
        f"Answer after the branch (the alternative, then what the model wrote after it):\n{done['after']}\n"
    )
    print(text)
    if branch_file is not None:
        branch_file.write_text(text, encoding="utf-8")
    print(f"wrote {out / 'token_probabilities.png'}, next_token_t0.png, next_token_t15.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an app already running (default: start one)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--branch", type=Path, default=None, help="write the recorded branch here")
    args = ap.parse_args()
    with ExitStack() as stack:
        url = args.url or start_app(stack, Path(tempfile.mkdtemp(prefix="shots-")))
        run(url, args.out, args.branch)


if __name__ == "__main__":
    main()
