"""Per-session rate limiting for a public deployment: a sliding window of requests per minute."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from .core import BackendError


class RateLimiter:
    """Requests per minute per session, as a sliding window (thread-safe, bounded memory).

    ``check(session_id)`` records a request or raises :class:`BackendError` (``rate_limit``, 429)
    that says how many seconds to wait. Each session keeps at most ``per_minute`` timestamps; idle
    sessions are dropped on a periodic sweep, and past ``max_sessions`` the least recently seen
    session is dropped first, so memory stays bounded however many sessions come and go.
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        window_s: float = 60.0,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = int(per_minute)
        self.window_s = float(window_s)
        self.max_sessions = int(max_sessions)
        self._clock = clock
        self._lock = threading.Lock()
        # session id -> timestamps of its accepted requests in the window (oldest first); LRU order.
        self._hits: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._last_sweep = clock()

    def check(self, session_id: str | None) -> None:
        """Count one request for ``session_id``, or refuse it when the session is over its limit.

        A request without a browser session (``/v1``, the command line) is not counted here: the limit is per
        page session, and ``/v1`` has its own bounds (its engine's line, MAX_QUEUE_SIZE, LOCAL_API_KEY).
        """
        if not session_id:
            return
        key = session_id
        with self._lock:
            now = self._clock()
            if now - self._last_sweep >= self.window_s:
                self._sweep(now)
            hits = self._hits.get(key)
            if hits is None:
                hits = collections.deque(maxlen=self.per_minute)
                self._hits[key] = hits
                while len(self._hits) > self.max_sessions:
                    self._hits.popitem(last=False)
            else:
                self._hits.move_to_end(key)
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(hits[0] + self.window_s - now))
                raise BackendError(
                    f"Too many requests: this session may send {self.per_minute} per minute. Try again in {wait} s.",
                    kind="rate_limit",
                    status=429,
                    retryable=True,
                )
            hits.append(now)

    def _sweep(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.window_s]:
            del self._hits[key]
        self._last_sweep = now

    def __len__(self) -> int:
        """How many sessions are tracked now (for tests and memory checks)."""
        with self._lock:
            return len(self._hits)
