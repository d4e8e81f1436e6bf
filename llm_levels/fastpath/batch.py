"""BatchScheduler: concurrent requests decoded together, one pass over the weights per step for all.

Decoding one token is bound by reading the weights; reading them once for four rows costs little more
than for one. A single worker thread owns the decode loop: each step it admits waiting requests (runs
their prompts), then decodes one token for every active request at once and hands each its token.
Every active request gets a token every step, so nobody is starved; requests beyond ``max_batch`` wait
in arrival order. A request that asks to stop (cancel, closed stream, stop string) is dropped before
the next step, so no work is done for it after that step.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterable

from .decoder import FastDecoder

log = logging.getLogger(__name__)

_END = object()


class Ticket:
    """One request's place in the scheduler: read its tokens with :meth:`get`, end it with :meth:`cancel`."""

    def __init__(self, ids: list[int], max_new_tokens: int, sampler: Any, eos: set[int],
                 should_stop: Callable[[], bool]) -> None:
        self.ids = ids
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.eos = eos
        self.should_stop = should_stop
        self.generated: list[int] = []
        self.cache: Any = None
        self.done = False
        self._cancelled = threading.Event()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def cancel(self) -> None:
        """Ask the scheduler to drop this request before its next step."""
        self._cancelled.set()

    def stopping(self) -> bool:
        if self._cancelled.is_set():
            return True
        try:
            return bool(self.should_stop())
        except Exception:  # noqa: BLE001 - a broken callback stops its own request only
            log.exception("should_stop callback failed")
            return True

    def get(self, timeout: float | None = None) -> int | None:
        """The next token id; ``None`` at the end. Raises ``queue.Empty`` on timeout, or the step's error."""
        item = self._queue.get(timeout=timeout)
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    # --- used by the worker
    def _emit(self, token: int) -> bool:
        """Hand over a token; True when this request is finished."""
        self.generated.append(token)
        self._queue.put(token)
        return (token in self.eos or len(self.generated) >= self.max_new_tokens or self.stopping())

    def _finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.cache = None  # free the key/value memory now
        self._queue.put(error if error is not None else _END)


class BatchScheduler:
    """Decodes concurrent requests together on one :class:`FastDecoder` (see the module docstring).

    :meth:`submit` returns a :class:`Ticket` at once; the worker thread starts on demand and ends after
    ``idle_exit_s`` without work. An exception in a step is handed to every request in that step (each
    consumer re-raises it); the scheduler itself keeps serving later requests.
    """

    def __init__(self, decoder: FastDecoder, *, max_batch: int = 4, idle_exit_s: float = 5.0) -> None:
        self.decoder = decoder
        self.max_batch = max(1, int(max_batch))
        self.idle_exit_s = idle_exit_s
        self._cond = threading.Condition()
        self._pending: list[Ticket] = []
        self._active: list[Ticket] = []
        self._worker: threading.Thread | None = None
        self._closing = False
        #: Steps run and the rows in each (for diagnostics and the benchmark).
        self.steps = 0
        self.rows = 0
        self.max_rows_seen = 0

    @property
    def name(self) -> str:
        return self.decoder.name

    @property
    def worker(self) -> threading.Thread | None:
        """The current worker thread (None when idle)."""
        return self._worker

    def active_count(self) -> int:
        """Requests waiting or being decoded."""
        with self._cond:
            return len(self._pending) + len(self._active)

    def submit(
        self,
        input_ids: Iterable[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Ticket:
        """Queue a request; its tokens arrive through the returned :class:`Ticket`.

        Raises ``ValueError`` (bad prompt length or sampling values) before anything is queued.
        """
        from .sampling import Sampler

        ids = self.decoder.prompt_ids(input_ids, max_new_tokens)
        sampler = Sampler(ids, temperature=temperature, top_p=top_p, top_k=top_k,
                          repetition_penalty=repetition_penalty, seed=seed)
        eos = self.decoder.eos_ids(eos_token_ids)
        ticket = Ticket(ids, max_new_tokens, sampler, eos, should_stop)
        if max_new_tokens < 1:
            ticket._finish()
            return ticket
        with self._cond:
            self._pending.append(ticket)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="llm-levels-batch-decode", daemon=True)
                self._worker.start()
            self._cond.notify()
        return ticket

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker once the current requests are done (it also ends by itself when idle)."""
        with self._cond:
            self._closing = True
            worker = self._worker
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        with self._cond:
            self._closing = False

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        try:
            self.decoder.pick_threads()  # re-chosen each time decoding starts after a pause
            self.decoder.use_threads()
            while self._step():
                pass
        except BaseException as e:  # noqa: BLE001 - never leave a consumer waiting forever
            log.exception("the batch decode worker failed")
            with self._cond:
                victims = self._pending + self._active
                self._pending, self._active = [], []
                self._worker = None
            for t in victims:
                t._finish(e)

    def _step(self) -> bool:
        """Admit, then decode one token for every active request. False when the worker should end."""
        impl = self.decoder.impl
        with self._cond:
            while not self._pending and not self._active:
                if self._closing or (not self._cond.wait(self.idle_exit_s) and not self._pending):
                    self._worker = None
                    return False
            free = self.max_batch - len(self._active)
            admit, self._pending = self._pending[:free], self._pending[free:]
        for t in admit:
            if t.stopping():
                t._finish()
                continue
            try:
                t.cache = impl.new_cache(len(t.ids) + t.max_new_tokens)
                logits = impl.prefill(t.ids, t.cache)
                finished = t._emit(t.sampler(logits))
            except Exception as e:  # noqa: BLE001 - this request fails; the others go on
                t._finish(e)
                continue
            if finished:
                t._finish()
            else:
                with self._cond:
                    self._active.append(t)
        with self._cond:
            rows = [t for t in self._active if not t.stopping()]
            for t in self._active:
                if t not in rows:
                    t._finish()
            self._active = rows
        if not rows:
            return True
        try:
            logits = impl.decode([t.generated[-1] for t in rows], [t.cache for t in rows])
            done = [t._emit(t.sampler(logits[j])) for j, t in enumerate(rows)]
        except Exception as e:  # noqa: BLE001 - a failed step fails the requests in it
            with self._cond:
                self._active = [t for t in self._active if t not in rows]
            for t in rows:
                t._finish(e)
            return True
        self.steps += 1
        self.rows += len(rows)
        self.max_rows_seen = max(self.max_rows_seen, len(rows))
        with self._cond:
            for t, finished in zip(rows, done):
                if finished:
                    t._finish()
            self._active = [t for t in self._active if not t.done]
        return True
