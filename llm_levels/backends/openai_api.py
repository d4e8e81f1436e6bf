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
- **Retries.** The client's own retries are off (``max_retries=0``): retrying is done here, with
  exponential backoff and jitter, only *before the first token* (connection errors, timeouts, 408,
  409, 429, 5xx, a stream cut before any text), never after text was shown, so no text is doubled.
  ``Retry-After`` is honoured, capped.
- **Time budget.** ``timeout_s`` bounds the whole wait for an answer to start, retries included:
  every attempt gets what is left of it, and no retry starts that could not finish within it. So a
  dead server is reported after about ``timeout_s``, not ``(max_retries + 1) * timeout_s``. Once text
  flows, the same attempt timeout applies to each gap between chunks.
- **Stream cut.** The ``openai`` client ends a stream silently when the connection drops before
  ``[DONE]``; a stream without a ``finish_reason`` is reported as ``stream_cut``, keeping the text.
- **Secrets.** The key is never put in a message, ``last_request``, ``last_response`` or
  :meth:`describe`; any text a server sends back is scrubbed of it before it is shown.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, Sequence

# Imported here, not per call: this module itself is imported only when a hosted backend is built,
# and a first request should not pay the ~1 s import inside its time-to-first-token.
import openai

from ..core import Backend, BackendError, Chunk, GenParams, Message, Usage

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent when a base URL is set but no key: local servers (vLLM, Ollama, llama.cpp) accept any key,
#: but the client and most servers still want an ``Authorization`` header.
PLACEHOLDER_KEY = "not-needed"
#: Raw stream chunks kept for the "under the hood" panel (the last one, with usage, is always kept).
MAX_RAW_CHUNKS = 200
#: The longest a server's ``Retry-After`` is honoured, in seconds.
MAX_RETRY_AFTER_S = 20.0
#: Backoff: first pause, and the longest pause, in seconds (before jitter).
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
#: How often a running stream checks its cancel event from the watcher thread.
CANCEL_POLL_S = 0.05
#: Longest server text quoted in an error message.
MAX_SERVER_TEXT = 300

_RETRY_STATUSES = {408, 409, 429}
_KEY_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{12,}"),  # OpenAI-style keys of any account
    re.compile(r"(?i)\bbearer\s+[^\s'\"]+"),
)
_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
# The create() arguments the client knows; anything else goes in extra_body.
_KNOWN_ARGS = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "seed", "stop",
               *_TOKEN_PARAMS}


