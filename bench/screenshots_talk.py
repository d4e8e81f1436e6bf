"""Screenshots of talk mode for the README and the closing note: docs/talk_level2.png (a level-2 step,
temperature 0 vs 2) and docs/talk_lab.png (the Lab step beside the article's numbers).

Drives an app that is already running (``--url``, default http://127.0.0.1:7860/) with Debian's chromium:
opens ``/?talk=default``, runs the steps with the keyboard (→) up to the ones shown, and saves them. Usage::

    .venv/bin/python bench/screenshots_talk.py --url http://127.0.0.1:7860/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_levels.talks import load_talk  # noqa: E402
from tests.browser.conftest import CHROMIUM, chromium_args  # noqa: E402

PENDING = "#talk-answer .talk-card.waiting, #talk-answer .talk-card.answering, #talk-answer .talk-card.idle"
SHOTS = {"Level 2: temperature 0 vs 2": "talk_level2.png", "Lab: zero-shot vs one-shot vs few-shot": "talk_lab.png"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    talk = load_talk("default")
    last = max(i for i, s in enumerate(talk.steps) if s.title in SHOTS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args())
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)
        page.goto(args.url.rstrip("/") + "/?talk=default")
        page.locator("#talk-header", has_text="Step 1 of").wait_for()
        page.wait_for_timeout(1500)  # the page gives up the chat box's focus after opening the talk
        for i, step in enumerate(talk.steps[: last + 1]):
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "([h, p]) => document.querySelector('#talk-header').innerText.includes(h)"
                " && document.querySelectorAll('#talk-answer .talk-card').length > 0 && !document.querySelector(p)",
                arg=[f"Step {i + 1} of", PENDING],
            )
            if step.title in SHOTS:
                page.locator("#talk-note-box").click()  # the speaker note, open
                path = Path(args.out) / SHOTS[step.title]
                page.locator("#talk-presenter").screenshot(path=str(path))
                print("wrote", path)
        browser.close()


if __name__ == "__main__":
    main()
