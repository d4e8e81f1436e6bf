"""The hosted level: any OpenAI-compatible server through the official ``openai`` client.

:class:`OpenAIBackend` turns the app's :class:`~llm_levels.core.Message` list and
:class:`~llm_levels.core.GenParams` into one ``chat.completions.create`` call and streams the answer
back as :class:`~llm_levels.core.Chunk` deltas.

Decisions worth knowing (each is explained where it is made):

- **Token limit.** OpenAI's own API gets ``max_completion_tokens`` (its newer models reject
  ``max_tokens``); every other server (vLLM, Ollama, llama.cpp, llm-katan...) gets the widely
  supported ``max_tokens``. If a server answers 400 naming the one we sent as unsupported, the
  request is sent once more with the other one.
- **Local-only knobs.** ``top_k`` and ``repetition_penalty`` are not OpenAI parameters: they are
  left out for api.openai.com (it rejects unknown fields) and sent in the body (``extra_body``) to
  other servers only when they differ from "off", since vLLM and others understand them.
  ``top_p`` is left out at its default 1.0 (the servers' own default; some OpenAI models reject it).
- **Retries.** The ``openai`` client retries by itself (``max_retries``): connection errors,
  timeouts, 408, 409, 429 and 5xx, with exponential backoff and jitter, honouring ``Retry-After``.
  A request is only ever retried before its answer starts, so no text is doubled. The client's
  retries end where the stream begins, so this backend itself retries only a stream that failed
  before its first token (a cut, an error event), and never after text was shown.
- **Time budget.** ``timeout_s`` bounds the whole wait for an answer to start, the client's retries
  included (:mod:`.openai_budget`): each attempt gets what is left of it, and no retry starts that
  could not finish within it. So a dead server is reported after about ``timeout_s``, not
  ``(max_retries + 1) * timeout_s``. Once text flows, the same attempt timeout applies to each gap
  between chunks.
- **Stream cut.** The ``openai`` client ends a stream silently when the connection drops before
  ``[DONE]``; a stream without a ``finish_reason`` is reported as ``stream_cut``, keeping the text
  (:mod:`.openai_stream`).
- **Per-token probabilities.** ``GenParams.top_logprobs`` becomes ``logprobs=True, top_logprobs=k``. When a
  server refuses them (a 400 naming ``logprobs``: the request goes again without them) or answers without
  them, the answer still arrives and its last chunk's :attr:`~llm_levels.core.Chunk.note` says why.
- **Continuing an answer** (a final assistant message) is refused: such an API answers it with a new answer.
- **Secrets.** The key is never put in a message, ``last_request``, ``last_response`` or
  :meth:`describe`; any text a server sends back is scrubbed of it before it is shown
  (:mod:`.openai_errors`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

# Imported here, not per call: this module itself is imported only when a hosted backend is built,
# and a first request should not pay the client's import inside its time-to-first-token.
import openai

from ..core import Backend, BackendError, Chunk, GenParams, Message
from .openai_budget import Budget, backoff_s, install_budget_hooks, run_within
from .openai_errors import (
    TOKEN_PARAMS,
    Failed,
    Where,
    no_key_error,
    refuses_logprobs,
    scrub_obj,
    swap_token_param,
    to_failure,
)
from .openai_stream import MAX_RAW_CHUNKS, Progress, RawChunks, choice_chunk, read_stream, usage_of
from .openai_urls import OPENAI_BASE_URL, bad_url_message, display_url, host_of, is_bad_url, is_openai

__all__ = ["MAX_RAW_CHUNKS", "OPENAI_BASE_URL", "PLACEHOLDER_KEY", "OpenAIBackend"]

#: Sent when a base URL is set but no key: local servers (vLLM, Ollama, llama.cpp) accept any key,
#: but the client and most servers still want an ``Authorization`` header.
PLACEHOLDER_KEY = "not-needed"

# The create() arguments the client knows; anything else goes in extra_body.
_KNOWN_ARGS = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "seed", "stop", *TOKEN_PARAMS}
_KNOWN_ARGS |= {"logprobs", "top_logprobs"}


class OpenAIBackend(Backend):
    """A chat model behind an OpenAI-compatible HTTP API (OpenAI itself, vLLM, Ollama, this app's /v1...).

    ``api_key`` None with ``base_url`` None (OpenAI itself) fails on first use with a message that
    says where to set the key; with a ``base_url`` a placeholder key is sent. ``stream=False`` asks
    for the whole answer in one response (the UI's "stream off"), still yielded as one chunk.
    ``max_retries`` is the ``openai`` client's own retry count; ``timeout_s`` bounds the whole wait,
    retries included. ``http_client`` optionally replaces the HTTP client (an ``httpx2.Client``, e.g.
    the SSRF-guarded one from :mod:`llm_levels.ssrf`); the time-budget hooks are added to it.

    After each call, ``last_request`` holds the JSON body that was sent (never headers or the key)
    and ``last_response`` the raw response JSON (a list of chunk dicts for a stream), both for the
    "under the hood" panel.
    """

    provider = "openai"

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str | None = None,
        timeout_s: float = 60,
        max_retries: int = 2,
        stream: bool = True,
        http_client: Any = None,
    ) -> None:
        self._model = (model or "").strip()
        self._api_key = (api_key or "").strip() or None
        self._base_url = (base_url or "").strip().rstrip("/") or None
        self._display_name = name
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.stream_mode = bool(stream)
        self._http_client = http_client
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.last_request: dict[str, Any] | None = None
        self.last_response: dict[str, Any] | list[Any] | None = None

    # ------------------------------------------------------------------------------ identity
    @property
    def model(self) -> str:
        return self._model

    @property
    def name(self) -> str:
        where = self._display_name or ("openai" if self.is_openai else self.host)
        return f"{where} · {self._model}"

    @property
    def is_openai(self) -> bool:
        """Whether requests go to OpenAI's own API (which decides the token-limit parameter)."""
        return is_openai(self._base_url)

    @property
    def host(self) -> str:
        """``host[:port]`` of the server, without any user:password part (safe to show)."""
        return host_of(self._base_url or OPENAI_BASE_URL)

    @property
    def token_limit_param(self) -> str:
        return "max_completion_tokens" if self.is_openai else "max_tokens"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.provider,
            "name": self.name,
            "model": self._model,
            "endpoint": "OpenAI" if self._base_url is None else "OpenAI-compatible",
            "base_url": display_url(self._base_url or OPENAI_BASE_URL),
            "key_configured": self._api_key is not None,
            "stream": self.stream_mode,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "token_limit_param": self.token_limit_param,
        }

    def close(self) -> None:
        """Release the HTTP connections (the backend can still be used: a new client is made)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------------------ requests
    def build_request(
        self, messages: Sequence[Message], params: GenParams, *, stream: bool | None = None
    ) -> dict[str, Any]:
        """The JSON body a call sends (what ``last_request`` shows afterwards)."""
        stream = self.stream_mode if stream is None else stream
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [m.to_dict() for m in messages],
            "temperature": params.temperature,
        }
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        body[self.token_limit_param] = params.max_new_tokens
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if not self.is_openai:
            if params.top_k:
                body["top_k"] = params.top_k
            if params.repetition_penalty != 1.0:
                body["repetition_penalty"] = params.repetition_penalty
        if params.top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = params.top_logprobs
        body["stream"] = stream
        if stream:
            # Without it, a streaming server sends no token counts at all.
            body["stream_options"] = {"include_usage": True}
        return body

    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[Chunk]:
        """Stream the answer; see the module docstring for retries, timeouts, cuts and probabilities."""
        if messages and messages[-1].role == "assistant":
            raise BackendError(
                "Continuing a started answer works on the local engines only: an OpenAI-compatible API answers "
                "a conversation that ends with the assistant's text with a new answer.",
                kind="bad_request",
                status=400,
            )
        client = self._get_client()
        body = self.build_request(messages, params)
        self.last_request = body
        self.last_response = None
        budget = Budget(self.timeout_s, cancel)
        swapped, own_retries = False, 0
        note: str | None = None
        while True:
            if budget.cancelled:
                yield Chunk(finish_reason="cancelled")
                return
            progress = Progress()
            try:
                once = (
                    self._stream_once(client, body, budget, progress)
                    if body["stream"]
                    else self._complete_once(client, body, budget, progress)
                )
                yield from self._noted(once, body, progress, note)
                return
            except Failed as f:
                if progress.text_sent:
                    raise f.error from f.cause
                # A server or model that does not give per-token probabilities: the answer without them.
                if body.get("logprobs") and refuses_logprobs(f):
                    body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                    self.last_request = body
                    note = f"No per-token probabilities: {self.host} refused them for {self._model} ({f.error.message})"
                    continue
                # A server that names our token-limit parameter as unsupported gets the other one, once.
                if not swapped and f.swap_token_param:
                    swapped = True
                    body = swap_token_param(body)
                    self.last_request = body
                    continue
                pause = self._own_retry_pause(f, own_retries, budget)
                if pause is None:
                    raise f.error from f.cause
                own_retries += 1
                if budget.sleep(pause):
                    yield Chunk(finish_reason="cancelled")
                    return

    def answers(
        self, messages: Sequence[Message], params: GenParams, n: int, cancel: threading.Event | None = None
    ) -> list[Chunk]:
        """``n`` answers to one request (OpenAI's ``n``), not streamed: a finished chunk per choice, in order;
        the first carries the whole request's token counts. The client's retries and the time budget apply
        as for :meth:`stream`; a cancelled call returns no answers."""
        client = self._get_client()
        body = {**self.build_request(messages, params, stream=False), "n": n}
        self.last_request, self.last_response = body, None
        try:
            completion, _ = self._create(client, body, Budget(self.timeout_s, cancel))
        except Failed as f:
            raise f.error from f.cause
        if completion is None:
            return []
        self.last_response = scrub_obj(completion.to_dict(), self._api_key)
        usage = usage_of(completion.usage) if completion.usage is not None else None
        choices = sorted(completion.choices or [], key=lambda c: c.index)
        return [choice_chunk(c, usage if i == 0 else None) for i, c in enumerate(choices)]

    def list_models(self) -> list[str]:
        """The model ids the server offers (``GET /models``), with the same errors, retries and budget."""
        client = self._get_client()
        budget = Budget(self.timeout_s)
        try:
            page = run_within(budget, lambda: client.models.list())
        except Exception as e:
            failed = to_failure(e, self._where(), partial="", timeout=budget.attempt_timeout(), during="models")
            raise failed.error from e
        return sorted(m.id for m in page.data)

    # ------------------------------------------------------------------------------ one attempt
    def _create(self, client: Any, body: dict[str, Any], budget: Budget) -> tuple[Any, float]:
        """Send one request (the client retries it as it sees fit, within ``budget``); the body's
        ``stream`` decides whether a stream or a completion comes back. Returns it (``None`` when
        cancelled before the response arrived) and the timeout its reads got; a failure is raised
        as :class:`Failed`."""
        timeout = budget.attempt_timeout()
        kwargs = {k: v for k, v in body.items() if k in _KNOWN_ARGS}
        extra = {k: v for k, v in body.items() if k not in _KNOWN_ARGS}
        try:
            response = run_within(budget, lambda: client.chat.completions.create(**kwargs, extra_body=extra or None))
        except Exception as e:
            failed = to_failure(e, self._where(), partial="", timeout=timeout)
            if failed.last_response is not None:
                self.last_response = failed.last_response
            raise failed from e
        return response, timeout

    def _stream_once(self, client: Any, body: dict[str, Any], budget: Budget, progress: Progress) -> Iterator[Chunk]:
        stream, timeout = self._create(client, body, budget)
        if stream is None:  # cancelled while waiting for the response headers
            yield Chunk(finish_reason="cancelled")
            return
        raw = RawChunks()
        self.last_response = raw.items
        yield from read_stream(
            stream, where=self._where(), timeout=timeout, cancel=budget.cancel, progress=progress, raw=raw
        )

    def _noted(
        self, chunks: Iterator[Chunk], body: dict[str, Any], progress: Progress, note: str | None
    ) -> Iterator[Chunk]:
        """``chunks``, the last one with the :attr:`~llm_levels.core.Chunk.note` on missing probabilities: ``note``
        (they were refused), or that the answer came without them although the request asked for them."""
        try:
            for chunk in chunks:
                if chunk.finish_reason is not None and chunk.finish_reason != "cancelled":
                    if note is None and body.get("logprobs") and not progress.tokens:
                        note = (
                            f"No per-token probabilities: {self.host} answered without them (this server or "
                            "model does not give them)."
                        )
                    chunk = dataclasses.replace(chunk, note=note) if note else chunk
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()  # the consumer stopped: the HTTP stream is closed now, not when collected

    def _complete_once(
        self, client: Any, body: dict[str, Any], budget: Budget, progress: Progress | None = None
    ) -> Iterator[Chunk]:
        completion, _ = self._create(client, body, budget)
        if completion is None:
            yield Chunk(finish_reason="cancelled")
            return
        self.last_response = scrub_obj(completion.to_dict(), self._api_key)
        choices = completion.choices or []
        if not choices:
            raise Failed(
                BackendError(
                    f"{self.host} answered without any text (no choices in the response). Try again.",
                    kind="server",
                    retryable=True,
                    status=502,
                ),
                None,
                retry_here=True,
            )
        usage = usage_of(completion.usage) if completion.usage is not None else None
        chunk = dataclasses.replace(choice_chunk(choices[0], usage), raw=self.last_response)
        if progress is not None:
            progress.tokens += len(chunk.logprobs)
        yield chunk

    def _own_retry_pause(self, failed: Failed, retries_taken: int, budget: Budget) -> float | None:
        """The pause before this backend retries a failure the client could not see (one after the
        response headers, before any text), or None when it should not be retried."""
        if not (failed.retry_here and failed.error.retryable) or retries_taken >= self.max_retries:
            return None
        pause = backoff_s(retries_taken)
        return pause if budget.fits(pause) else None

    def _where(self) -> Where:
        return Where(
            host=self.host,
            model=self._model,
            base_url=display_url(self._base_url or OPENAI_BASE_URL),
            configured_url=self._base_url,
            timeout_s=self.timeout_s,
            api_key=self._api_key,
        )

    # ------------------------------------------------------------------------------ client
    def _get_client(self) -> Any:
        if self._api_key is None and self._base_url is None:
            raise no_key_error()
        if self._base_url is not None and is_bad_url(self._base_url):
            raise BackendError(bad_url_message(self._base_url), kind="config", status=400)
        with self._client_lock:
            if self._client is None:
                # The client's own retries, bounded by our time budget through hooks on its HTTP client
                # (the default one is the SDK's own, with its connection limits and redirects).
                http_client = install_budget_hooks(self._http_client or openai.DefaultHttpxClient())
                # base_url and api_key are always given, so the client never reads OPENAI_BASE_URL /
                # OPENAI_API_KEY itself: config.Settings is the one reader of the environment.
                self._client = openai.OpenAI(
                    api_key=self._api_key or PLACEHOLDER_KEY,
                    base_url=self._base_url or OPENAI_BASE_URL,
                    timeout=self.timeout_s,
                    max_retries=self.max_retries,
                    http_client=http_client,
                )
            return self._client
