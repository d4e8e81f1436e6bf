"""What went wrong with a hosted request, said in one line that tells the user what to do.

:func:`to_failure` maps an exception of the ``openai`` client (after its own retries) to a
:class:`Failed` holding the user-facing :class:`~llm_levels.core.BackendError`. Anything a server
sent back is quoted only after :func:`sanitize` scrubbed the key from it (and anything key-shaped),
flattened it to one line and cut it short: servers echo keys in their error bodies.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import openai

from ..core import BackendError
from .openai_budget import BudgetSpent, quota_exhausted, retry_after
from .openai_urls import bad_url_message

#: Longest server text quoted in an error message.
MAX_SERVER_TEXT = 300
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
_KEY_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{12,}"),  # OpenAI-style keys of any account
    re.compile(r"(?i)\bbearer\s+[^\s'\"]+"),
)
_STATUS_NAMES = {
    408: "request timeout",
    409: "conflict",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}
# How a server says it does not take a parameter (as opposed to "too large" for its value).
_UNSUPPORTED = re.compile(r"unsupported|not supported|unrecognized|unknown|extra|instead", re.I)
_NO_SUCH_HOST = re.compile(
    r"Name or service not known|nodename nor servname|getaddrinfo|name resolution|"
    r"No address associated"
)


class Failed(Exception):
    """One failed attempt: the user-facing error, its cause, and what the backend's loop should know.

    ``retry_here``: the failure came after the response headers (a stream that broke, an empty
    completion), where the client's own retries do not reach; the backend may retry it itself.
    ``swap_token_param``: the server refused the token-limit parameter by name. ``last_response``:
    the error body to show in the "under the hood" panel (scrubbed), when there was one.
    """

    def __init__(self, error: BackendError, cause: BaseException | None, *, retry_here: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.cause = cause
        self.retry_here = retry_here
        self.swap_token_param = False
        self.last_response: dict[str, Any] | None = None


@dataclass(frozen=True)
class Where:
    """What an error message names: the server, the model, the configured time budget, the key to hide."""

    host: str
    model: str
    base_url: str  # shown in hints; without user:password, query or fragment
    configured_url: str | None  # the base URL as configured (None: OpenAI), for the "bad URL" message
    timeout_s: float
    api_key: str | None

    def err(self, message: str, kind: str, status: int, retryable: bool = False, partial: str = "") -> BackendError:
        return BackendError(
            scrub_text(message, self.api_key), kind=kind, status=status, retryable=retryable, partial_text=partial
        )


def to_failure(e: BaseException, where: Where, *, partial: str, timeout: float, during: str = "request") -> Failed:
    """Map a client exception to a :class:`Failed`; exceptions that are not the client's are re-raised.

    ``during`` is "request" (up to the response headers: the client has already retried what it
    retries), "stream" (reading the answer: the client retries nothing there) or "models".
    """
    failed = _map(e, where, partial, timeout, during)
    failed.retry_here = during == "stream"
    return failed


def _map(e: BaseException, where: Where, partial: str, timeout: float, during: str) -> Failed:
    if isinstance(e, BackendError):
        return Failed(e, e)
    if isinstance(e, (openai.APITimeoutError, BudgetSpent)):
        return _timeout(e, where, partial, timeout)
    if isinstance(e, openai.APIConnectionError):
        return _connection(e, where, partial, during)
    if isinstance(e, openai.APIStatusError):
        return _status(e, where, partial)
    if isinstance(e, openai.APIError):  # an error event inside the stream
        said = sanitize(getattr(e, "message", "") or "", where.api_key)
        msg = f"{where.host} reported an error while answering: {said or 'no details'}. Try again."
        return Failed(where.err(msg, "server", 502, not partial, partial), e)
    if isinstance(e, openai.OpenAIError):
        msg = f"The OpenAI client failed: {sanitize(str(e), where.api_key)}"
        return Failed(where.err(msg, "internal", 500, partial=partial), e)
    raise e


def _timeout(e: BaseException, where: Where, partial: str, timeout: float) -> Failed:
    if partial:
        msg = f"The answer from {where.host} stopped arriving (no data for {timeout:.3g} s). Try again."
    else:
        msg = (
            f"No answer from {where.host} within {where.timeout_s:g} s: the server may be overloaded or the "
            "model slow. Try again, or raise REQUEST_TIMEOUT_S."
        )
    return Failed(where.err(msg, "timeout", 504, True, partial), e)


def _connection(e: openai.APIConnectionError, where: Where, partial: str, during: str) -> Failed:
    refused = _refused_by_guard(e)
    if refused is not None:  # the SSRF guard refused the address at connect time: say so, not "unreachable"
        return Failed(where.err(refused.message, refused.kind, refused.status, partial=partial), e)
    host, cause = where.host, repr(e.__cause__ or "")
    if during == "stream":
        msg = f"The answer from {host} was cut off: the connection broke before it finished. Try again."
        return Failed(where.err(msg, "stream_cut", 502, True, partial), e)
    if "UnsupportedProtocol" in cause or "InvalidURL" in cause:
        return Failed(where.err(bad_url_message(where.configured_url), "config", 400, partial=partial), e)
    if _NO_SUCH_HOST.search(cause):
        msg = f"Could not find the server {host} (the name does not resolve): check the base URL."
    elif "refused" in cause.lower():
        msg = f"Could not connect to {host} (connection refused): is the server running, and is the base URL right?"
    else:
        msg = f"Could not reach {host} ({_short_cause(e)}): is the server running, and is the base URL right?"
    return Failed(where.err(msg, "connection", 502, True, partial), e)


def _refused_by_guard(e: BaseException) -> BackendError | None:
    """The :class:`BackendError` of the base-URL guard (:mod:`llm_levels.ssrf`) behind a connection error."""
    seen: BaseException | None = e
    for _ in range(8):  # APIConnectionError <- the transport's ConnectError <- the guard's BackendError
        seen = seen.__cause__ or seen.__context__
        if seen is None or isinstance(seen, BackendError):
            return seen
    return None


def _status(e: openai.APIStatusError, where: Where, partial: str) -> Failed:
    status, host, model = e.status_code, where.host, where.model
    said = server_text(e, where.api_key)
    quoted = f" The server said: {said}" if said else ""
    swap = False
    if status == 401:
        failed = Failed(
            where.err(
                f"{host} rejected the API key (401 Unauthorized): check OPENAI_API_KEY in .env or "
                "the environment, or the key field of the Hosted-API tab.",
                "auth",
                401,
            ),
            e,
        )
    elif status == 403 and not _api_shaped(e):
        # Not an API's error object: a proxy or firewall on the way (or a server that is no API) refused.
        failed = Failed(
            where.err(
                f"The request to {host} was refused (403 Forbidden), and not by an OpenAI-compatible API: a proxy or "
                f"firewall on the way may block this destination, or the base URL is not an API server.{quoted}",
                "connection",
                403,
            ),
            e,
        )
    elif status == 403:
        failed = Failed(
            where.err(
                f"{host} refused access (403 Forbidden) to model {model!r}: the key's project or organization may not "
                f"have access to it, or the region is not supported.{quoted}",
                "auth",
                403,
            ),
            e,
        )
    elif status == 404:
        failed = Failed(where.err(_not_found_message(e, where, said), "not_found", 404), e)
    elif status == 429:
        failed = _rate_limited(e, where, said, quoted)
    elif status >= 500 or status in (408, 409):
        what = _STATUS_NAMES.get(status, "server error")
        failed = Failed(
            where.err(
                f"{host} had an error ({status} {what}): try again later.{quoted}",
                "server",
                502 if status >= 500 else status,
                True,
            ),
            e,
        )
    elif status in (400, 422):
        names_it = (e.param or "") in TOKEN_PARAMS or re.search(r"max_(completion_)?tokens", said)
        swap = bool(names_it and _UNSUPPORTED.search(said))
        failed = Failed(
            where.err(
                f"{host} refused the request as invalid ({status}).{quoted or ' Check the settings.'}",
                "bad_request",
                400,
            ),
            e,
        )
    else:
        failed = Failed(
            where.err(
                f"{host} answered with an error ({status}).{quoted}",
                "bad_request" if status < 500 else "server",
                status,
            ),
            e,
        )
    failed.swap_token_param = swap
    failed.last_response = {"status": status, "error": scrub_obj(error_body(e), where.api_key)}
    return failed


def _api_shaped(e: openai.APIStatusError) -> bool:
    """Whether the error body is an API's error object (``{"error": {"message", "type", ...}}``)."""
    body = getattr(e, "body", None)
    return isinstance(body, dict) and any(k in body for k in ("message", "type", "code"))


