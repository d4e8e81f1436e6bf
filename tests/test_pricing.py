"""Price table: exact ids, dated snapshots, unknown models, local models, and the user's PRICE_FILE."""

import json

import pytest

from llm_levels.core import BackendError, Usage
from llm_levels.pricing import (BUILTIN_PRICES, FREE_LABEL, UNKNOWN_LABEL, PriceTable, base_model_id,
                                estimate_cost, format_cost)

USAGE = Usage(input_tokens=1_000_000, output_tokens=2_000_000)


def test_exact_id_costs_input_plus_output_per_million():
    p = BUILTIN_PRICES["gpt-4o-mini"]
    assert estimate_cost("gpt-4o-mini", USAGE) == pytest.approx(p.input * 1 + p.output * 2)
    small = Usage(input_tokens=12, output_tokens=34)
    assert estimate_cost("gpt-4o-mini", small) == pytest.approx((12 * p.input + 34 * p.output) / 1e6)


def test_dated_snapshot_falls_back_to_its_base_id():
    assert base_model_id("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert estimate_cost("gpt-4o-mini-2024-07-18", USAGE) == estimate_cost("gpt-4o-mini", USAGE)


def test_listed_snapshot_wins_over_its_base():
    # The first gpt-4o snapshot is priced differently: the exact entry must be used, not the base one.
    assert estimate_cost("gpt-4o-2024-05-13", USAGE) != estimate_cost("gpt-4o", USAGE)
    assert estimate_cost("gpt-4o-2024-05-13", USAGE) == pytest.approx(
        BUILTIN_PRICES["gpt-4o-2024-05-13"].cost(USAGE))


@pytest.mark.parametrize("model", [
    "gpt-4o-mini-audio",        # a different product that merely starts with a known id
    "gpt-4o-minix",
    "GPT-4O-MINI",              # ids are case-sensitive
    "gpt-3.5-turbo-0301",       # old four-digit snapshots only match when listed
    "my-local-llama",
    "",
])
def test_unknown_models_are_unknown_not_guessed(model):
    assert estimate_cost(model, USAGE) is None


def test_gpt4o_mini_is_not_priced_as_gpt4o():
    assert estimate_cost("gpt-4o-mini", USAGE) != estimate_cost("gpt-4o", USAGE)


def test_local_models_are_free_and_missing_usage_is_unknown():
    assert estimate_cost("anything", USAGE, local=True) == 0.0
    assert estimate_cost("gpt-4o", None) is None


def test_format_cost_labels():
    assert format_cost(None) == UNKNOWN_LABEL
    assert format_cost(0.0, local=True) == FREE_LABEL
    assert format_cost(0.000123) == "$0.000123"
    assert format_cost(1.5) == "$1.5000"


def test_price_file_merges_over_builtins(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "gpt-4o": {"input": 100, "output": 200}}))
    table = PriceTable.load(f)
    assert table.estimate("my-model", Usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert table.estimate("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(100.0)
    # Built-ins not named in the file are kept.
    assert table.estimate("gpt-4o-mini", USAGE) == estimate_cost("gpt-4o-mini", USAGE)
    assert estimate_cost("my-model", USAGE, table=table) is not None
    assert estimate_cost("my-model", USAGE) is None  # the default table is not changed by a file


@pytest.mark.parametrize("content", [
    "not json",
    json.dumps([1, 2]),
    json.dumps({"m": {"input": 1}}),
    json.dumps({"m": {"input": -1, "output": 1}}),
    json.dumps({"m": {"input": "1", "output": 1}}),
])
def test_bad_price_file_raises_a_config_error_naming_the_variable(tmp_path, content):
    f = tmp_path / "prices.json"
    f.write_text(content)
    with pytest.raises(BackendError) as e:
        PriceTable.load(f)
    assert e.value.kind == "config"
    assert "PRICE_FILE" in str(e.value)


def test_missing_price_file(tmp_path):
    with pytest.raises(BackendError, match="PRICE_FILE"):
        PriceTable.load(tmp_path / "nope.json")


def test_list_prices_are_told_apart_from_user_prices(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "gpt-4o": {"input": 3, "output": 4}}))
    table = PriceTable.load(f)
    assert table.is_list_price("gpt-4o-mini-2024-07-18")
    assert not table.is_list_price("my-model")
    assert not table.is_list_price("gpt-4o")  # overridden by the user
    assert not table.is_list_price("unknown-model")
    assert table.matched_id("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
