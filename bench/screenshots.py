"""Screenshots of every tab, each after a real prompt, for the README: docs/<tab>.png.

Starts a real llm-katan echo server (the hosted backend: an OpenAI-compatible server that echoes the
request, so no key or internet is needed) and the real app (``.venv/bin/python app.py``) on free ports,
waits for the model, then drives Debian's chromium (Playwright, headless) through each tab, runs a real
prompt there and saves a screenshot at a presenter-friendly viewport. ``--url`` uses an app that is
already running instead (its hosted backend is whatever it was configured with).

Writes ``chat.png``, ``hosted_api.png``, ``local_model.png``, ``compare.png`` and ``lab.png`` into
``--out`` (default ``docs/``). Usage::

    .venv/bin/python bench/screenshots.py
    .venv/bin/python bench/screenshots.py --url http://127.0.0.1:7860/ --out /tmp/shots
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import CHROMIUM, chromium_args  # noqa: E402
from tests.browser.helpers import open_tab, pick_dropdown, set_number  # noqa: E402

VIEWPORT = {"width": 1400, "height": 900}
COMPARE_HEIGHT = 1400  # columns + metrics table + charts in one picture
LONG_MS = 240_000  # a CPU model on a shared machine can take minutes for a paragraph

CHAT_PROMPT = "Give me three tips for a good presentation, as a short bulleted list."
API_PROMPT = "Explain what an API key is, in one sentence."
LOCAL_PROMPT = "What is the capital of France? Answer in one sentence."
COMPARE_PROMPT = "Explain what a large language model is, in one sentence."

# True while any Gradio component shows progress (a running event).
BUSY_JS = "() => document.querySelectorAll('.generating, .pending, .eta-bar').length > 0"


# ------------------------------------------------------------------------------------ starting the app
def _page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_app(stack: ExitStack, log_dir: Path) -> str:
    """A katan echo server and the app configured to use it; both stopped when ``stack`` closes."""
    from tests.fixtures.app_server import stop_app
    from tests.fixtures.katan import free_port, openai_env, start_katan, stop_katan, wait_ready

    katan = start_katan("echo", log_dir, validate_key=True)
    stack.callback(stop_katan, katan)
    wait_ready(katan)
    port = free_port()
    env = openai_env(katan.base_url, katan.api_key, katan.model)
    example = ROOT / ".env.example"
    for name in re.findall(r"^([A-Z][A-Z0-9_]*)=", example.read_text(), flags=re.M) if example.exists() else []:
        env.setdefault(name, "")  # defaults, whatever a local .env says
    env.update(
        {
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(port),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
    )
    log = open(log_dir / "app.log", "wb")
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    stack.callback(stop_app, proc)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while not _page_answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the app did not start; see {log_dir / 'app.log'}")
        time.sleep(0.3)
    return url


# ------------------------------------------------------------------------------------------ the tabs
def wait_idle(page, quiet_ms: int = 1200, timeout_ms: int = LONG_MS) -> None:
    """Wait until no component shows progress for ``quiet_ms`` (the event and its follow-ups ended)."""
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        if page.evaluate(BUSY_JS):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif (time.monotonic() - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(200)


def send(page, box: str, text: str) -> None:
    page.locator(box).fill(text)
    page.locator(box).press("Enter")


def shot(page, path: Path) -> None:
    page.mouse.move(0, 0)  # no hover effects in the picture
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    print(f"wrote {path}", flush=True)


def chat_tab(page, out: Path) -> None:
    from playwright.sync_api import expect

    open_tab(page, "chat")
    page.get_by_text("Settings", exact=True).click()
    pick_dropdown(page, "chat-backend", "Local model (in this app · llama.cpp)")
    set_number(page, "Longest answer (tokens)", 200)
    page.get_by_text("Settings", exact=True).click()  # closed again: a cleaner picture
    send(page, "#chat-input textarea", CHAT_PROMPT)
    expect(page.locator("#chat-metrics")).to_contain_text("tokens/s", timeout=LONG_MS)
    wait_idle(page)
    shot(page, out / "chat.png")


def api_tab(page, out: Path) -> None:
    from playwright.sync_api import expect

    open_tab(page, "api")
    send(page, "#api-input textarea", API_PROMPT)
    expect(page.locator("#api-metrics")).not_to_be_empty(timeout=LONG_MS)
    wait_idle(page)
    shot(page, out / "hosted_api.png")


def local_tab(page, out: Path) -> None:
    from playwright.sync_api import expect

    open_tab(page, "local")
    set_number(page, "max_new_tokens", 60)
    send(page, "#local-input textarea", LOCAL_PROMPT)
    expect(page.locator("#local-metrics")).to_contain_text("tokens/s", timeout=LONG_MS)
    wait_idle(page)
    shot(page, out / "local_model.png")


def compare_tab(page, out: Path) -> None:
    from playwright.sync_api import expect

    open_tab(page, "compare")
    page.get_by_text("Options", exact=True).click()
    set_number(page, "Max new tokens", 48)
    page.get_by_text("Options", exact=True).click()
    page.locator("#compare-prompt textarea").fill(COMPARE_PROMPT)
    page.locator("#compare-run").click()
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=LONG_MS)
    wait_idle(page)
    # The answers, the table and the charts are the point: start the picture at the tabs, make it taller.
    page.set_viewport_size({"width": VIEWPORT["width"], "height": COMPARE_HEIGHT})
    page.mouse.move(0, 0)
    page.locator('[role="tablist"]').first.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)  # the charts draw after the data arrives
    path = out / "compare.png"
    page.screenshot(path=str(path))
    print(f"wrote {path}", flush=True)


def lab_tab(page, out: Path, run: bool = False) -> None:
    """The Lab tab; with ``run``, click its primary button once with the tab's own defaults, then wait."""
    open_tab(page, "lab")
    page.wait_for_timeout(500)
    if run:
        panel = page.locator('[role="tabpanel"]').filter(visible=True).last
        button = panel.locator("button.primary").filter(visible=True)
        if button.count():
            button.first.click()
            page.wait_for_timeout(500)
            wait_idle(page)
    shot(page, out / "lab.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running app (default: start llm-katan and the app here)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs (default docs/)")
    ap.add_argument("--only", nargs="*", choices=["chat", "api", "local", "compare", "lab"], help="only these tabs")
    ap.add_argument(
        "--lab-run",
        action="store_true",
        help="in the Lab tab, click its primary button (with its defaults) before the picture",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import tempfile

    from playwright.sync_api import expect, sync_playwright

    steps = {"chat": chat_tab, "api": api_tab, "local": local_tab, "compare": compare_tab, "lab": lab_tab}
    with ExitStack() as stack:
        url = args.url or start_app(stack, Path(tempfile.mkdtemp(prefix="llm-levels-shots-")))
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args())
        stack.callback(browser.close)
        for name, step in steps.items():
            if args.only and name not in args.only:
                continue
            ctx = browser.new_context(viewport=VIEWPORT)  # a fresh session per tab: no leftovers
            ctx.set_default_timeout(60_000)
            page = ctx.new_page()
            page.goto(url)
            expect(page.locator("#model-status")).to_contain_text("ready", timeout=LONG_MS)
            try:
                if name == "lab":
                    lab_tab(page, args.out, run=args.lab_run)
                else:
                    step(page, args.out)
            finally:
                ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
