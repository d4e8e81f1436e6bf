"""Generation settings: each parameter's range and meaning (:data:`PARAM_SPECS`, which drives the UI's
sliders) and :class:`GenParams`, validated against them with one message that names every bad value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import BackendError


@dataclass(frozen=True)
class ParamSpec:
    """A generation parameter's range and the sentence that explains it (shown in the UI)."""

    name: str
    value_type: type
    default: Any
    minimum: float | None
    maximum: float | None
    description: str
    nullable: bool = False
    step: float | None = None


PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in (
        ParamSpec(
            "max_new_tokens",
            int,
            256,
            1,
            4096,
            "Most tokens to generate for the answer (a token is about three quarters of a word).",
            step=1,
        ),
        ParamSpec(
            "temperature",
            float,
            0.7,
            0.0,
            2.0,
            "Randomness: 0 always picks the most likely token (greedy); higher is more varied.",
            step=0.05,
        ),
        ParamSpec(
            "top_p",
            float,
            1.0,
            0.01,
            1.0,
            "Nucleus sampling: sample only from the smallest set of tokens whose probability adds up to p.",
            step=0.01,
        ),
        ParamSpec(
            "top_k",
            int,
            0,
            0,
            1000,
            "Sample only from the k most likely tokens; 0 turns it off (local models only).",
            step=1,
        ),
        ParamSpec(
            "repetition_penalty",
            float,
            1.0,
            1.0,
            2.0,
            "Above 1 makes repeating earlier tokens less likely (local models only).",
            step=0.01,
        ),
        ParamSpec(
            "seed",
            int,
            None,
            0,
            2**31 - 1,
            "Fixes the random choices so the same request gives the same answer; empty for random.",
            nullable=True,
            step=1,
        ),
        ParamSpec(
            "top_logprobs",
            int,
            None,
            0,
            20,
            "Report each answer token's probability (the model's own, before temperature, top-k and top-p) "
            "and this many most likely alternatives; empty for off.",
            nullable=True,
            step=1,
        ),
    )
}


@dataclass(frozen=True)
class GenParams:
    """Generation settings, validated against :data:`PARAM_SPECS`.

    ``temperature == 0`` means greedy decoding. ``stop`` holds up to four strings that end the answer.
    Build from untrusted input (the Gradio API, HTTP) with :meth:`from_dict`, which coerces strings
    and reports every bad value in one message.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    #: Per-token probabilities with this many alternatives (None: not asked for).
    top_logprobs: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise BackendError("Invalid settings: " + "; ".join(problems) + ".", kind="bad_request", status=400)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GenParams:
        """Coerce and validate untrusted values (strings from a form, JSON numbers, None)."""
        data = dict(data or {})
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in PARAM_SPECS.values():
            if spec.name not in data:
                continue
            raw = data.pop(spec.name)
            try:
                values[spec.name] = _coerce(spec, raw)
            except ValueError as e:
                problems.append(str(e))
        if "stop" in data:
            raw = data.pop("stop")
            if raw is None or raw == "":
                values["stop"] = ()
            elif isinstance(raw, str):
                values["stop"] = (raw,)
            elif isinstance(raw, (list, tuple)) and all(isinstance(s, str) for s in raw):
                values["stop"] = tuple(raw)
            else:
                problems.append("stop must be a string or a list of strings")
        if data:
            problems.append("unknown setting(s): " + ", ".join(sorted(map(str, data))))
        if problems:
            raise BackendError("Invalid settings: " + "; ".join(problems) + ".", kind="bad_request", status=400)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def with_(self, **changes: Any) -> GenParams:
        return replace(self, **changes)


def _coerce(spec: ParamSpec, raw: Any) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if spec.nullable:
            return None
        return spec.default
    if isinstance(raw, bool):
        raise ValueError(f"{spec.name} must be a number, not {raw!r}")
    try:
        if spec.value_type is int:
            num = float(raw)
            if not math.isfinite(num) or num != int(num):
                raise ValueError
            return int(num)
        num = float(raw)
        if not math.isfinite(num):
            raise ValueError
        return num
    except (TypeError, ValueError, OverflowError):
        shown = repr(raw) if len(repr(raw)) < 40 else repr(raw)[:37] + "..."
        kind = "a whole number" if spec.value_type is int else "a number"
        raise ValueError(f"{spec.name} must be {kind}, not {shown}") from None


def _problems(p: GenParams) -> list[str]:
    out: list[str] = []
    for f in fields(p):
        spec = PARAM_SPECS.get(f.name)
        if spec is None:
            continue
        v = getattr(p, f.name)
        if v is None:
            if not spec.nullable:
                out.append(f"{f.name} is required")
            continue
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (spec.value_type is int and not isinstance(v, int))
        ):
            out.append(f"{f.name} must be {'a whole number' if spec.value_type is int else 'a number'}")
            continue
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{f.name} must be a finite number")
            continue
        if (spec.minimum is not None and v < spec.minimum) or (spec.maximum is not None and v > spec.maximum):
            out.append(f"{f.name} must be between {_fmt(spec.minimum)} and {_fmt(spec.maximum)} (got {_fmt(v)})")
    if not isinstance(p.stop, tuple) or not all(isinstance(s, str) and s for s in p.stop):
        out.append("stop must be a list of non-empty strings")
    elif len(p.stop) > 4:
        out.append("at most 4 stop strings")
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)
