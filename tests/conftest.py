"""Shared test fixtures. Each fixture family lives in tests/fixtures/<name>.py and is registered here."""

import os

# The Hub cannot be reached on these machines: make every load fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.katan",
    "tests.fixtures.app_server",
    "tests.fixtures.hardened_app",
]
