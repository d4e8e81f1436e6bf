"""The local level on llama.cpp: a GGUF model served in this process by ``xllamacpp`` (the default engine).

How a request runs:

1. The conversation is rendered with the GGUF's own chat template and tokenized by llama.cpp, and fitted
   to the context window (oldest turns left out, see :mod:`.prompt`).
2. A worker thread calls the engine's ``handle_chat_completions`` with an OpenAI-shaped request; the
   engine calls back with each streamed chunk, which goes through a queue to the consuming generator.
   The callback returns True once the request's stop event or the caller's ``cancel`` is set, and
   llama.cpp then ends the generation within a token and frees its slot.
3. Concurrent requests share the engine's slots (continuous batching); the app's line in front of the
   engine (``slots``) decides who runs.

A conversation that ends with an assistant message is *continued* (:func:`~llm_levels.core.split_prefix`):
the rest is rendered with the GGUF's template as usual, that message's text appended, the whole tokenized
by llama.cpp, and the token ids sent to its raw completion route (``handle_completions``) instead of the
chat one, which would start a new answer. Only the continuation is streamed.

Sampling settings map one to one (``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 are off;
``min_p`` is turned off so the settings mean what they mean for the transformers engine); a ``seed``
reproduces a sampled answer; ``stop`` strings end the answer and are not shown; per-token
``logprobs`` come back in OpenAI's shape and are passed on as :class:`~llm_levels.core.TokenLogprob`.
They are llama.cpp's probabilities before sampling: the softmax of the model's logits at that step, before
the repetition penalty, temperature, top-k and top-p (as the transformers engine reports them).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..core import (
    Backend,
    BackendError,
    Chunk,
    GenParams,
    Message,
    TokenLogprob,
    Usage,
    check_conversation,
    split_prefix,
)
from ..engine import LLAMA_CPP
from ..errors import generation_error
from .prompt import Prompt, fit_prompt, fitted_or_stopped, stopped_in_line

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.llama_cpp import LlamaCppModel
    from ..slots import LocalSlots, SlotTicket

log = logging.getLogger(__name__)

#: How often the consumer wakes up to check ``cancel`` while no text arrives.
_POLL_S = 0.05
_END = object()
_thread_ids = itertools.count(1)


class LlamaCppBackend(Backend):
    """A :class:`~llm_levels.core.Backend` on a GGUF model running in llama.cpp (see :mod:`llm_levels.engine`).

    ``slots``, when given, is held for the duration of each generation: the app's FIFO line for this
    engine (:class:`~llm_levels.slots.LocalSlots`) or one :class:`~llm_levels.slots.SlotTicket` the caller
    took from it (good for one generation). A request cancelled while it waits never starts.
    ``first_token_timeout_s`` bounds how long the engine may stay silent, before the first piece of text
    and between pieces.
    """

    provider = "local"
    engine = LLAMA_CPP

    def __init__(
        self,
        loaded: LlamaCppModel,
        *,
        slots: LocalSlots | SlotTicket | None = None,
        first_token_timeout_s: float = 120.0,
        join_timeout_s: float = 10.0,
    ) -> None:
        self.loaded = loaded
        self.slots = slots
        self.first_token_timeout_s = first_token_timeout_s
        self.join_timeout_s = join_timeout_s
        self.last_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return f"local · {self.loaded.display_name}"

    @property
    def model(self) -> str:
        return self.loaded.model_id or self.loaded.spec

    def describe(self) -> dict[str, Any]:
        lm = self.loaded
        return {
            "backend": self.provider,
            "engine": LLAMA_CPP,
            "model": self.model,
            "display_name": lm.display_name,
            "source": lm.source,
            "device": lm.device,
            "dtype": lm.dtype,
            "threads": lm.threads,
            "parallel": lm.parallel,
            "context_window": lm.context_window,
            "load_s": round(lm.load_s, 2),
            "chat_template": True,
        }

    # ------------------------------------------------------------------ prompt inspection
    def prepare(
        self, messages: Sequence[Message], max_new_tokens: int | None = None, cancel: threading.Event | None = None
    ) -> Prompt:
        """The prompt as llama.cpp renders and tokenizes it; with ``max_new_tokens``, fitted to the window.

        A final assistant message is the start of the answer to continue: its text ends the prompt.
        """
        history, prefix = split_prefix(messages)

        def encode(kept: list[Message], dropped: int) -> Prompt:
            return self._encode(kept, dropped) if prefix is None else self._encode(kept, dropped, prefix)

        return fit_prompt(
            history,
            encode,
            window=self.loaded.context_window,
            max_new_tokens=max_new_tokens,
            model=self.model,
            cancel=cancel,  # a long conversation's fitting stops at its next render once the turn is stopped
        )

    def render_prompt(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        return self.prepare(messages, max_new_tokens).text

    def prompt_tokens(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> list[tuple[int, str]]:
        """The prompt's token ids, each with the text piece it stands for."""
        return self.loaded.tokenize(self.prepare(messages, max_new_tokens).text)

    def _encode(self, messages: list[Message], dropped: int, prefix: str | None = None) -> Prompt:
        text = self.loaded.apply_template(messages)
        kept = tuple(messages)
        if prefix is not None:
            text += prefix
            kept += (Message("assistant", prefix),)
        ids = [i for i, _ in self.loaded.tokenize(text)]
        return Prompt(text, ids, dropped, False, kept)

    # ------------------------------------------------------------------ generation
    def request(self, messages: Sequence[Message], params: GenParams) -> dict[str, Any]:
        """The OpenAI-shaped request this backend sends llama.cpp for ``messages``."""
        req: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": params.max_new_tokens,
            **_sampling(params),
            "stream_options": {"include_usage": True},
        }
        if params.top_logprobs is not None:
            req["logprobs"] = True
            # At least one: with none, llama.cpp leaves out the chosen token's own probability too (the
            # alternatives are cut back to the number asked for when they arrive).
            req["top_logprobs"] = max(1, params.top_logprobs)
        return req

    def completion_request(self, prompt: Prompt, params: GenParams) -> dict[str, Any]:
        """The raw completion request that continues a started answer: ``prompt``'s token ids, the same
        sampling settings as :meth:`request` in llama.cpp's own names."""
        req: dict[str, Any] = {
            "prompt": list(prompt.ids),
            "n_predict": params.max_new_tokens,
            **_sampling(params),
        }
        if params.top_logprobs is not None:
            req["n_probs"] = max(1, params.top_logprobs)  # at least one, as in request()
        return req

    def stream(
        self, messages: Sequence[Message], params: GenParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        check_conversation(messages)
        prompt = fitted_or_stopped(self.prepare, messages, params.max_new_tokens, cancel)
        if prompt is None:
            yield Chunk(finish_reason="cancelled")  # stopped while the prompt was being fitted
            return
        if not self._acquire_slot(cancel):
            yield stopped_in_line(prompt, engine=LLAMA_CPP)
            return
        run = _Run(self, prompt, params, cancel)
        try:
            run.thread.start()
        except BaseException:
            self._release_slot()
            raise
        self.last_thread = run.thread
        try:
            yield from run.consume()
        finally:
            # Normal end, an error, or the consumer closed the generator (Stop): the engine stops at its
            # next token and the worker gives the slot back when the engine has really let go.
            run.stop.set()
            run.thread.join(self.join_timeout_s)
            if run.thread.is_alive():
                log.warning(
                    "llama.cpp request %s still running %.0f s after it was told to stop",
                    run.thread.name,
                    self.join_timeout_s,
                )

    def _acquire_slot(self, cancel: threading.Event | None) -> bool:
        if self.slots is None:
            return True
        return self.slots.acquire(cancel=cancel)

    def _release_slot(self) -> None:
        if self.slots is not None:
            self.slots.release()


def _sampling(params: GenParams) -> dict[str, Any]:
    """The sampling settings in llama.cpp's names, the same for a chat request and a raw completion (``min_p``
    off: the app's settings are the OpenAI ones), streamed."""
    out: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": 0.0,
        "repeat_penalty": params.repetition_penalty,
        "stream": True,
    }
    if params.seed is not None:
        out["seed"] = params.seed
    if params.stop:
        out["stop"] = list(params.stop)
    return out


