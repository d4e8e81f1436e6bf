"""Screenshots of talk mode for the README and the closing note: docs/talk_level2.png (a level-2 step,
temperature 0 vs 2) and docs/talk_lab.png (the Lab step beside the article's numbers).

Drives an app that is already running (``--url``, default http://127.0.0.1:7860/) with Debian's chromium:
opens ``/?talk=default``, runs the steps with the keyboard (→) up to the ones shown, and saves each with its
speaker note open. Usage (an app of your own on a free port)::

    GRADIO_SERVER_PORT=7871 .venv/bin/python app.py &
    .venv/bin/python bench/screenshots_talk.py --url http://127.0.0.1:7871/

It waits as tests/browser/test_talk.py does: for the header to name the step, then for every answer card to
be final. The Lab step loads the transformers engine and scores the demo set: minutes on a busy CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from llm_levels.talks import load_talk  # noqa: E402
from tests.browser.conftest import CHROMIUM, chromium_args  # noqa: E402

CARDS = "#talk-answer .talk-card"
IDLE = "#talk-answer .talk-card.idle"
PENDING = f"#talk-answer .talk-card.waiting, #talk-answer .talk-card.answering, {IDLE}"
SHOTS = {"Level 2: temperature 0 vs 2": "talk_level2.png", "Lab: zero-shot vs one-shot vs few-shot": "talk_lab.png"}
#: Milliseconds one step may take (the Lab step loads the transformers engine first).
STEP_TIMEOUT_MS = 900_000
#: Times → is pressed for one step before giving up.
PRESSES = 5


def run_step(page, header: str) -> list[str]:
    """Press → and wait for the step's answers (as tests/browser/test_talk.py does).

    The press goes to the page's key handler with nothing focused (a focused text box keeps its keys). A press
    that lands while the previous step's event is still finishing is dropped by the page (a button's event
    runs once at a time), so the key is pressed again until the step has started: its header shown, the
    "Press →" card gone.
    """
    started = (
        "([h, idle]) => document.querySelector('#talk-header').innerText.includes(h) && !document.querySelector(idle)"
    )
    for _ in range(PRESSES):
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press("ArrowRight")
        try:
            page.wait_for_function(started, arg=[header, IDLE], timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        raise SystemExit(f"→ did not start {header!r} after {PRESSES} presses")
    page.wait_for_function(
        "([all, pending]) => document.querySelectorAll(all).length > 0 && !document.querySelector(pending)",
        arg=[CARDS, PENDING],
        timeout=STEP_TIMEOUT_MS,
    )
    return [c.inner_text() for c in page.locator(CARDS).all()]


def open_note(page) -> None:
    """Unfold the speaker note (it stays open from one step to the next: a second click would fold it)."""
    toggle = page.locator("#talk-note-box .label-wrap")
    if "open" not in (toggle.get_attribute("class") or ""):
        toggle.click()
    page.locator("#talk-note").wait_for()


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
        page.set_default_timeout(120_000)
        page.goto(args.url.rstrip("/") + "/?talk=default")
        page.locator("#talk-header", has_text="Step 1 of").wait_for()
        for i, step in enumerate(talk.steps[: last + 1]):
            started = time.monotonic()
            texts = run_step(page, talk.header(i))
            print(
                f"step {i + 1} ({step.title}): {len(texts)} answers in {time.monotonic() - started:.0f} s", flush=True
            )
            if step.title in SHOTS:
                open_note(page)
                page.wait_for_timeout(500)  # the note's unfolding animation
                path = Path(args.out) / SHOTS[step.title]
                page.locator("#talk-presenter").screenshot(path=str(path))
                print("wrote", path, flush=True)
        browser.close()


if __name__ == "__main__":
    main()