class OpenAIBackend(Backend):
    """A chat model behind an OpenAI-compatible HTTP API (OpenAI itself, vLLM, Ollama, this app's /v1...).

    ``api_key`` None with ``base_url`` None (OpenAI itself) fails on first use with a message that
    says where to set the key; with a ``base_url`` a placeholder key is sent. ``stream=False`` asks
    for the whole answer in one response (the UI's "stream off"), still yielded as one chunk.
    ``http_client`` optionally replaces the HTTP client (an ``httpx2.Client``, e.g. the SSRF-guarded
    one from :mod:`llm_levels.safety`).

    After each call, ``last_request`` holds the JSON body that was sent (never headers or the key)
    and ``last_response`` the raw response JSON (a list of chunk dicts for a stream), both for the
    "under the hood" panel.
    """

    kind = "openai"

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
        if self._base_url is None:
            return True
        try:
            return (urllib.parse.urlsplit(self._base_url).hostname or "").lower() == "api.openai.com"
        except ValueError:
            return False

    @property
    def host(self) -> str:
        """``host[:port]`` of the server, without any user:password part (safe to show)."""
        return _host_of(self._base_url or OPENAI_BASE_URL)

    @property
    def token_limit_param(self) -> str:
        return "max_completion_tokens" if self.is_openai else "max_tokens"

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "name": self.name,
            "model": self._model,
            "endpoint": "OpenAI" if self._base_url is None else "OpenAI-compatible",
            "base_url": _display_url(self._base_url or OPENAI_BASE_URL),
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
    def build_request(self, messages: Sequence[Message], params: GenParams, *, stream: bool | None = None) -> dict[str, Any]:
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
        """Stream the answer; see the module docstring for retries, timeouts and cuts."""
        client = self._get_client()
        body = self.build_request(messages, params)
        self.last_request = body
        self.last_response = None
        deadline = time.monotonic() + self.timeout_s
        swapped = False
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                yield Chunk(finish_reason="cancelled")
                return
            state = _Attempt()
            try:
                if body["stream"]:
                    yield from self._stream_once(client, body, deadline, cancel, state)
                else:
                    yield from self._complete_once(client, body, deadline, cancel)
                return
            except _Failed as f:
                if state.text_sent:
                    raise f.error from f.cause
                # A server that names our token-limit parameter as unsupported gets the other one, once.
                if not swapped and f.swap_token_param:
                    swapped = True
                    body = _swap_token_param(body)
                    self.last_request = body
                    continue
                delay = self._retry_delay(f, attempt, deadline)
                if delay is None:
                    raise f.error from f.cause
                attempt += 1
                if cancel is not None:
                    if cancel.wait(delay):
                        yield Chunk(finish_reason="cancelled")
                        return
                else:
                    time.sleep(delay)

    def list_models(self) -> list[str]:
        """The model ids the server offers (``GET /models``), with the same errors and retries."""
        client = self._get_client()
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                page = client.models.list(timeout=self._attempt_timeout(deadline))
                return sorted(m.id for m in page.data)
            except Exception as e:  # noqa: BLE001 - mapped below, unknown ones re-raised
                failed = self._failure(e, partial="", timeout=self._attempt_timeout(deadline), during="models")
                delay = self._retry_delay(failed, attempt, deadline)
                if delay is None:
                    raise failed.error from e
                attempt += 1
                time.sleep(delay)

    # ------------------------------------------------------------------------------ one attempt
    def _create(
        self, client: Any, body: dict[str, Any], deadline: float, cancel: threading.Event | None
    ) -> tuple[Any, float]:
        """Send one attempt's request; the body's ``stream`` decides whether a stream or a completion
        comes back. Returns it (``None`` when cancelled before the response arrived) and the attempt's
        timeout; a failure to get it is raised as ``_Failed``."""
        timeout = self._attempt_timeout(deadline)
        kwargs, extra = _split_body(body)
        try:
            response = _open(lambda: client.chat.completions.create(**kwargs, extra_body=extra or None,
                                                                    timeout=timeout), cancel)
        except Exception as e:  # noqa: BLE001
            raise self._failure(e, partial="", timeout=timeout) from e
        return response, timeout

    def _stream_once(
        self, client: Any, body: dict[str, Any], deadline: float, cancel: threading.Event | None, state: "_Attempt"
    ) -> Iterator[Chunk]:
        stream, timeout = self._create(client, body, deadline, cancel)
        if stream is None:  # cancelled while waiting for the response headers
            yield Chunk(finish_reason="cancelled")
            return
        raw_chunks: list[Any] = []
        self.last_response = raw_chunks
        watcher = _CancelWatcher(stream.response, cancel) if cancel is not None else None
        finish: str | None = None
        usage: Usage | None = None
        dropped, last_raw = 0, None
        try:
            try:
                for chunk in stream:
                    raw = _scrub_obj(chunk.to_dict(), self._api_key)
                    if len(raw_chunks) < MAX_RAW_CHUNKS:
                        raw_chunks.append(raw)
                    else:  # keep the panel small, but always show the last chunk (it has the usage)
                        dropped, last_raw = dropped + 1, raw
                    if cancel is not None and cancel.is_set():
                        break
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    # The usage-only last chunk has no choices; some servers send choices=None.
                    for choice in chunk.choices or []:
                        if getattr(choice, "index", 0) not in (0, None):
                            continue
                        text = getattr(choice.delta, "content", None) if choice.delta is not None else None
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        if text:
                            state.text_sent = True
                            state.parts.append(text)
                            yield Chunk(text=text, raw=raw)
            except openai.OpenAIError as e:
                # When our watcher shut the socket down, the read fails: that is the cancellation.
                if cancel is None or not cancel.is_set():
                    raise self._failure(e, partial=state.text, timeout=timeout, during="stream") from e
            except ValueError as e:  # a data: line that is not JSON
                err = BackendError(
                    f"{self.host} sent a malformed stream chunk (not JSON): it may not be an OpenAI-compatible "
                    "server; check the base URL.", kind="server", status=502, partial_text=state.text)
                raise _Failed(err, e) from e
        finally:
            if watcher is not None:
                watcher.stop()
            stream.close()  # also on GeneratorExit: stops reading, so the server sees the disconnect
            if dropped:
                if dropped > 1:
                    raw_chunks.append({"note": f"{dropped - 1} chunks not kept"})
                raw_chunks.append(last_raw)
        if cancel is not None and cancel.is_set():
            yield Chunk(usage=usage, finish_reason="cancelled")
            return
        if finish is None:
            err = BackendError(
                f"The answer from {self.host} was cut off before it finished (the connection ended "
                "without the end-of-stream marker). Try again.",
                kind="stream_cut", retryable=True, status=502, partial_text=state.text,
            )
            raise _Failed(err, None)
        yield Chunk(usage=usage, finish_reason=finish)

    def _complete_once(
        self, client: Any, body: dict[str, Any], deadline: float, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        completion, _ = self._create(client, body, deadline, cancel)
        if completion is None:
            yield Chunk(finish_reason="cancelled")
            return
        self.last_response = _scrub_obj(completion.to_dict(), self._api_key)
        choices = completion.choices or []
        if not choices:
            raise _Failed(BackendError(
                f"{self.host} answered without any text (no choices in the response). Try again.",
                kind="server", retryable=True, status=502), None)
        message = choices[0].message
        text = (getattr(message, "content", None) or "") if message is not None else ""
        usage = _usage(completion.usage) if completion.usage is not None else None
        yield Chunk(text=text, usage=usage, finish_reason=choices[0].finish_reason or "stop",
                    raw=self.last_response)

    # ------------------------------------------------------------------------------ retries
    def _attempt_timeout(self, deadline: float) -> float:
        return max(0.05, deadline - time.monotonic())

    def _retry_delay(self, failed: "_Failed", attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None when it should not be retried."""
        if not failed.error.retryable or attempt >= self.max_retries:
            return None
        if failed.retry_after is not None:
            delay = min(failed.retry_after, MAX_RETRY_AFTER_S)
            if failed.retry_after > MAX_RETRY_AFTER_S:
                return None
        else:
            # Exponential backoff with jitter, so many clients do not retry in lockstep.
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
        # Leave the next attempt a fair share of the budget (a quarter, at most a second).
        if time.monotonic() + delay + min(1.0, self.timeout_s / 4) > deadline:
            return None
        return delay

    # ------------------------------------------------------------------------------ errors
    def _failure(self, e: Exception, *, partial: str, timeout: float, during: str = "request") -> "_Failed":
        """Map a client exception to a :class:`_Failed` holding the user-facing BackendError."""
        host = self.host
        model = self._model
        secs = f"{self.timeout_s:g}"
        retry_after: float | None = None
        swap = False

        def err(message: str, kind: str, status: int, retryable: bool = False) -> BackendError:
            return BackendError(self._scrub(message), kind=kind, status=status, retryable=retryable,
                                partial_text=partial)

        if isinstance(e, BackendError):
            return _Failed(e, e)
        if isinstance(e, openai.APITimeoutError):
            if partial:
                msg = f"The answer from {host} stopped arriving (no data for {timeout:.3g} s). Try again."
            else:
                msg = (f"No answer from {host} within {secs} s: the server may be overloaded or the model slow. "
                       "Try again, or raise REQUEST_TIMEOUT_S.")
            return _Failed(err(msg, "timeout", 504, True), e)
        if isinstance(e, openai.APIConnectionError):
            cause = repr(e.__cause__ or "")
            if during == "stream":
                msg = (f"The answer from {host} was cut off: the connection broke before it finished. "
                       "Try again.")
                return _Failed(err(msg, "stream_cut", 502, True), e)
            if "UnsupportedProtocol" in cause or "InvalidURL" in cause:
                return _Failed(err(_bad_url_message(self._base_url), "config", 400), e)
            if re.search(r"Name or service not known|nodename nor servname|getaddrinfo|name resolution|"
                         r"No address associated", cause):
                msg = f"Could not find the server {host} (the name does not resolve): check the base URL."
                return _Failed(err(msg, "connection", 502, True), e)
            if "refused" in cause.lower():
                msg = f"Could not connect to {host} (connection refused): is the server running, and is the base URL right?"
            else:
                msg = f"Could not reach {host} ({_short_cause(e)}): is the server running, and is the base URL right?"
            return _Failed(err(msg, "connection", 502, True), e)
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            said = self._server_text(e)
            self.last_response = {"status": status, "error": _scrub_obj(_error_body(e), self._api_key)}
            quoted = f" The server said: {said}" if said else ""
            if status == 401:
                msg = (f"{host} rejected the API key (401 Unauthorized): check OPENAI_API_KEY in .env or "
                       "the environment, or the key field of the Hosted-API tab.")
                return _Failed(err(msg, "auth", 401), e)
            if status == 403:
                msg = (f"{host} refused access (403 Forbidden) to model {model!r}: the key's project or "
                       f"organization may not have access to it, or the region is not supported.{quoted}")
                return _Failed(err(msg, "auth", 403), e)
            if status == 404:
                if _mentions_model(e, said):
                    msg = (f"{host} does not know the model {model!r} (404): check the model id "
                           f"(GET {_display_url(self._base_url or OPENAI_BASE_URL)}/models lists them).")
                else:
                    msg = (f"Nothing found at {_display_url(self._base_url or OPENAI_BASE_URL)} (404): check "
                           f"the base URL (OpenAI-compatible servers usually end in /v1) and the model id {model!r}.")
                return _Failed(err(msg, "not_found", 404), e)
            if status == 429:
                retry_after = _retry_after(e.response.headers)
                if (e.code or "") == "insufficient_quota" or "quota" in said.lower():
                    msg = (f"{host} says the account's quota is used up (429): check the plan and billing; "
                           f"retrying will not help.{quoted}")
                    return _Failed(err(msg, "rate_limit", 429), e)
                wait = f"wait {retry_after:.3g} s" if retry_after is not None else "wait a moment"
                msg = f"{host} is rate limiting requests (429 Too Many Requests): {wait} and try again.{quoted}"
                return _Failed(err(msg, "rate_limit", 429, True), e, retry_after)
            if status >= 500 or status in _RETRY_STATUSES:
                retry_after = _retry_after(e.response.headers)
                what = {408: "request timeout", 409: "conflict", 502: "bad gateway", 503: "service unavailable",
                        504: "gateway timeout"}.get(status, "server error")
                msg = f"{host} had an error ({status} {what}): try again later.{quoted}"
                return _Failed(err(msg, "server", 502 if status >= 500 else status, True), e, retry_after)
            if status in (400, 422):
                # Swap only when the server says it does not take the parameter (not for "too large").
                names_it = (e.param or "") in _TOKEN_PARAMS or re.search(r"max_(completion_)?tokens", said)
                if names_it and re.search(r"unsupported|not supported|unrecognized|unknown|extra|instead", said, re.I):
                    swap = True
                msg = f"{host} refused the request as invalid ({status}).{quoted or ' Check the settings.'}"
                failed = _Failed(err(msg, "bad_request", 400), e)
                failed.swap_token_param = swap
                return failed
            msg = f"{host} answered with an error ({status}).{quoted}"
            return _Failed(err(msg, "bad_request" if status < 500 else "server", status), e)
        if isinstance(e, openai.APIError):  # an error event inside the stream
            said = self._sanitize(getattr(e, "message", "") or "")
            msg = f"{host} reported an error while answering: {said or 'no details'}. Try again."
            return _Failed(err(msg, "server", 502, not partial), e)
        if isinstance(e, openai.OpenAIError):
            return _Failed(err(f"The OpenAI client failed: {self._sanitize(str(e))}", "internal", 500), e)
        raise e

    def _server_text(self, e: Any) -> str:
        body = getattr(e, "body", None)
        text = ""
        if isinstance(body, dict):
            for key in ("message", "detail", "error"):
                if body.get(key):
                    value = body[key]
                    text = value if isinstance(value, str) else json.dumps(value)
                    break
        elif isinstance(body, str):
            text = body
        if not text:
            try:
                text = e.response.text
            except Exception:  # noqa: BLE001 - a body that cannot be read is simply not quoted
                text = ""
        return self._sanitize(text)

    def _sanitize(self, text: str) -> str:
        text = " ".join(self._scrub(str(text)).split())
        text = "".join(ch for ch in text if ch.isprintable())
        if len(text) > MAX_SERVER_TEXT:
            text = text[: MAX_SERVER_TEXT - 1] + "…"
        return text

    def _scrub(self, text: str) -> str:
        return _scrub_text(text, self._api_key)

    # ------------------------------------------------------------------------------ client
    def _get_client(self) -> Any:
        if self._api_key is None and self._base_url is None:
            raise BackendError(
                "No OpenAI API key is set: put OPENAI_API_KEY=... in .env or the environment, or paste a key "
                "into the key field of the Hosted-API tab (or set a base URL for a local server).",
                kind="auth", status=401,
            )
        if self._base_url is not None and _bad_url(self._base_url):
            raise BackendError(_bad_url_message(self._base_url), kind="config", status=400)
        with self._client_lock:
            if self._client is None:
                # base_url and api_key are always given, so the client never reads OPENAI_BASE_URL /
                # OPENAI_API_KEY itself: config.Settings is the one reader of the environment.
                self._client = openai.OpenAI(
                    api_key=self._api_key or PLACEHOLDER_KEY,
                    base_url=self._base_url or OPENAI_BASE_URL,
                    timeout=self.timeout_s,
                    max_retries=0,
                    http_client=self._http_client,
                )
            return self._client


# ------------------------------------------------------------------------------------------- helpers
class _Failed(Exception):
    """One failed attempt: the user-facing error, its cause and what a retry should know."""

    def __init__(self, error: BackendError, cause: BaseException | None, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.cause = cause
        self.retry_after = retry_after
        self.swap_token_param = False


class _Attempt:
    """What one attempt has shown the caller (retries are allowed only while nothing was)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.text_sent = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _CancelWatcher:
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


def _open(call: Callable[[], Any], cancel: threading.Event | None) -> Any:
    """Run ``call`` (a request, up to its response headers), or return None as soon as ``cancel`` is set.

    Until the headers arrive there is no response object whose socket could be shut down, so the
    request runs in a helper thread and the caller stops waiting at once on cancel. The abandoned
    request ends on its own (an answer or the attempt's timeout), and its response is closed then,
    which drops the connection.
    """
    if cancel is None:
        return call()
    if cancel.is_set():
        return None
    lock = threading.Lock()
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            value, error = call(), None
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            value, error = None, e
        with lock:
            if box.get("abandoned"):
                if value is not None:
                    _close_quietly(value)
                return
            box["value"], box["error"] = value, error
            done.set()

    threading.Thread(target=work, name="openai-request", daemon=True).start()
    while not done.wait(CANCEL_POLL_S):
        if cancel.is_set():
            with lock:
                if not done.is_set():
                    box["abandoned"] = True
                    return None
    if box["error"] is not None:
        raise box["error"]
    return box["value"]


def _close_quietly(value: Any) -> None:
    close = getattr(value, "close", None)  # a Stream; a parsed completion has nothing to close
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001
            pass


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


def _split_body(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    kwargs = {k: v for k, v in body.items() if k in _KNOWN_ARGS}
    extra = {k: v for k, v in body.items() if k not in _KNOWN_ARGS}
    return kwargs, extra


def _swap_token_param(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    for a, b in (_TOKEN_PARAMS, _TOKEN_PARAMS[::-1]):
        if a in body:
            value = out.pop(a)
            out[b] = value
            break
    # Keep the key order readable: model, messages, ... as build_request made it.
    return out


def _usage(u: Any) -> Usage | None:
    prompt = getattr(u, "prompt_tokens", None)
    completion = getattr(u, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None  # unknown beats wrong: the UI says "unknown"
    return Usage(input_tokens=prompt, output_tokens=completion)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(raw) if name == "retry-after" else None
            if parsed is None:
                continue
            value = parsed.timestamp() - time.time()
        return max(0.0, value)
    return None


def _error_body(e: Any) -> Any:
    try:
        return json.loads(e.response.text)
    except Exception:  # noqa: BLE001
        body = getattr(e, "body", None)
        return body if body is not None else (getattr(e.response, "text", "") or "")[:2000]


def _mentions_model(e: Any, said: str) -> bool:
    code = (getattr(e, "code", None) or "").lower()
    return "model" in code or "model" in said.lower()


def _short_cause(e: BaseException) -> str:
    cause = e.__cause__ or e
    text = str(cause) or type(cause).__name__
    return text[:120]


def _scrub_text(text: str, key: str | None) -> str:
    if key and len(key) >= 4:
        for variant in {key, urllib.parse.quote(key, safe=""), json.dumps(key)[1:-1]}:
            text = text.replace(variant, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).split()[0] + " ***" if " " in m.group(0) else "***", text)
    return text


def _scrub_obj(obj: Any, key: str | None) -> Any:
    """A JSON-able copy of ``obj`` with the key (and anything key-shaped) masked."""
    try:
        text = json.dumps(obj, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return None
    scrubbed = _scrub_text(text, key)
    if scrubbed == text:
        return json.loads(text)
    try:
        return json.loads(scrubbed)
    except ValueError:  # masking broke the JSON (a key inside an escape): show it as text
        return {"scrubbed": scrubbed}


def _bad_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return True
    return (parts.scheme.lower() not in ("http", "https") or not parts.hostname
            or any(ch.isspace() for ch in url))


def _bad_url_message(url: str | None) -> str:
    shown = _display_url(url or "")[:80]
    return (f"The base URL {shown!r} is not a valid http(s) URL: write it like http://localhost:8000/v1 "
            "(scheme, host, optional port and path).")


def _host_of(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the server"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else (host or "the server")


def _display_url(url: str) -> str:
    """The URL without user:password, query or fragment (any of which may hold a secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url.split("?")[0].split("#")[0])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