class _Run:
    """One request: the worker thread that calls the engine, and the consuming loop."""

    def __init__(
        self, backend: LlamaCppBackend, prompt: Prompt, params: GenParams, cancel: threading.Event | None
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.cancel = cancel
        self.stop = threading.Event()
        self.items: queue.Queue[Any] = queue.Queue()
        #: Continuing a started answer goes to llama.cpp's raw completion; a new answer to its chat route.
        self.continues = bool(prompt.messages) and prompt.messages[-1].role == "assistant"
        if self.continues:
            self.request = backend.completion_request(prompt, params)
        else:
            self.request = backend.request(prompt.messages, params)
        self.thread = threading.Thread(target=self._work, name=f"llm-levels-llama-{next(_thread_ids)}", daemon=True)

    def _stopping(self) -> bool:
        return self.stop.is_set() or (self.cancel is not None and self.cancel.is_set())

    def _on_chunk(self, chunk: Any) -> bool:
        self.items.put(chunk)
        return self._stopping()

    def _work(self) -> None:
        try:
            call = self.backend.loaded.complete if self.continues else self.backend.loaded.chat
            result = call(self.request, self._on_chunk)
            if isinstance(result, dict) and result.get("error"):
                self.items.put(result)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises BackendError
            self.items.put(e)
        finally:
            self.backend._release_slot()
            self.items.put(_END)

    def consume(self) -> Iterator[Chunk]:
        parts: list[str] = []
        streamed = 0  # tokens seen, for the usage of a request stopped before the engine's own count
        usage: Usage | None = None
        finish: str | None = None
        timings: dict[str, Any] = {}
        silent_since = time.monotonic()
        while True:
            if self._stopping():
                break
            try:
                item = self.items.get(timeout=_POLL_S)
            except queue.Empty:
                if time.monotonic() - silent_since > self.backend.first_token_timeout_s:
                    self.stop.set()
                    raise BackendError(
                        f"The local model gave no text for {self.backend.first_token_timeout_s:.0f} s "
                        "and was stopped. Try again.",
                        kind="timeout",
                        retryable=True,
                        status=504,
                        partial_text="".join(parts),
                    ) from None
                continue
            silent_since = time.monotonic()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise generation_error(item, "".join(parts)) from item
            if not isinstance(item, dict):
                continue
            if item.get("error"):
                raise _error_from_engine(item["error"], "".join(parts))
            if item.get("usage"):
                u = item["usage"]
                usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                timings = dict(item.get("timings") or {})
            for choice in item.get("choices") or ():
                # A chat chunk has a delta; a completion chunk (continuing an answer) has the text itself.
                text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                tokens = _token_logprobs(choice.get("logprobs"), self.params.top_logprobs)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if text or tokens:
                    parts.append(text)
                    streamed += max(1, len(tokens))
                    yield Chunk(text=text, logprobs=tokens)
        cancelled = self._stopping() and finish is None
        if usage is None:
            usage = Usage(len(self.prompt.ids), streamed)
        yield Chunk(
            usage=usage,
            finish_reason="cancelled" if cancelled else (finish or "stop"),
            raw={"truncated_turns": self.prompt.truncated_turns, "engine": LLAMA_CPP, "timings": timings},
        )


def _token_logprobs(logprobs: Any, k: int | None = None) -> tuple[TokenLogprob, ...]:
    """OpenAI's ``choice.logprobs`` (as llama.cpp sends it) as TokenLogprob items, with at most ``k``
    alternatives each."""
    if not isinstance(logprobs, dict) or k is None:
        return ()
    out = []
    for t in logprobs.get("content") or ():
        top = tuple((str(a.get("token", "")), float(a.get("logprob", 0.0))) for a in t.get("top_logprobs") or ())
        out.append(TokenLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), top[:k]))
    return tuple(out)


def _error_from_engine(error: Any, partial: str) -> BackendError:
    """llama.cpp's own error object (``{"code", "message", "type"}``) as one clear message."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message") or "unknown error")[:300]
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    if error.get("type") == "exceed_context_size_error":
        return BackendError(
            f"The message is too long for the local model: {message}. Shorten the message or lower max new tokens.",
            kind="bad_request",
            status=400,
            partial_text=partial,
        )
    kind = "bad_request" if 400 <= status < 500 else "internal"
    return BackendError(
        f"The local model (llama.cpp) refused the request: {message}.", kind=kind, status=status, partial_text=partial
    )
