"""Reading one streamed answer of an OpenAI-compatible server, after its response headers arrived.

The ``openai`` client's retries end where the stream begins: it neither retries a stream that
breaks nor raises when a stream simply stops before ``[DONE]``. So this module turns the stream's
chunks into :class:`~llm_levels.core.Chunk` deltas and:

- reports a stream without a ``finish_reason`` as ``stream_cut`` (the client ends it silently, and a
  broken answer would otherwise look complete), keeping the text that came;
- maps an error event or a broken connection inside the stream to a one-line error, and a chunk that
  is not JSON to a hint about the base URL;
- passes each piece's per-token probabilities on (``choice.logprobs``, when they were asked for);
- keeps the raw chunks for the "under the hood" panel (capped, the last one always kept: it has
  the usage), scrubbed of the key;
- ends the stream at once on the user's Stop, from another thread (:class:`CancelWatcher`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import openai

from ..core import BackendError, Chunk, TokenLogprob, Usage
from .openai_errors import Failed, Where, scrub_obj, to_failure

#: Raw stream chunks kept for the "under the hood" panel (the last one, with usage, is always kept).
MAX_RAW_CHUNKS = 200
#: How often a running stream checks its cancel event from the watcher thread.
CANCEL_POLL_S = 0.05


class Progress:
    """What one attempt has shown the caller (the backend retries only while nothing was)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.text_sent = False
        self.finish: str | None = None
        self.usage: Usage | None = None
        #: Tokens that came with probabilities (to tell a server that sends none).
        self.tokens = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)


class RawChunks:
    """The raw chunks of one stream for the panel (``items``): the first :data:`MAX_RAW_CHUNKS`, then
    the last one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._dropped = 0
        self._last: Any = None

    def keep(self, raw: Any) -> None:
        if len(self.items) < MAX_RAW_CHUNKS:
            self.items.append(raw)
        else:
            self._dropped, self._last = self._dropped + 1, raw

    def finish(self) -> None:
        """Add the last chunk (and a note of what was left out) once the stream ended."""
        if self._dropped:
            if self._dropped > 1:
                self.items.append({"note": f"{self._dropped - 1} chunks not kept"})
            self.items.append(self._last)
            self._dropped = 0


def usage_of(u: Any) -> Usage | None:
    """Token counts from a response's ``usage``, or ``None`` when the server did not count both."""
    prompt = getattr(u, "prompt_tokens", None)
    completion = getattr(u, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None  # unknown beats wrong: the UI says "unknown"
    return Usage(input_tokens=prompt, output_tokens=completion)


def token_logprobs_of(logprobs: Any) -> tuple[TokenLogprob, ...]:
    """A choice's ``logprobs`` (the ``openai`` client's object, or None) as TokenLogprob items."""
    content = getattr(logprobs, "content", None) or ()
    out = []
    for t in content:
        top = tuple((str(a.token), float(a.logprob)) for a in (getattr(t, "top_logprobs", None) or ()))
        out.append(TokenLogprob(str(t.token), float(t.logprob), top))
    return tuple(out)


def choice_chunk(choice: Any, usage: Usage | None = None) -> Chunk:
    """One finished answer of a non-streamed completion's ``choices``, as a whole chunk."""
    message = choice.message
    return Chunk(
        text=(getattr(message, "content", None) or "") if message is not None else "",
        usage=usage,
        finish_reason=choice.finish_reason or "stop",
        logprobs=token_logprobs_of(getattr(choice, "logprobs", None)),
    )


def read_stream(
    stream: Any, *, where: Where, timeout: float, cancel: threading.Event | None, progress: Progress, raw: RawChunks
) -> Iterator[Chunk]:
    """Yield the text deltas of an open ``stream``, then one last Chunk with usage and finish reason.

    Raises :class:`Failed` for an error inside the stream, a chunk that is not JSON, or a stream that
    ended without a ``finish_reason``; ``progress`` tells the caller whether any text was shown.
    """
    watcher = CancelWatcher(stream.response, cancel) if cancel is not None else None
    try:
        yield from _deltas(stream, where, timeout, cancel, progress, raw)
    finally:
        if watcher is not None:
            watcher.stop()
        stream.close()  # also on GeneratorExit: stops reading, so the server sees the disconnect
        raw.finish()
    if cancel is not None and cancel.is_set():
        yield Chunk(usage=progress.usage, finish_reason="cancelled")
        return
    if progress.finish is None:
        err = BackendError(
            f"The answer from {where.host} was cut off before it finished (the connection ended "
            "without the end-of-stream marker). Try again.",
            kind="stream_cut",
            retryable=True,
            status=502,
            partial_text=progress.text,
        )
        raise Failed(err, None, retry_here=True)
    yield Chunk(usage=progress.usage, finish_reason=progress.finish)


def _deltas(
    stream: Any, where: Where, timeout: float, cancel: threading.Event | None, progress: Progress, raw: RawChunks
) -> Iterator[Chunk]:
    try:
        for chunk in stream:
            kept = scrub_obj(chunk.to_dict(), where.api_key)
            raw.keep(kept)
            if cancel is not None and cancel.is_set():
                return
            if chunk.usage is not None:
                progress.usage = usage_of(chunk.usage)
            # The usage-only last chunk has no choices; some servers send choices=None.
            for choice in chunk.choices or []:
                if getattr(choice, "index", 0) not in (0, None):
                    continue
                text = getattr(choice.delta, "content", None) if choice.delta is not None else None
                tokens = token_logprobs_of(getattr(choice, "logprobs", None))
                progress.tokens += len(tokens)
                if choice.finish_reason:
                    progress.finish = choice.finish_reason
                if text:
                    progress.text_sent = True
                    progress.parts.append(text)
                if text or tokens:
                    yield Chunk(text=text or "", raw=kept, logprobs=tokens)
    except openai.OpenAIError as e:
        # When our watcher shut the socket down, the read fails: that is the cancellation.
        if cancel is None or not cancel.is_set():
            raise to_failure(e, where, partial=progress.text, timeout=timeout, during="stream") from e
    except ValueError as e:  # a data: line that is not JSON
        err = BackendError(
            f"{where.host} sent a malformed stream chunk (not JSON): it may not be an OpenAI-compatible "
            "server; check the base URL.",
            kind="server",
            status=502,
            partial_text=progress.text,
        )
        raise Failed(err, e) from e


class CancelWatcher:
    """Watches a cancel event while a stream is read, and shuts the socket down when it is set.

    The reading thread is usually blocked waiting for the next chunk; closing the response from
    another thread does not wake it, but ``shutdown()`` on the socket does, and the server sees the
    disconnect at once and can stop generating.
    """

    def __init__(self, response: Any, cancel: threading.Event) -> None:
        self._response = response
        self._cancel = cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openai-cancel-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(CANCEL_POLL_S):
                if not self._done.is_set():
                    _shutdown(self._response)
                return

    def stop(self) -> None:
        self._done.set()


def _shutdown(response: Any) -> None:
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
            return
        except OSError:
            pass
    try:
        response.close()
    except Exception:  # noqa: BLE001 - best effort from another thread; the reader closes it too
        pass
