"""Estimated cost of a hosted request: list prices from ``genai-prices``, overridable with ``PRICE_FILE``.

List prices come from the `genai-prices <https://pypi.org/project/genai-prices/>`_ package (Pydantic's
maintained table of LLM API prices), using the table bundled with the installed version: nothing is
fetched at run time (its ``UpdatePrices`` background updater is never started), so estimates work
offline and only change when requirements.txt moves the pin. Its model matching is used as it is
(dated snapshots, aliases, case), restricted to OpenAI's price list (see :data:`PRICE_PROVIDER`).

A user adds or overrides models with a JSON file named by ``PRICE_FILE``, in USD per 1 million tokens::

    {"my-model": {"input": 0.5, "output": 1.5}, "gpt-4o": {"input": 2.5, "output": 10}}

``PRICE_FILE`` ids match exactly, or as the base of a dated snapshot (``gpt-4o-2024-08-06`` uses a
``gpt-4o`` entry), and win over the list prices. A model in neither costs "unknown" (``None``),
because a wrong price is worse than none. Local models cost nothing but your hardware (``0.0``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import genai_prices

from .core import BackendError, Usage

#: Whose price list prices a model. The hosted level speaks OpenAI's API, and the UI calls a known
#: price "OpenAI's list price"; a model another provider sells under its own name stays "unknown"
#: rather than being priced by a guess at who serves it.
PRICE_PROVIDER = "openai"
PRICING_NOTE = (
    f"List prices from genai-prices {genai_prices.__version__} (the table shipped with it, not "
    "fetched live): check https://openai.com/api/pricing (or set PRICE_FILE) before relying on them."
)
FREE_LABEL = "free (your hardware)"
UNKNOWN_LABEL = "unknown"

# A dated snapshot suffix in OpenAI's current style: "-2024-07-18".
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    """A user's price from ``PRICE_FILE``: USD per 1M input tokens and per 1M output tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1_000_000


def base_model_id(model: str) -> str:
    """The model id without a dated snapshot suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    return _SNAPSHOT.sub("", model.strip())


def _calc(
    model: str, input_tokens: int, output_tokens: int, provider: str
) -> genai_prices.types.PriceCalculation | None:
    model = (model or "").strip()
    if not model:
        return None
    try:
        return genai_prices.calc_price(
            genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens), model, provider_id=provider
        )
    except LookupError:  # genai-prices' way of saying "no such model (or provider)"
        return None


def list_price(model: str, usage: Usage, *, provider: str = PRICE_PROVIDER) -> float | None:
    """USD for ``usage`` at ``provider``'s list price per genai-prices, or ``None`` when it is not listed."""
    calc = _calc(model, usage.input_tokens, usage.output_tokens, provider)
    return None if calc is None else float(calc.total_price)


def listed_model_id(model: str, *, provider: str = PRICE_PROVIDER) -> str | None:
    """The genai-prices model id that ``model`` matches in ``provider``'s list, or ``None``."""
    calc = _calc(model, 0, 0, provider)
    return None if calc is None else calc.model.id


class PriceTable:
    """List prices (genai-prices) with the user's ``PRICE_FILE`` entries over them; read-only once built."""

    def __init__(
        self,
        user_prices: Mapping[str, Price] | None = None,
        *,
        source: str = "genai-prices",
        provider: str = PRICE_PROVIDER,
    ) -> None:
        self._user: dict[str, Price] = dict(user_prices or {})
        self.source = source
        self.provider = provider
        #: Ids whose price came from the user's PRICE_FILE (not a provider's list price).
        self.user_models = frozenset(self._user)

    @classmethod
    def load(cls, price_file: Path | str | None = None) -> PriceTable:
        """List prices, plus the JSON file (if given) over them. A bad file raises BackendError."""
        if price_file is None:
            return cls()
        path = Path(price_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackendError(
                f"PRICE_FILE {str(path)!r} does not exist: fix the path or unset PRICE_FILE.", kind="config"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BackendError(
                f"PRICE_FILE {str(path)!r} is not readable JSON ({e}); "
                'it must look like {"model": {"input": 0.5, "output": 1.5}}.',
                kind="config",
            ) from e
        user = parse_prices(data, origin=f"PRICE_FILE {str(path)!r}")
        return cls(user, source=f"genai-prices + {path.name}")

    def user_entry(self, model: str) -> str | None:
        """The ``PRICE_FILE`` id that prices ``model`` (itself or its undated base id), or ``None``."""
        model = (model or "").strip()
        if model in self._user:
            return model
        base = base_model_id(model)
        return base if base != model and base in self._user else None

    def matched_id(self, model: str) -> str | None:
        """The entry that prices ``model``: a ``PRICE_FILE`` id, else genai-prices' model id, else None."""
        return self.user_entry(model) or listed_model_id(model, provider=self.provider)

    def is_list_price(self, model: str) -> bool:
        """Whether ``model``'s price is the provider's list price (known, and not from PRICE_FILE).

        A server other than OpenAI that serves a model under an OpenAI name (a proxy, a test server)
        does not charge OpenAI's price: the UI says so next to the estimate.
        """
        return self.user_entry(model) is None and listed_model_id(model, provider=self.provider) is not None

    def estimate(self, model: str, usage: Usage | None, *, local: bool = False) -> float | None:
        """USD for one request; ``0.0`` for local models; ``None`` when the model or usage is unknown."""
        if local:
            return 0.0
        if usage is None:
            return None
        hit = self.user_entry(model)
        if hit is not None:
            return self._user[hit].cost(usage)
        return list_price(model, usage, provider=self.provider)


def parse_prices(data: object, *, origin: str = "prices") -> dict[str, Price]:
    """Validate ``{"model": {"input": x, "output": y}}`` (numbers >= 0) into :class:`Price` objects."""
    if not isinstance(data, Mapping):
        raise BackendError(
            f'{origin} must be a JSON object like {{"model": {{"input": 0.5, "output": 1.5}}}}.', kind="config"
        )
    out: dict[str, Price] = {}
    for model, entry in data.items():
        ok = isinstance(entry, Mapping) and all(
            isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool) and entry.get(k) >= 0
            for k in ("input", "output")
        )
        if not ok or not str(model).strip():
            raise BackendError(
                f"{origin}: entry {str(model)[:60]!r} needs \"input\" and \"output\" prices "
                "(USD per 1M tokens, numbers >= 0).",
                kind="config",
            )
        out[str(model).strip()] = Price(float(entry["input"]), float(entry["output"]))
    return out


_DEFAULT_TABLE = PriceTable()


def estimate_cost(
    model: str, usage: Usage | None, *, local: bool = False, table: PriceTable | None = None
) -> float | None:
    """Estimated USD for one request (list prices unless ``table`` is given).

    ``None`` means unknown (a model nobody priced); local models cost ``0.0``.
    """
    return (table or _DEFAULT_TABLE).estimate(model, usage, local=local)


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
