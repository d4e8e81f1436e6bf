"""Real-browser tests: Playwright drives Debian's chromium against the running app."""
