"""The one adapter interface every level talks to.

A *backend* turns a list of :class:`Message` and a :class:`GenParams` into a stream of :class:`Chunk`
deltas. The UI, the command line, the compare view, the ICL lab and the app's own OpenAI-compatible
endpoint all speak only this interface, so any prompt can go to any backend.

Failures that a user should see are raised as :class:`BackendError`: one type, with a message that
says what went wrong *and what to do*, never containing a secret. The UI edge turns it into a
``gr.Error`` or a chat note; everything else lets it travel.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BackendError
from .params import PARAM_SPECS, GenParams, ParamSpec

__all__ = [
    "PARAM_SPECS",
    "ROLES",
    "Backend",
    "BackendError",
    "Chunk",
    "GenParams",
    "Message",
    "ParamSpec",
    "Reply",
    "ReplyBuilder",
    "Role",
    "TokenLogprob",
    "Usage",
    "check_conversation",
    "check_message_count",
    "collect",
    "messages_from_dicts",
    "split_prefix",
]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


# ------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """One turn of a conversation: a role and plain text content."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BackendError(
                f"Unknown message role {self.role!r}: use one of {', '.join(ROLES)}.",
                kind="bad_request",
                status=400,
            )
        if not isinstance(self.content, str):
            raise BackendError("Message content must be text.", kind="bad_request", status=400)

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def messages_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[Message]:
    """Build messages from ``{"role", "content"}`` dicts (OpenAI shape), validating each."""
    out: list[Message] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "role" not in item:
            raise BackendError(f"Message {i} needs a 'role' and a 'content'.", kind="bad_request", status=400)
        content = item.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            texts = (p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
            content = "".join(t for t in texts if isinstance(t, str))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BackendError(f"Message {i}: content must be text.", kind="bad_request", status=400)
        out.append(Message(role=item["role"], content=content))
    return out


def check_conversation(messages: Sequence[Message], *, max_chars: int | None = None) -> None:
    """Reject conversations no backend can answer, with a message that says what to do.

    The last message is the user's, or the start of the assistant's answer right after a user message:
    then the answer is *continued* from that text (the local engines do it; see :func:`split_prefix`).
    """
    if not messages:
        raise BackendError("There is nothing to answer: type a message first.", kind="bad_request", status=400)
    last = messages[-1]
    if last.role == "assistant" and len(messages) >= 2 and messages[-2].role == "user":
        last = messages[-2]  # a started answer to continue: the question before it must not be empty
    if last.role != "user":
        raise BackendError(
            "The last message must come from the user (or be the start of an answer to continue, right after it).",
            kind="bad_request",
            status=400,
        )
    if not last.content.strip():
        raise BackendError("The message is empty: type something first.", kind="bad_request", status=400)
    if max_chars is not None:
        total = sum(len(m.content) for m in messages)
        if total > max_chars:
            raise BackendError(
                f"The conversation is too long ({total:,} characters; the limit is {max_chars:,}). "
                "Shorten the message or clear the chat.",
                kind="bad_request",
                status=400,
            )


def check_message_count(count: int, max_messages: int | None) -> None:
    """Refuse a conversation of more than ``max_messages`` messages (``MAX_MESSAGES``): each one costs the
    chat template and the fitting to the context window work, however short it is."""
    if max_messages is not None and count > max_messages:
        raise BackendError(
            f"The conversation has too many messages ({count:,}; the limit is {max_messages:,}, "
            "MAX_MESSAGES). Clear the chat, or send fewer messages.",
            kind="bad_request",
            status=400,
        )


def split_prefix(messages: Sequence[Message]) -> tuple[list[Message], str | None]:
    """The conversation and the start of the answer to continue: ``(messages, None)`` when the last message
    is not an assistant's, else ``(messages[:-1], its text)``.

    A conversation that ends with an assistant message asks for that answer to be *continued*, not for a
    new one: the prompt is the rest of the conversation as usual (with the generation prompt), then that
    text, and the answer streamed is only what comes after it (the caller shows prefix + continuation).
    """
    if messages and messages[-1].role == "assistant":
        return list(messages[:-1]), messages[-1].content
    return list(messages), None


# -------------------------------------------------------------------------------------- stream pieces
@dataclass(frozen=True)
class Usage:
    """Token counts of one request, as the backend counted them."""

    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives at that step."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class Chunk:
    """One streamed delta: a piece of text; the last chunk also carries usage and the finish reason.

    ``finish_reason`` is ``"stop"`` (the model ended), ``"length"`` (hit max_new_tokens) or
    ``"cancelled"`` (the caller stopped it). ``raw`` optionally holds backend-specific details for
    the "under the hood" panels (e.g. the raw JSON of an API response chunk).
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    raw: Any = field(default=None, compare=False, repr=False)
    #: The tokens of ``text`` with their probabilities, when ``GenParams.top_logprobs`` asked for them.
    logprobs: tuple[TokenLogprob, ...] = ()
    #: A remark for the user about the answer that is not a failure, on the last chunk: e.g. why the
    #: per-token probabilities that were asked for are missing (the server refused them, or sent none).
    note: str | None = None


@dataclass
class Reply:
    """A whole answer, accumulated from a stream, with its timings."""

    text: str
    usage: Usage | None
    finish_reason: str | None
    ttft_s: float | None
    total_s: float
    #: The stream's :attr:`Chunk.note`, if it had one.
    note: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        if not self.usage or not self.usage.output_tokens:
            return None
        # Decode speed: tokens after the first over the time after the first token. When (almost) all
        # the text arrived at once (a non-streamed answer, a streamer that buffers words) that time is
        # tiny and the ratio absurd (thousands of tokens/s): use the whole time instead.
        decode_s = self.total_s - (self.ttft_s or 0.0)
        if self.usage.output_tokens > 2 and decode_s > 0 and decode_s >= 0.25 * self.total_s:
            return (self.usage.output_tokens - 1) / decode_s
        return self.usage.output_tokens / self.total_s if self.total_s > 0 else None


class ReplyBuilder:
    """Accumulates a stream one chunk at a time into a :class:`Reply` (what :func:`collect` does).

    For callers that must pass each chunk on as it arrives (a UI streaming the text) and still want
    the same timings as :func:`collect`: ``add`` every chunk, then ``reply()``.
    """

    def __init__(self, started: float | None = None) -> None:
        self.started = started if started is not None else time.perf_counter()
        self.parts: list[str] = []
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.note: str | None = None

    def add(self, c: Chunk) -> None:
        if c.text:
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.started
            self.parts.append(c.text)
        if c.usage is not None:
            self.usage = c.usage
        if c.finish_reason is not None:
            self.finish = c.finish_reason
        if c.note:
            self.note = c.note

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def reply(self, *, ended: float | None = None) -> Reply:
        """The answer so far; ``ended`` (a ``perf_counter`` value) fixes the end time, default now."""
        end = ended if ended is not None else time.perf_counter()
        return Reply(self.text, self.usage, self.finish, self.ttft, end - self.started, self.note)


def collect(chunks: Iterable[Chunk], *, started: float | None = None) -> Reply:
    """Drain a stream into a :class:`Reply`, timing the first token and the whole answer."""
    builder = ReplyBuilder(started)
    for c in chunks:
        builder.add(c)
    return builder.reply()


# ---------------------------------------------------------------------------------------------- backend
class Backend(ABC):
    """The adapter contract.

    ``stream`` yields :class:`Chunk` deltas; the last one carries usage and the finish reason.
    Cancellation is part of the contract: when ``cancel`` is set, or the consumer closes the
    generator (``gen.close()``, which Gradio does when a user presses Stop), the backend stops
    *working* — the local model's generate thread ends, the HTTP stream is closed — not only
    yielding. Failures are raised as :class:`BackendError`.
    """

    #: "local" or "openai": who runs the model (this process, or an OpenAI-compatible server).
    provider: str = ""

    @property
    @abstractmethod
    def name(self) -> str:
        """A short display name, e.g. ``local · SmolLM2-135M-Instruct``."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The model id requests go to."""

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[Chunk]:
        """Stream the answer to ``messages`` as deltas.

        When the last message is an assistant's, the local engines continue that answer (see
        :func:`split_prefix`); a backend that cannot raises :class:`BackendError`.
        """

    def complete(
        self,
        messages: Sequence[Message],
        params: GenParams,
        cancel: threading.Event | None = None,
    ) -> Reply:
        """Non-streaming convenience: the whole answer with usage and timings."""
        t0 = time.perf_counter()
        return collect(self.stream(messages, params, cancel), started=t0)

    def describe(self) -> dict[str, Any]:
        """Facts for the UI (model, device, endpoint...). Never contains a secret."""
        return {"backend": self.provider, "model": self.model}
