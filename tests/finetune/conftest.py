"""Fixtures for the fine-tuning tests: a tiny random Llama (mechanics, milliseconds) and small labelled sets.

The tiny model's tokenizer splits "negative" and "neutral" into pieces that start alike, so the tiny sets
use two labels whose first tokens differ (``positive`` / ``negative``).
"""

from __future__ import annotations

import pytest

from llm_levels.icl.data import Example
from tests.fixtures.models import cpu_settings

LABELS = ("negative", "positive")
_POS = ["sales rose", "profit up", "orders grew", "record year", "margin improved", "dividend raised", "upgrade"]
_NEG = ["sales fell", "profit down", "orders shrank", "job cuts", "margin narrowed", "dividend cut", "downgrade"]


def rows(texts: list[str], label: str, start: int = 1) -> list[Example]:
    return [Example(f"{t} this quarter", label, start + i, "tiny.csv") for i, t in enumerate(texts)]


@pytest.fixture(scope="session")
def tiny_loaded(tiny_causal_dir):
    from llm_levels.models import load_model

    return load_model(str(tiny_causal_dir), cpu_settings())


@pytest.fixture()
def tiny_train() -> list[Example]:
    return rows(_POS, "positive") + rows(_NEG, "negative", 20)


@pytest.fixture()
def tiny_eval() -> list[Example]:
    return rows(["revenue jumped", "costs soared"], "positive", 50)[:1] + rows(["costs soared"], "negative", 60)
