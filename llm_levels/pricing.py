"""Estimated cost of a hosted request: a small price table, extendable with ``PRICE_FILE``.

Prices are USD per 1 million tokens, input and output. The built-in table below is **approximate**:
it was written from memory of OpenAI's public pricing page as it stood around mid-2025 (see
:data:`BUILTIN_AS_OF`); check https://openai.com/api/pricing before trusting a number. A user adds or
overrides models with a JSON file named by ``PRICE_FILE``::

    {"my-model": {"input": 0.5, "output": 1.5}, "gpt-4o": {"input": 2.5, "output": 10}}

Model ids match **exactly**, with one documented exception: a snapshot dated ``-YYYY-MM-DD`` falls
back to its base id when the snapshot itself is not listed (``gpt-4o-mini-2024-07-18`` ->
``gpt-4o-mini``). Snapshots known to be priced differently from their base are listed on their own
(``gpt-4o-2024-05-13``), and the older four-digit snapshots (``gpt-3.5-turbo-1106``) only match when
listed, since their prices changed between snapshots. Nothing else is guessed: an id that is not in the table costs
"unknown" (``None``), because a wrong price is worse than none. Local models cost nothing but your
hardware (``0.0``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .core import BackendError, Usage

#: When the built-in prices were taken (from memory), shown next to every estimate.
BUILTIN_AS_OF = "mid-2025"
PRICING_NOTE = (f"Approximate prices as of {BUILTIN_AS_OF}, from memory of the provider's public page: "
                "check https://openai.com/api/pricing (or set PRICE_FILE) before relying on them.")
FREE_LABEL = "free (your hardware)"
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True)
class Price:
    """USD per 1M input tokens and per 1M output tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1_000_000


# USD per 1M tokens (input, output). Approximate: see the module docstring.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),  # the first gpt-4o snapshot kept its launch price
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "o1": Price(15.00, 60.00),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-4-0613": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-3.5-turbo-0125": Price(0.50, 1.50),
    "gpt-3.5-turbo-1106": Price(1.00, 2.00),
}

# A dated snapshot suffix in OpenAI's current style: "-2024-07-18".
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def base_model_id(model: str) -> str:
    """The model id without a dated snapshot suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    return _SNAPSHOT.sub("", model.strip())


class PriceTable:
    """The built-in prices with the user's ``PRICE_FILE`` merged over them (read-only once built)."""

    def __init__(self, prices: Mapping[str, Price] | None = None, *, source: str = "built-in",
                 user_models: frozenset[str] = frozenset()) -> None:
        self._prices: dict[str, Price] = dict(BUILTIN_PRICES if prices is None else prices)
        self.source = source
        #: Ids whose price came from the user's PRICE_FILE (not OpenAI's list prices).
        self.user_models = frozenset(user_models)

    @classmethod
    def load(cls, price_file: Path | str | None = None) -> "PriceTable":
        """Built-ins, plus the JSON file (if given) merged over them. A bad file raises BackendError."""
        if price_file is None:
            return cls()
        path = Path(price_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackendError(f"PRICE_FILE {str(path)!r} does not exist: fix the path or unset PRICE_FILE.",
                               kind="config") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BackendError(f"PRICE_FILE {str(path)!r} is not readable JSON ({e}); "
                               'it must look like {"model": {"input": 0.5, "output": 1.5}}.', kind="config") from e
        user = parse_prices(data, origin=f"PRICE_FILE {str(path)!r}")
        merged = dict(BUILTIN_PRICES)
        merged.update(user)
        return cls(merged, source=f"built-in + {path.name}", user_models=frozenset(user))

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``: exact id first, then its undated base id; ``None`` when unknown."""
        hit = self.matched_id(model)
        return None if hit is None else self._prices[hit]

    def matched_id(self, model: str) -> str | None:
        """The table entry :meth:`lookup` uses for ``model`` (itself or its undated base id), or None."""
        model = (model or "").strip()
        if model in self._prices:
            return model
        base = base_model_id(model)
        return base if base != model and base in self._prices else None

    def is_list_price(self, model: str) -> bool:
        """Whether ``model``'s price is one of OpenAI's built-in list prices (not from PRICE_FILE).

        A server other than OpenAI that serves a model under an OpenAI name (a proxy, a test server)
        does not charge OpenAI's price: the UI says so next to the estimate.
        """
        hit = self.matched_id(model)
        return hit is not None and hit not in self.user_models

    def estimate(self, model: str, usage: Usage | None, *, local: bool = False) -> float | None:
        """USD for one request; ``0.0`` for local models; ``None`` when the model or usage is unknown."""
        if local:
            return 0.0
        price = self.lookup(model)
        if price is None or usage is None:
            return None
        return price.cost(usage)

    def models(self) -> list[str]:
        return sorted(self._prices)


def parse_prices(data: object, *, origin: str = "prices") -> dict[str, Price]:
    """Validate ``{"model": {"input": x, "output": y}}`` (numbers >= 0) into :class:`Price` objects."""
    if not isinstance(data, Mapping):
        raise BackendError(f'{origin} must be a JSON object like {{"model": {{"input": 0.5, "output": 1.5}}}}.',
                           kind="config")
    out: dict[str, Price] = {}
    for model, entry in data.items():
        ok = isinstance(entry, Mapping) and all(
            isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool) and entry.get(k) >= 0
            for k in ("input", "output"))
        if not ok or not str(model).strip():
            raise BackendError(f"{origin}: entry {str(model)[:60]!r} needs \"input\" and \"output\" prices "
                               "(USD per 1M tokens, numbers >= 0).", kind="config")
        out[str(model).strip()] = Price(float(entry["input"]), float(entry["output"]))
    return out


_BUILTIN_TABLE = PriceTable()


def estimate_cost(model: str, usage: Usage | None, *, local: bool = False,
                  table: PriceTable | None = None) -> float | None:
    """Estimated USD for one request (built-in prices unless ``table`` is given).

    ``None`` means unknown (a model not in the table); local models cost ``0.0``.
    """
    return (table or _BUILTIN_TABLE).estimate(model, usage, local=local)


def format_cost(cost: float | None, *, local: bool = False) -> str:
    """A short label: ``free (your hardware)``, ``unknown`` or ``$0.000123``."""
    if local:
        return FREE_LABEL
    if cost is None:
        return UNKNOWN_LABEL
    if cost == 0:
        return "$0"
    # Single requests cost fractions of a cent: show enough digits to see them.
    return f"${cost:.6f}" if cost < 0.01 else f"${cost:.4f}"
