"""A fake backend for fast tests of the layers above the backends (the turn service, the faces).

It keeps the :class:`~llm_levels.core.Backend` contract (deltas, usage and finish reason last, cancel
honoured between pieces, failures as BackendError with the partial text) without a model. The
real-model tests stay the proof that real backends behave the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from llm_levels.core import Backend, BackendError, Chunk, GenParams, Message, TokenLogprob, Usage


class FakeBackend(Backend):
    """Answers with ``pieces`` (one chunk each, ``delay_s`` apart); ``fail_after`` pieces it raises ``error``."""

    provider = "fake"

    def __init__(
        self,
        pieces: Sequence[str] = ("Hello", ", ", "world"),
        *,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        error: BackendError | None = None,
        name: str = "fake",
        truncated_turns: int = 0,
    ) -> None:
        self.pieces = list(pieces)
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.error = error or BackendError("The fake server broke.", kind="server", status=502)
        self._name = name
        self.truncated_turns = truncated_turns
        self.calls: list[tuple[list[Message], GenParams]] = []
        self.stopped = threading.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return "fake-model"

    def stream(
        self, messages: Sequence[Message], params: GenParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        self.calls.append((list(messages), params))
        shown: list[str] = []
        try:
            for i, piece in enumerate(self.pieces[: params.max_new_tokens]):
                if cancel is not None and cancel.is_set():
                    yield Chunk(usage=Usage(len(messages), i), finish_reason="cancelled")
                    return
                if self.fail_after is not None and i >= self.fail_after:
                    raise BackendError(
                        self.error.message, kind=self.error.kind, status=self.error.status, partial_text="".join(shown)
                    )
                if self.delay_s:
                    time.sleep(self.delay_s)
                shown.append(piece)
                tokens = (TokenLogprob(piece, -0.1, ((piece, -0.1), ("other", -2.5))),) if params.top_logprobs else ()
                yield Chunk(text=piece, logprobs=tokens)
            n = min(len(self.pieces), params.max_new_tokens)
            finish = "length" if n < len(self.pieces) else "stop"
            yield Chunk(
                usage=Usage(len(messages), n), finish_reason=finish, raw={"truncated_turns": self.truncated_turns}
            )
        finally:
            self.stopped.set()
