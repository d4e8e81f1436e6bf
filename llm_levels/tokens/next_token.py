"""The next-token explorer's data: the most likely next tokens after a conversation, from a local engine.

:func:`next_token_distribution` reads the model's own distribution for the token after the prompt (the
conversation rendered with the chat template and the generation prompt, then the started answer when the
conversation ends with an assistant message): ``softmax(logits)``, before any sampling setting reshapes it
(:mod:`.sampling` shows what temperature, top-k and top-p then do to it). One forward pass: it does not
wait in the engine's line for generations (llama.cpp fits it into its own slots).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core import Backend, BackendError, Message, check_conversation
from ..engine import LLAMA_CPP, TRANSFORMERS

#: Most next tokens one request may ask for (as OpenAI's ``top_logprobs``).
MAX_TOKENS = 20


@dataclass(frozen=True)
class NextToken:
    """A candidate next token: the text it adds to the answer (a special token by name, e.g. ``<|im_end|>``,
    with ``special`` set: it would end the answer), its probability, and its id in the model's vocabulary."""

    token: str
    probability: float
    id: int | None = None
    special: bool = False


@dataclass(frozen=True)
class Distribution:
    """The most likely next tokens (most likely first) and where they come from."""

    tokens: tuple[NextToken, ...]
    engine: str
    model: str
    #: Tokens in the prompt the model read (with the started answer, if any).
    prompt_tokens: int

    @property
    def other(self) -> float:
        """The probability of every token not listed, together."""
        return max(0.0, 1.0 - sum(t.probability for t in self.tokens))

    def to_json(self) -> dict[str, Any]:
        """The distribution as JSON (what the Gradio API ``next_token`` returns, with the reshaped bars)."""
        return {
            "engine": self.engine,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "other": self.other,
            "tokens": [
                {"token": t.token, "probability": t.probability, "id": t.id, "special": t.special} for t in self.tokens
            ],
        }


def next_token_distribution(backend: Backend, messages: Sequence[Message], k: int = MAX_TOKENS) -> Distribution:
    """The ``k`` most likely next tokens after ``messages`` (1 to :data:`MAX_TOKENS`) on a local backend.

    ``messages`` may end with an assistant message: then the tokens that would come next in that answer.
    Raises :class:`BackendError` for a hosted backend or a bad conversation.
    """
    if not 1 <= int(k) <= MAX_TOKENS:
        raise BackendError(f"Ask for 1 to {MAX_TOKENS} next tokens (got {k}).", kind="bad_request", status=400)
    check_conversation(messages)
    engine = getattr(backend, "engine", None)
    if engine == LLAMA_CPP:
        tokens, n = _llama_cpp(backend, messages, int(k))
    elif engine == TRANSFORMERS:
        tokens, n = _transformers(backend, messages, int(k))
    else:
        raise BackendError(
            "The next-token explorer needs a local engine (llama.cpp or transformers): a hosted API gives at most "
            "the probabilities of the tokens of its answer.",
            kind="bad_request",
            status=400,
        )
    return Distribution(tokens, str(engine), backend.model, n)


def _llama_cpp(backend: Any, messages: Sequence[Message], k: int) -> tuple[tuple[NextToken, ...], int]:
    """llama.cpp's raw completion of the prompt's token ids, one token, with ``n_probs`` (its probabilities
    before sampling); special tokens (empty text) are named with llama.cpp's detokenizer."""
    prompt = backend.prepare(messages, 1)
    loaded = backend.loaded
    out = loaded.complete({"prompt": list(prompt.ids), "n_predict": 1, "n_probs": k, "temperature": 0.0})
    if not isinstance(out, dict) or out.get("error"):
        err = out.get("error") if isinstance(out, dict) else out
        raise BackendError(f"llama.cpp could not read the next token: {str(err)[:300]}", kind="internal", status=500)
    try:
        top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise BackendError("llama.cpp gave no next-token probabilities.", kind="internal", status=500) from None
    tokens = []
    for a in top:
        text, special = str(a.get("token", "")), False
        if not text and not a.get("bytes"):  # a special token (an end token): llama.cpp shows it as ""
            text, special = loaded.detokenize([int(a["id"])]), True
        tokens.append(NextToken(text, math.exp(float(a["logprob"])), int(a["id"]), special))
    return tuple(tokens), len(prompt.ids)


def _transformers(backend: Any, messages: Sequence[Message], k: int) -> tuple[tuple[NextToken, ...], int]:
    """One forward pass of the transformers model over the prompt: ``softmax`` of the last position's logits."""
    import torch

    prompt = backend.prepare(messages, 1)
    loaded = backend.loaded
    model, tok = loaded.model, loaded.tokenizer
    ids = torch.tensor([prompt.ids], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        if loaded.is_seq2seq:
            start = model.generation_config.decoder_start_token_id
            if start is None:
                start = model.config.decoder_start_token_id
            dec = torch.tensor([[start]], dtype=torch.long, device=model.device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec).logits
        else:
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    probs = torch.softmax(logits[0, -1].float(), dim=-1)
    values, top = torch.topk(probs, min(k, probs.shape[-1]))
    specials = set(getattr(tok, "all_special_ids", []) or [])
    # Each token's text as it adds to the prompt's last token (tokenizers that drop a leading space alone).
    context = [] if loaded.is_seq2seq else list(prompt.ids[-1:])
    base = tok.decode(context, skip_special_tokens=True)
    tokens = []
    for i, p in zip(top.tolist(), values.tolist()):
        if i in specials:
            tokens.append(NextToken(str(tok.decode([i], skip_special_tokens=False)), float(p), i, True))
        else:
            text = str(tok.decode([*context, i], skip_special_tokens=True))
            tokens.append(NextToken(text[len(base) :] if text.startswith(base) else text, float(p), i, False))
    return tuple(tokens), len(prompt.ids)
