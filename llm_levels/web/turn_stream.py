"""A turn's events for the event loop: :class:`TurnStream` runs the turn service's blocking iterator in a
worker thread and hands each event over through an asyncio queue.

The worker owns the iterator from start to end (a generator cannot be closed from another thread while it
runs), so stopping is: :meth:`TurnStream.stop` sets the turn's cancel event; the turn sees it at its next
look (while in line: it leaves the line; while generating: the backend stops), the worker closes the
iterator, and the log says why it stopped (``... client went away; generation stopped after N chunk(s);
worker ended ...``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

from ..core import BackendError
from ..turns import Delta, Event, Failed, Started

log = logging.getLogger("llm_levels.web.openai")

#: What :meth:`TurnStream.next` returns once the worker has ended.
END = object()


class TurnStream:
    """One turn's events, produced by a worker thread and read on the event loop with :meth:`next`.

    Build it on the event loop, pass :attr:`cancel` to ``run_turn``, then :meth:`start` with the events.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.cancel = threading.Event()
        self.started = False
        self.chunks = 0
        self._why_stopped = ""
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[Event | object] = asyncio.Queue()
        self._thread: threading.Thread | None = None

    def start(self, events: Iterator[Event]) -> TurnStream:
        self._thread = threading.Thread(
            target=self._work, args=(events,), name=f"v1-{self.request_id[-8:]}", daemon=True
        )
        self._thread.start()
        return self

    async def next(self) -> Event | object:
        """The next event, or :data:`END`."""
        return await self._items.get()

    def stop(self, why: str) -> None:
        """End the turn early (``why`` goes to the log); safe to call more than once, or after it ended."""
        if not self.cancel.is_set():
            self._why_stopped = why
            self.cancel.set()

    def _put(self, item: Event | object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            self.cancel.set()

    def _work(self, events: Iterator[Event]) -> None:
        t0 = time.perf_counter()
        try:
            for event in events:
                if isinstance(event, Started):
                    self.started = True
                elif isinstance(event, Delta):
                    self.chunks += 1
                self._put(event)
                if self.cancel.is_set():
                    break
        except Exception:  # run_turn reports failures as events: anything raised here is a bug
            log.exception("%s: the turn failed", self.request_id)
            self._put(
                Failed(
                    BackendError(
                        "The local model failed while answering; see the app log.", kind="internal", status=500
                    )
                )
            )
        finally:
            try:
                events.close()  # out of the line, or the backend stops generating
            except Exception:  # pragma: no cover - cleanup must not hide the real outcome
                log.exception("%s: closing the turn failed", self.request_id)
            self._log_end(time.perf_counter() - t0)
            self._put(END)

    def _log_end(self, seconds: float) -> None:
        if not self._why_stopped:
            return
        if self.started:
            log.info(
                "%s: %s; generation stopped after %d chunk(s); worker ended %.2f s after start",
                self.request_id,
                self._why_stopped,
                self.chunks,
                seconds,
            )
        else:
            log.info(
                "%s: %s while waiting; left the line; worker ended %.2f s after start",
                self.request_id,
                self._why_stopped,
                seconds,
            )
