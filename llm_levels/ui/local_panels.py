"""What the Local tab shows about its model, built from a local backend or the runtime (no Gradio events here).

- :class:`Hood` / :func:`under_the_hood`: the "under the hood" panels of one conversation: the prompt as the
  chat template renders it, its tokens as the engine splits them, and the code for the engine that answers.
- :func:`model_info`: the model line (which model, which engine, how it runs there, or how far its load is).
- :func:`params_from`: the sampling form's raw values as GenParams fields (do_sample off = greedy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core import Message
from ..engine import LLAMA_CPP, TRANSFORMERS
from ..inspection import token_view
from ..runtime import AppRuntime
from ..snippets import local_snippet
from .shared import model_status_fields


@dataclass(frozen=True)
class Hood:
    """The under-the-hood panels of one conversation on one backend."""

    prompt: str
    #: ``(piece, id)`` pairs for the highlighted token view.
    tokens: list[tuple[str, str]]
    #: One line about the tokens (how many; which old turns were left out to fit the context window).
    summary: str
    #: The Python for the engine that runs this backend.
    code: str


def under_the_hood(backend: Any, messages: Sequence[Message], params: Any, settings: Any) -> Hood:
    """The rendered prompt, its tokens (view + summary) and the code for the backend's engine."""
    prompt = backend.prepare(messages, params.max_new_tokens)
    pairs, summary = token_view(prompt_tokens(backend, prompt))
    if prompt.truncated_turns:
        summary += f" The {prompt.truncated_turns} oldest turn(s) were left out to fit the model's context window."
    return Hood(prompt.text, pairs, summary, local_snippet(backend, messages, params, settings, prompt))


def prompt_tokens(backend: Any, prompt: Any) -> list[tuple[int, str]]:
    """(id, piece) for each prompt token, as the backend's own engine splits the text."""
    if getattr(backend, "engine", None) == LLAMA_CPP:
        pairs = backend.loaded.tokenize(prompt.text)
        if [i for i, _ in pairs] == list(prompt.ids):
            return pairs
        # Not the ids the engine was given (should not happen): show those, with llama.cpp's pieces for them.
        pieces = dict(pairs)
        return [(i, pieces.get(i, "")) for i in prompt.ids]
    tok = backend.tokenizer
    return [(i, tok.decode([i])) for i in prompt.ids]


def params_from(
    sample: bool, temp: Any, topk: Any, topp: Any, repp: Any, max_tokens: Any, seed_value: Any
) -> dict[str, Any]:
    """Raw values for GenParams.from_dict (which coerces and checks them); do_sample off = greedy."""
    return {
        "temperature": temp if sample else 0.0,
        "top_k": topk,
        "top_p": topp,
        "repetition_penalty": repp,
        "max_new_tokens": max_tokens,
        "seed": seed_value,
    }


def describe_loaded(loaded: Any) -> str:
    """The model line for a loaded model: the model, the engine that runs it, and how it runs there."""
    engine = getattr(loaded, "engine", TRANSFORMERS)
    head = f"**{loaded.display_name}** · engine **{engine}**"
    if engine == LLAMA_CPP:
        slots = loaded.parallel
        return (
            f"{head} · GGUF weights **{loaded.dtype}** · {loaded.threads} CPU thread"
            f"{'s' if loaded.threads != 1 else ''} · {slots} slot{'s' if slots != 1 else ''} (requests "
            f"decoded together) · context per request {loaded.context_window:,} tokens · "
            f"loaded in {loaded.load_s:.1f} s"
        )
    ctx = f"{loaded.context_window:,} tokens" if loaded.context_window else "unknown"
    return (
        f"{head} · device **{loaded.device}** · dtype **{loaded.dtype}** · "
        f"{loaded.n_params / 1e6:,.1f} M parameters · context window {ctx} · loaded in {loaded.load_s:.1f} s"
        + (" (from the converted cache)" if loaded.from_cache else "")
    )


def model_info(runtime: AppRuntime, spec: str, engine: str | None = None) -> str:
    """The model line for ``spec`` on ``engine``: loaded, loading (how far), failed, or loaded on first use."""
    engine = engine or runtime.settings.local_engine
    loaded = runtime.models.peek(spec, engine=engine)
    if loaded is not None:
        return describe_loaded(loaded)
    f = model_status_fields(runtime.models.status(spec, engine=engine))
    if f["state"] == "loading":
        pct = f" {f['fraction'] * 100:.0f}%" if f["fraction"] is not None else ""
        return f"Loading **{spec}** on **{engine}**…{pct} ({f['message']})"
    if f["state"] == "error":
        return f"❌ Could not load **{spec}** on **{engine}**: {f['error']}"
    if engine == TRANSFORMERS:
        return (
            f"**{spec}** is not loaded on **transformers** yet: it loads on the first message (or press Load). "
            "The first time, a GGUF model is converted to float32 weights (tens of seconds); later loads read "
            "the converted copy."
        )
    return f"**{spec}** is not loaded on **{engine}** yet: it loads on the first message (or press Load)."


def keeps_polling(runtime: AppRuntime, spec: str, engine: str) -> bool:
    """Whether the model line should keep refreshing: while the model loads, or before the start-up
    preload of the default engine's model has begun (another engine's model loads only on request)."""
    state = model_status_fields(runtime.models.status(spec, engine=engine))["state"]
    settings = runtime.settings
    return state == "loading" or (state == "idle" and settings.preload_model and engine == settings.local_engine)
