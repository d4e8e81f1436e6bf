"""One time budget for a whole hosted request, around the ``openai`` client's own retries.

The client retries by itself (``max_retries``): connection errors, timeouts, 408, 409, 429 and 5xx,
with exponential backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms`` and
``x-should-retry``. What it does not have is a limit on the *whole* wait: each attempt gets the full
timeout again, and it sleeps as long as ``Retry-After`` says (up to two minutes). ``REQUEST_TIMEOUT_S``
promises the user an answer or an error within that time, retries included, so this module adds it
through the HTTP client's public event hooks, without replacing anything the client does:

- before each attempt (``request`` hook): give it only what is left of the budget as its timeout, and
  stop the client's retry loop at once when nothing is left or the user cancelled (an ``OpenAIError``
  raised there is re-raised by the client without another retry);
- after a failed attempt (``response`` hook): when the client's pause before its next attempt would
  not leave that attempt a fair share of the budget, say ``x-should-retry: false`` (a header the
  client obeys), so the real error (a 503, a 429 with a long ``Retry-After``) is reported now instead
  of a timeout later;
- the caller waits for the response headers in :func:`run_within`, which returns at the deadline or
  on cancel even while the client sleeps between attempts.

The hooks read the budget of the current request from a context variable that :func:`run_within`
sets in the thread that runs the request, so one HTTP client can serve many requests at once.
"""

from __future__ import annotations

import contextvars
import email.utils
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import openai

#: The client's backoff, as in ``openai._constants`` (INITIAL_RETRY_DELAY, MAX_RETRY_DELAY,
#: MAX_RETRY_AFTER_DELAY): used to foresee its pauses, and for the retries only this backend does
#: (a stream cut before its first token). tests/backends/test_openai_api.py checks they still match.
CLIENT_INITIAL_RETRY_DELAY_S = 0.5
CLIENT_MAX_RETRY_DELAY_S = 8.0
CLIENT_MAX_RETRY_AFTER_S = 120.0
#: How often a waiting caller checks its cancel event.
CANCEL_POLL_S = 0.05
#: The smallest read timeout given to (and quoted for) an attempt: a deadline that has just passed
#: must not turn into a zero or negative timeout.
MIN_ATTEMPT_TIMEOUT_S = 0.05

_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("openai_request_budget", default=None)


class BudgetSpent(Exception):
    """The budget ended before the response headers came (the client may still be between attempts)."""


class Budget:
    """The time left for one request (``timeout_s`` from now), and the user's cancel event."""

    def __init__(self, timeout_s: float, cancel: threading.Event | None = None) -> None:
        self.timeout_s = float(timeout_s)
        self.deadline = time.monotonic() + self.timeout_s
        self.cancel = cancel

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attempt_timeout(self) -> float:
        """The timeout of an attempt starting now: whatever is left of the budget."""
        return max(MIN_ATTEMPT_TIMEOUT_S, self.remaining())

    def fits(self, pause_s: float) -> bool:
        """Whether a retry after ``pause_s`` still leaves its attempt a fair share of the budget.

        The share is a quarter of the budget, at most a second: enough for a server that answers,
        while a retry that could only time out is not started.
        """
        return time.monotonic() + pause_s + min(1.0, self.timeout_s / 4) <= self.deadline

    def sleep(self, seconds: float) -> bool:
        """Pause before a retry; True when the user cancelled meanwhile."""
        if self.cancel is None:
            time.sleep(seconds)
            return False
        return self.cancel.wait(seconds)


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), if present and sane."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            try:
                value = email.utils.parsedate_to_datetime(raw).timestamp() - time.time() if divisor == 1 else None
            except (TypeError, ValueError, OverflowError):
                value = None
        if value is not None and math.isfinite(value):
            return max(0.0, value)
    return None


def backoff_s(retries_taken: int) -> float:
    """A pause before retry ``retries_taken + 1``, shaped like the client's (exponential, jittered)."""
    return client_max_backoff_s(retries_taken) * (1 - 0.25 * random.random())


