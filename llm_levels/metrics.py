"""Per-turn measurements of a streamed answer: time to first token, total time, decode speed, tokens.

:func:`measure` wraps a backend's stream: it passes every chunk on unchanged (so a UI can show the
text as it arrives) and feeds it to :class:`core.ReplyBuilder` — the same accumulator behind
:func:`core.collect`, so a streamed turn and a collected one are timed by one piece of code.
Afterwards ``.metrics`` holds a :class:`TurnMetrics`::

    with measure(backend.stream(messages, params)) as m:
        for chunk in m:
            show(chunk.text)
    print(m.metrics.summary())

Timing starts when ``measure`` is called (pass ``started=`` to start earlier, e.g. before a backend
was built) and ends when the stream ends, fails or is closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .core import Chunk, Reply, ReplyBuilder


@dataclass(frozen=True)
class TurnMetrics:
    """The numbers of one answer. ``None`` means unknown (e.g. a stream cut before its usage arrived).

    ``tokens_per_s`` is the decode speed: output tokens after the first, over the time after the first
    token (see :attr:`core.Reply.tokens_per_s`), so it does not mix in the prompt's processing time.
    """

    ttft_s: float | None
    total_s: float
    tokens_per_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    backend: str = ""
    model: str = ""

    @classmethod
    def from_reply(cls, reply: Reply, *, backend: str = "", model: str = "") -> TurnMetrics:
        usage = reply.usage
        return cls(
            ttft_s=reply.ttft_s,
            total_s=reply.total_s,
            tokens_per_s=reply.tokens_per_s,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            finish_reason=reply.finish_reason,
            backend=backend,
            model=model,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly, with the same key names as the command line's ``--json`` output."""
        return {
            "backend": self.backend,
            "model": self.model,
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "tokens_per_s": _round(self.tokens_per_s, 1),
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            "finish_reason": self.finish_reason,
        }

    def summary(self) -> str:
        """One line for a presenter, e.g. ``0.42 s to first token · 14.8 tokens/s · 52 → 16 tokens · 1.5 s``."""
        parts: list[str] = []
        if self.ttft_s is not None:
            parts.append(f"{self.ttft_s:.2f} s to first token")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.input_tokens is not None and self.output_tokens is not None:
            parts.append(f"{self.input_tokens} → {self.output_tokens} tokens")
        parts.append(f"{self.total_s:.1f} s in all")
        if self.finish_reason == "length":
            parts.append("cut at the token limit")
        elif self.finish_reason == "cancelled":
            parts.append("stopped")
        elif self.finish_reason is None:
            parts.append("unfinished")
        return " · ".join(parts)


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


class Measured(Iterator[Chunk]):
    """A stream wrapper that times what passes through it. Build it with :func:`measure`.

    Closing it (or leaving its ``with`` block) closes the wrapped stream, so the backend stops working.
    """

    def __init__(
        self, chunks: Iterable[Chunk], *, started: float | None = None, backend: str = "", model: str = ""
    ) -> None:
        self._source = chunks
        self._it = iter(chunks)
        self._builder = ReplyBuilder(started)
        self._ended: float | None = None
        self.backend = backend
        self.model = model

    def __iter__(self) -> Measured:
        return self

    def __next__(self) -> Chunk:
        if self._ended is not None:
            raise StopIteration
        try:
            chunk = next(self._it)
        except BaseException:  # the end, a BackendError, or the consumer being closed: stop the clock
            self._ended = time.perf_counter()
            raise
        self._builder.add(chunk)
        return chunk

    def close(self) -> None:
        """Stop the clock and close the wrapped stream (a generator's ``close``)."""
        if self._ended is None:
            self._ended = time.perf_counter()
        for obj in (self._it, self._source):
            close = getattr(obj, "close", None)
            if callable(close):
                close()
                break

    def __enter__(self) -> Measured:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def done(self) -> bool:
        return self._ended is not None

    @property
    def text(self) -> str:
        """The text so far."""
        return self._builder.text

    @property
    def reply(self) -> Reply:
        """The answer so far as a :class:`core.Reply` (timed up to now while the stream runs)."""
        return self._builder.reply(ended=self._ended)

    @property
    def metrics(self) -> TurnMetrics:
        return TurnMetrics.from_reply(self.reply, backend=self.backend, model=self.model)


def measure(chunks: Iterable[Chunk], *, started: float | None = None, backend: str = "", model: str = "") -> Measured:
    """Wrap a stream of chunks: iterate it as usual, then read ``.metrics`` / ``.reply``."""
    return Measured(chunks, started=started, backend=backend, model=model)
