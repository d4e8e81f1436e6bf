"""Fixtures for the real-browser tests: Playwright (sync API) driving Debian's chromium, headless.

- ``browser`` (module): one chromium per test module, ``/usr/bin/chromium`` (never a downloaded browser).
  As root, chromium refuses to start without ``--no-sandbox``. Not session-scoped on purpose: Playwright's
  sync API keeps its asyncio loop marked as running while it is open, which would make every later
  ``asyncio.run()`` in the same pytest session fail (e.g. tests/test_server.py's async client tests).
- ``new_page`` (function): a factory of pages, each in its *own* browser context (own cookies and
  storage, so its own Gradio session) at the presenter viewport, already showing the app and waiting
  until the page is interactive.
- ``page``: one such page.

The app is ``app_server`` (tests/fixtures/app_server.py): the real ``app.py`` with the model loaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
#: Milliseconds Playwright waits for an element or an expect() by default: a shared 2-core machine is slow.
DEFAULT_TIMEOUT_MS = 30_000


def chromium_args() -> list[str]:
    """Command-line flags for chromium: no sandbox as root (it refuses to start otherwise)."""
    return ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def browser():
    """One headless Debian chromium per module (``make test`` installs it when missing)."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser, app_server) -> Iterator[Callable[[], object]]:
    """Open a fresh page (own browser context = own Gradio session) on the app; returns the page."""
    from playwright.sync_api import expect

    contexts = []

    def open_page():
        ctx = browser.new_context(viewport=VIEWPORT)
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.goto(app_server.url)
        expect(pg.locator("#chat-input textarea")).to_be_editable()
        return pg

    yield open_page
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_page):
    """A page showing the app, in a fresh browser context."""
    return new_page()
