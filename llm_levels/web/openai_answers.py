"""Answers in OpenAI's wire format, built from the ``openai`` package's own types.

A non-streamed answer is one :class:`~openai.types.chat.ChatCompletion`; a streamed one is server-sent
events, each a :class:`~openai.types.chat.ChatCompletionChunk`: a first chunk with the assistant's role,
one per piece of text, a last one with the finish reason, with ``stream_options.include_usage`` one more
with empty ``choices`` and the usage, then ``data: [DONE]``. Per-token probabilities come as
:class:`~openai.types.chat.ChatCompletionTokenLogprob` lists. Objects are dumped with ``exclude_unset``,
so a field is on the wire exactly when it is set here (``"logprobs": null`` and ``"usage": null`` as
OpenAI sends them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage, ChatCompletionTokenLogprob
from openai.types.chat import chat_completion_chunk as chunk_types
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob

from ..core import TokenLogprob
from ..turns import Done

#: The last event of every streamed answer.
SSE_DONE = b"data: [DONE]\n\n"


def token_logprobs(tokens: Iterable[TokenLogprob], shape: Any = ChoiceLogprobs) -> Any:
    """Per-token probabilities in OpenAI's ``choice.logprobs`` ``shape`` (a completion's or a chunk's);
    None when there are none."""
    content = [
        ChatCompletionTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode("utf-8")),
            top_logprobs=[TopLogprob(token=a, logprob=lp, bytes=list(a.encode("utf-8"))) for a, lp in t.top],
        )
        for t in tokens
    ]
    return shape(content=content, refusal=None) if content else None


def usage_of(*answers: Done | None) -> CompletionUsage | None:
    """The token counts of finished turns (the same prompt), when the backend counted them."""
    metrics = [done.metrics if done is not None else None for done in answers]
    if not metrics or any(m is None or m.input_tokens is None or m.output_tokens is None for m in metrics):
        return None
    prompt = metrics[0].input_tokens  # type: ignore[union-attr]
    produced = sum(m.output_tokens for m in metrics)  # type: ignore[union-attr,misc]
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=produced, total_tokens=prompt + produced)


def finish_reason(reason: str | None) -> str:
    """OpenAI's finish reason: ``length`` when the token limit ended the answer, else ``stop``."""
    return reason if reason in ("stop", "length") else "stop"


def completion(request_id: str, created: int, model: str, *answers: Done) -> str:
    """One ``chat.completion`` (JSON) for finished turns: a choice per answer (``n``). As OpenAI counts them,
    the prompt's tokens once and every answer's tokens together."""
    choices = [
        Choice(
            index=i,
            message=ChatCompletionMessage(role="assistant", content=done.text, refusal=None),
            logprobs=token_logprobs(done.tokens),
            finish_reason=finish_reason(done.finish_reason),
        )
        for i, done in enumerate(answers)
    ]
    return ChatCompletion(
        id=request_id, object="chat.completion", created=created, model=model, choices=choices, usage=usage_of(*answers)
    ).model_dump_json(exclude_unset=True)


class ChunkWriter:
    """The server-sent events of one streamed answer (same id, time and model on every chunk)."""

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        if include_usage:
            self._base["usage"] = None  # OpenAI: null on every chunk but the last one
        self.include_usage = include_usage

    def _event(self, choices: list[chunk_types.Choice], **extra: Any) -> bytes:
        obj = ChatCompletionChunk(**{**self._base, **extra}, choices=choices)
        return b"data: " + obj.model_dump_json(exclude_unset=True).encode() + b"\n\n"

    def _choice(
        self,
        delta: chunk_types.ChoiceDelta,
        finish: str | None = None,
        tokens: Iterable[TokenLogprob] = (),
        index: int = 0,
    ) -> bytes:
        logprobs = token_logprobs(tokens, chunk_types.ChoiceLogprobs)
        return self._event([chunk_types.Choice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)])

    def role(self, index: int = 0) -> bytes:
        """The first chunk of answer ``index``: the assistant's role, no text yet."""
        return self._choice(chunk_types.ChoiceDelta(role="assistant", content=""), index=index)

    def text(self, text: str, tokens: Iterable[TokenLogprob] = (), index: int = 0) -> bytes:
        """A piece of answer ``index`` (with its tokens' probabilities, when asked for)."""
        return self._choice(chunk_types.ChoiceDelta(content=text), tokens=tokens, index=index)

    def finish(self, done: Done, index: int = 0) -> bytes:
        """The last chunk of answer ``index``: its finish reason."""
        return self._choice(chunk_types.ChoiceDelta(), finish_reason(done.finish_reason), index=index)

    def close(self, answers: Iterable[Done]) -> bytes:
        """After every answer's last chunk: the usage chunk when asked for, and ``[DONE]``."""
        return (self._event([], usage=usage_of(*answers)) if self.include_usage else b"") + SSE_DONE


def sse_error(body: dict[str, Any]) -> bytes:
    """A failure after the headers went out, as OpenAI reports it mid-stream (the client raises APIError)."""
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
