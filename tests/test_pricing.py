"""Cost estimates: list prices from genai-prices (offline), the user's PRICE_FILE over them, unknown
models stay unknown, local models are free."""

import json
import socket

import genai_prices
import pytest

from llm_levels.core import BackendError, Usage
from llm_levels.pricing import (
    FREE_LABEL,
    PRICING_NOTE,
    UNKNOWN_LABEL,
    PriceTable,
    base_model_id,
    estimate_cost,
    format_cost,
)

USAGE = Usage(input_tokens=1_000_000, output_tokens=2_000_000)


def genai_total(model: str, usage: Usage) -> float:
    """What genai-prices itself says the usage costs at OpenAI's list price."""
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        model,
        provider_id="openai",
    )
    return float(calc.total_price)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-4.1"])
@pytest.mark.parametrize("usage", [USAGE, Usage(input_tokens=12, output_tokens=34)])
def test_a_known_openai_model_costs_what_genai_prices_says(model, usage):
    cost = estimate_cost(model, usage)
    assert cost is not None and cost > 0
    assert cost == pytest.approx(genai_total(model, usage))


def test_input_and_output_are_priced_separately():
    only_in = estimate_cost("gpt-4o-mini", Usage(1_000_000, 0))
    only_out = estimate_cost("gpt-4o-mini", Usage(0, 1_000_000))
    assert 0 < only_in < only_out  # OpenAI charges more for output tokens
    assert estimate_cost("gpt-4o-mini", USAGE) == pytest.approx(only_in + 2 * only_out)


def test_gpt4o_mini_is_not_priced_as_gpt4o():
    assert estimate_cost("gpt-4o-mini", USAGE) != estimate_cost("gpt-4o", USAGE)


def test_prices_come_from_the_bundled_table_without_any_network(monkeypatch):
    """genai-prices ships its table; nothing is fetched (the app never starts its updater)."""

    def no_network(*_a, **_k):
        raise AssertionError("genai-prices tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert PriceTable().estimate("gpt-4o-mini", USAGE) == pytest.approx(genai_total("gpt-4o-mini", USAGE))
    assert genai_prices.data_snapshot.get_snapshot().from_auto_update is False
    assert genai_prices.__version__ in PRICING_NOTE


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-minix",  # a typo of a known id
        "my-local-llama",
        "katan-echo",
        "Qwen/Qwen2.5-7B-Instruct",  # served by vLLM under its own name: not on OpenAI's list
        "claude-3-5-sonnet",  # another provider's model: not guessed from OpenAI's list
        "",
        "   ",
    ],
)
def test_unknown_models_are_unknown_not_guessed(model):
    assert estimate_cost(model, USAGE) is None
    assert format_cost(estimate_cost(model, USAGE)) == UNKNOWN_LABEL
    assert PriceTable().matched_id(model) is None and not PriceTable().is_list_price(model)


def test_local_models_are_free_and_missing_usage_is_unknown():
    assert estimate_cost("anything", USAGE, local=True) == 0.0
    assert estimate_cost("gpt-4o", USAGE, local=True) == 0.0
    assert estimate_cost("gpt-4o", None) is None
    assert format_cost(0.0, local=True) == FREE_LABEL


def test_format_cost_labels():
    assert format_cost(None) == UNKNOWN_LABEL
    assert format_cost(0.0) == "$0"
    assert format_cost(0.000123) == "$0.000123"
    assert format_cost(1.5) == "$1.5000"


def test_price_file_overrides_and_extends_the_list_prices(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "gpt-4o": {"input": 100, "output": 200}}))
    table = PriceTable.load(f)
    assert table.estimate("my-model", Usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert table.estimate("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(100.0)
    # A dated snapshot of an overridden id uses the override, not the list price.
    assert table.estimate("gpt-4o-2024-08-06", Usage(1_000_000, 0)) == pytest.approx(100.0)
    # List prices not named in the file are kept.
    assert table.estimate("gpt-4o-mini", USAGE) == pytest.approx(genai_total("gpt-4o-mini", USAGE))
    assert estimate_cost("my-model", USAGE, table=table) is not None
    assert estimate_cost("my-model", USAGE) is None  # the default table is not changed by a file
    assert table.estimate("my-model", USAGE, local=True) == 0.0


def test_list_prices_are_told_apart_from_user_prices(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "gpt-4o": {"input": 3, "output": 4}}))
    table = PriceTable.load(f)
    assert table.is_list_price("gpt-4o-mini-2024-07-18")
    assert not table.is_list_price("my-model")
    assert not table.is_list_price("gpt-4o")  # overridden by the user
    assert not table.is_list_price("unknown-model")
    assert table.matched_id("my-model") == "my-model"
    listed = genai_prices.calc_price(genai_prices.Usage(), "gpt-4o-mini-2024-07-18", provider_id="openai").model.id
    assert table.matched_id("gpt-4o-mini-2024-07-18") == listed


def test_base_model_id_drops_only_a_dated_suffix():
    assert base_model_id("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert base_model_id("gpt-3.5-turbo-1106") == "gpt-3.5-turbo-1106"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"m": {"input": 1}}),
        json.dumps({"m": {"input": -1, "output": 1}}),
        json.dumps({"m": {"input": "1", "output": 1}}),
        json.dumps({"m": {"input": True, "output": 1}}),
        json.dumps({" ": {"input": 1, "output": 1}}),
    ],
)
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


def test_no_price_file_is_the_list_prices():
    assert PriceTable.load(None).estimate("gpt-4o", USAGE) == pytest.approx(genai_total("gpt-4o", USAGE))