def client_max_backoff_s(retries_taken: int) -> float:
    """The longest pause the client takes before retry ``retries_taken + 1`` (before its jitter)."""
    return min(CLIENT_INITIAL_RETRY_DELAY_S * 2.0 ** min(retries_taken, 32), CLIENT_MAX_RETRY_DELAY_S)


def client_pause_s(response: Any) -> float | None:
    """How long the client will pause before retrying after ``response`` (at most), or ``None`` when
    its ``Retry-After`` is longer than the client waits at all (then it does not retry)."""
    wait = retry_after(response.headers)
    if wait is not None and wait > CLIENT_MAX_RETRY_AFTER_S:
        return None
    if wait is not None and wait > 0:
        return wait
    try:
        taken = int(response.request.headers.get("x-stainless-retry-count", "0"))
    except (ValueError, RuntimeError):
        taken = 0
    return client_max_backoff_s(taken)


def _before_request(request: Any) -> None:
    budget = _CURRENT.get()
    if budget is None:
        return
    if budget.cancelled:
        raise openai.APIConnectionError(message="Cancelled by the user.", request=request)
    left = budget.remaining()
    if left <= 0:
        raise openai.APITimeoutError(request=request)
    timeouts = dict(request.extensions.get("timeout") or {})
    for name in ("connect", "read", "write", "pool"):
        current = timeouts.get(name)
        timeouts[name] = left if current is None else min(current, left)
    request.extensions = {**request.extensions, "timeout": timeouts}


def quota_exhausted(code: str | None, text: str) -> bool:
    """Whether a 429 means the account's quota is used up: then retrying cannot help (the client
    retries every 429)."""
    return (code or "") == "insufficient_quota" or "quota" in text.lower()


def _after_response(response: Any) -> None:
    budget = _CURRENT.get()
    if budget is None or response.status_code < 400 or response.headers.get("x-should-retry") == "false":
        return
    pause = client_pause_s(response)
    if (
        budget.cancelled
        or (pause is not None and not budget.fits(pause))
        or (response.status_code == 429 and _says_quota(response))
    ):
        response.headers["x-should-retry"] = "false"


def _says_quota(response: Any) -> bool:
    # An error body is small; the client reads it anyway before raising.
    try:
        text = response.read().decode("utf-8", "replace")[:4000]
    except Exception:  # noqa: BLE001 - a body that cannot be read is judged by its status alone
        return False
    return quota_exhausted(None, text)


def install_budget_hooks(http_client: Any) -> Any:
    """Add the budget hooks to an ``httpx2.Client`` (once) and return it."""
    hooks = http_client.event_hooks
    if _before_request not in hooks["request"]:
        hooks["request"].append(_before_request)
    if _after_response not in hooks["response"]:
        hooks["response"].append(_after_response)
    http_client.event_hooks = hooks
    return http_client


def run_within(budget: Budget, call: Callable[[], Any]) -> Any:
    """Run ``call`` (a request, up to its response headers, the client's retries included) under
    ``budget``: its value, or ``None`` as soon as the user cancels, or :class:`BudgetSpent` at the
    deadline.

    The request runs in a helper thread so that the caller can stop waiting at once, even while the
    client sleeps between attempts. An abandoned request ends on its own (the hooks refuse any
    further attempt), and a response that still arrives is closed, which drops the connection.
    """
    if budget.cancelled:
        return None
    lock = threading.Lock()
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        _CURRENT.set(budget)  # a new thread starts with an empty context: the hooks read this
        try:
            value, error = call(), None
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            value, error = None, e
        with lock:
            if box.get("abandoned"):
                _close_quietly(value)
                return
            box["value"], box["error"] = value, error
            done.set()

    threading.Thread(target=work, name="openai-request", daemon=True).start()
    while not done.wait(min(CANCEL_POLL_S, max(0.0, budget.remaining()))):
        if budget.cancelled or budget.remaining() <= 0:
            with lock:
                if not done.is_set():
                    box["abandoned"] = True
                    if budget.cancelled:
                        return None
                    raise BudgetSpent()
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