def _not_found_message(e: openai.APIStatusError, where: Where, said: str) -> str:
    code = (getattr(e, "code", None) or "").lower()
    if "model" in code or "model" in said.lower():
        return (
            f"{where.host} does not know the model {where.model!r} (404): check the model id "
            f"(GET {where.base_url}/models lists them)."
        )
    return (
        f"Nothing found at {where.base_url} (404): check the base URL (OpenAI-compatible servers usually end "
        f"in /v1) and the model id {where.model!r}."
    )


def _rate_limited(e: openai.APIStatusError, where: Where, said: str, quoted: str) -> Failed:
    if quota_exhausted(e.code, said):
        msg = (
            f"{where.host} says the account's quota is used up (429): check the plan and billing; "
            f"retrying will not help.{quoted}"
        )
        return Failed(where.err(msg, "rate_limit", 429), e)
    wait_s = retry_after(e.response.headers)
    wait = f"wait {wait_s:.3g} s" if wait_s is not None else "wait a moment"
    msg = f"{where.host} is rate limiting requests (429 Too Many Requests): {wait} and try again.{quoted}"
    return Failed(where.err(msg, "rate_limit", 429, True), e)


# ----------------------------------------------------------------------------------- server text
def server_text(e: Any, key: str | None) -> str:
    """The message a server put in its error body (or the body itself), sanitized for one line."""
    body = getattr(e, "body", None)
    text = ""
    if isinstance(body, dict):
        for name in ("message", "detail", "error"):
            if body.get(name):
                value = body[name]
                text = value if isinstance(value, str) else json.dumps(value)
                break
    elif isinstance(body, str):
        text = body
    if not text:
        try:
            text = e.response.text
        except Exception:  # noqa: BLE001 - a body that cannot be read is simply not quoted
            text = ""
    return sanitize(text, key)


