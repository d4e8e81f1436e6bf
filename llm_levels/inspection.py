"""Turn what a backend saw and did into things a UI can show: JSON views, token pieces, metric rows.

Used by the "under the hood" panels of the Hosted-API and Local tabs. Everything here is pure data
shaping (no Gradio, no model): a raw request/response becomes JSON-safe and key-free, prompt tokens
become ``(piece, id)`` pairs for a highlighted view, a turn's numbers become one table row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import TurnMetrics

#: Field names whose values are never shown (requests carry no key, but be safe if one ever does).
SECRET_FIELDS = frozenset({"api_key", "apikey", "authorization", "x-api-key", "password", "token"})
HIDDEN = "[hidden]"
#: Longest token list shown in the Local tab; longer prompts show their first and last tokens.
MAX_TOKENS_SHOWN = 600
#: Stream chunks shown in the raw-response panel (first ones and the last ones, with a note between).
MAX_CHUNKS_SHOWN = 60

API_METRIC_COLUMNS = ["Turn", "Model", "In tokens", "Out tokens", "TTFT (s)", "Total (s)", "Tokens/s", "Cost"]
LOCAL_METRIC_COLUMNS = [
    "Turn",
    "Model",
    "In tokens",
    "Out tokens",
    "TTFT (s)",
    "Total (s)",
    "Tokens/s",
    "RSS (MB)",
    "CUDA (MB)",
]


# ------------------------------------------------------------------------------------------ JSON
def to_jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj``: pydantic models (the ``openai`` types), dataclasses, mappings, lists."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, Mapping):
        try:
            return to_jsonable(obj.to_dict())
        except Exception:  # noqa: BLE001 - fall through to the generic forms
            pass
    if hasattr(obj, "model_dump") and callable(obj.model_dump):
        try:
            return to_jsonable(obj.model_dump(mode="json"))
        except Exception:  # noqa: BLE001
            pass
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def scrub(obj: Any, redact: Callable[[str], str] | None = None) -> Any:
    """``obj`` as JSON-safe data with secret-named fields hidden and every string passed through ``redact``.

    ``redact`` is e.g. ``SecretRegistry.redact`` (masks the configured keys and keys sessions typed).
    """
    data = to_jsonable(obj)

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: (HIDDEN if k.lower() in SECRET_FIELDS and x[k] else walk(v)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, str) and redact is not None:
            return redact(x)
        return x

    return walk(data)


def request_view(request: Mapping[str, Any] | None, redact: Callable[[str], str] | None = None) -> Any:
    """The raw request body for display (``None`` before the first request)."""
    return None if request is None else scrub(request, redact)


def response_view(response: Any, redact: Callable[[str], str] | None = None, max_chunks: int = MAX_CHUNKS_SHOWN) -> Any:
    """The raw response for display: one JSON object, or a stream's chunks (first and last ones kept)."""
    if response is None:
        return None
    data = scrub(response, redact)
    if isinstance(data, list) and len(data) > max_chunks:
        head = max_chunks - 10
        skipped = len(data) - max_chunks
        data = data[:head] + [{"note": f"{skipped} more chunks not shown"}] + data[-10:]
    return data


# ---------------------------------------------------------------------------------------- tokens
def visible_piece(piece: str) -> str:
    """A token's text with invisible characters made visible.

    Space -> ``␣`` (most word tokens *start* with one, which is worth seeing), ``\\n`` -> ``↵``,
    tab -> ``⇥``, ``\\r`` -> ``␍``, an empty piece -> ``∅``.
    """
    if piece == "":
        return "∅"
    return piece.replace(" ", "␣").replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def token_view(tokens: Sequence[tuple[int, str]], cap: int = MAX_TOKENS_SHOWN) -> tuple[list[tuple[str, str]], str]:
    """``(piece, id)`` pairs for a highlighted-text view, and a one-line summary.

    Prompts longer than ``cap`` tokens show their first and last ``cap // 2`` tokens with a marker
    between, so a long conversation does not flood the page.
    """
    n = len(tokens)
    pairs = [(visible_piece(piece), str(tid)) for tid, piece in tokens]
    if n > cap:
        half = cap // 2
        pairs = pairs[:half] + [(f" … {n - 2 * half} tokens not shown … ", None)] + pairs[-half:]  # type: ignore[list-item]
        summary = f"{n:,} tokens in the prompt (showing the first {half} and the last {half})."
    else:
        summary = f"{n:,} tokens in the prompt. Each box is one token; the number is its id in the vocabulary."
    return pairs, summary


# --------------------------------------------------------------------------------------- metrics
def memory_snapshot(device: str = "cpu") -> dict[str, float | None]:
    """This process's resident memory (MB) and, on CUDA, the GPU memory torch holds (MB)."""
    rss = None
    try:
        import psutil

        rss = psutil.Process(os.getpid()).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - memory is a nice-to-have, never a failure
        pass
    cuda = None
    if str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                cuda = torch.cuda.memory_allocated() / 2**20
        except Exception:  # noqa: BLE001
            pass
    return {"rss_mb": rss, "cuda_mb": cuda}


def _num(x: float | int | None, digits: int) -> float | int | str:
    if x is None:
        return "–"
    if digits == 0:
        return round(x)
    return round(x, digits)


def api_metrics_row(turn: int, m: TurnMetrics, cost: str) -> list[Any]:
    """One row of :data:`API_METRIC_COLUMNS`."""
    return [
        turn,
        m.model,
        _num(m.input_tokens, 0),
        _num(m.output_tokens, 0),
        _num(m.ttft_s, 3),
        _num(m.total_s, 3),
        _num(m.tokens_per_s, 1),
        cost,
    ]


def local_metrics_row(
    turn: int, m: TurnMetrics, memory: Mapping[str, float | None], model: str | None = None
) -> list[Any]:
    """One row of :data:`LOCAL_METRIC_COLUMNS` (``model``: what the Model column says, default ``m.model``)."""
    return [
        turn,
        m.model if model is None else model,
        _num(m.input_tokens, 0),
        _num(m.output_tokens, 0),
        _num(m.ttft_s, 3),
        _num(m.total_s, 3),
        _num(m.tokens_per_s, 1),
        _num(memory.get("rss_mb"), 0),
        _num(memory.get("cuda_mb"), 0),
    ]


def memory_text(memory: Mapping[str, float | None]) -> str:
    """``RSS 1,234 MB · CUDA 56 MB`` for a :func:`memory_snapshot` (``memory unknown`` when neither is)."""
    parts = []
    if memory.get("rss_mb") is not None:
        parts.append(f"RSS {memory['rss_mb']:,.0f} MB")
    if memory.get("cuda_mb") is not None:
        parts.append(f"CUDA {memory['cuda_mb']:,.0f} MB")
    return " · ".join(parts) or "memory unknown"