def sanitize(text: str, key: str | None) -> str:
    """``text`` scrubbed of the key, on one line of printable characters, at most :data:`MAX_SERVER_TEXT`."""
    text = " ".join(scrub_text(str(text), key).split())
    text = "".join(ch for ch in text if ch.isprintable())
    if len(text) > MAX_SERVER_TEXT:
        text = text[: MAX_SERVER_TEXT - 1] + "…"
    return text


def scrub_text(text: str, key: str | None) -> str:
    """``text`` with ``key`` (raw, URL-encoded, JSON-escaped) and anything key-shaped masked."""
    if key and len(key) >= 4:
        for variant in {key, urllib.parse.quote(key, safe=""), json.dumps(key)[1:-1]}:
            text = text.replace(variant, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).split()[0] + " ***" if " " in m.group(0) else "***", text)
    return text


def scrub_obj(obj: Any, key: str | None) -> Any:
    """A JSON-able copy of ``obj`` with the key (and anything key-shaped) masked."""
    try:
        text = json.dumps(obj, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return None
    scrubbed = scrub_text(text, key)
    if scrubbed == text:
        return json.loads(text)
    try:
        return json.loads(scrubbed)
    except ValueError:  # masking broke the JSON (a key inside an escape): show it as text
        return {"scrubbed": scrubbed}


def error_body(e: Any) -> Any:
    """The error response as JSON when it is JSON, else the client's parsed body or the raw text."""
    try:
        return json.loads(e.response.text)
    except Exception:  # noqa: BLE001
        body = getattr(e, "body", None)
        return body if body is not None else (getattr(e.response, "text", "") or "")[:2000]


def _short_cause(e: BaseException) -> str:
    cause = e.__cause__ or e
    text = str(cause) or type(cause).__name__
    return text[:120]


def refuses_logprobs(failed: Failed) -> bool:
    """Whether a server refused the request because of ``logprobs``/``top_logprobs`` (a 400 or 422 naming them)."""
    cause = failed.cause
    if not isinstance(cause, openai.APIStatusError) or cause.status_code not in (400, 422):
        return False
    said = f"{getattr(cause, 'param', None) or ''} {getattr(cause, 'message', '') or ''} {failed.error.message}"
    return "logprob" in said.lower()


def swap_token_param(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its token-limit parameter under the other name (``max_tokens`` <-> ``max_completion_tokens``)."""
    out = dict(body)
    for a, b in (TOKEN_PARAMS, TOKEN_PARAMS[::-1]):
        if a in body:
            out[b] = out.pop(a)
            break
    return out


def no_key_error() -> BackendError:
    """What a hosted call says when it has neither a key nor a base URL of its own."""
    return BackendError(
        "No OpenAI API key is set: put OPENAI_API_KEY=... in .env or the environment, or paste a key "
        "into the key field of the Hosted-API tab (or set a base URL for a local server).",
        kind="auth",
        status=401,
    )
