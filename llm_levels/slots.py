"""The line for the local model: a first-come-first-served bounded semaphore whose waiters see their place.

The app runs at most ``LOCAL_CONCURRENCY`` local generations at once, whoever asks (Chat, the Local tab,
Compare, the Lab, the ``/v1`` endpoint). Every other local request waits in this one line, in arrival
order, and a page can show each waiter how many requests are ahead of it. Hosted requests never stand
in it: they do not use the local model (each tab has its own Gradio lane, see ``ui/shared.py``).

Two ways in:

- **as a semaphore** -- ``slots.acquire(timeout=..., cancel=...)`` then ``slots.release()``: blocking,
  with :class:`threading.BoundedSemaphore`'s semantics (``blocking``/``timeout``, ``ValueError`` on one
  release too many, ``with slots:``) plus FIFO order and an optional cancel event. The ``/v1`` endpoint
  and the Lab's scorer use it this way.
- **with a ticket** -- ``ticket = slots.join()`` takes a place in line and returns at once. The caller
  polls ``ticket.wait(0.25)`` and shows ``ticket.ahead`` meanwhile (a Gradio generator yields a
  "N ahead of you" note between two polls, which is also where Stop can end it), and ``ticket.cancel()``
  leaves the line. A ticket has a semaphore's face too (``acquire``/``release``), so it can be handed to a
  :class:`~llm_levels.backends.local_hf.LocalBackend` as its ``slots``: the backend starts at once when
  the turn has come, and gives the slot back when its generation has really ended. A ticket is good for
  one generation.

Why not just Gradio's queue: its rank only counts the events of one Gradio lane, while this line holds
local requests from every tab and from ``/v1``, and Gradio's lane would also hold hosted requests that
have nothing to wait for.
"""

from __future__ import annotations

import threading
import time
from collections import deque

#: How often a waiter checks its cancel event (seconds): the most a cancelled waiter stays in line.
POLL_S = 0.05

_WAITING, _GRANTED, _TAKEN, _DONE = "waiting", "granted", "taken", "done"


class SlotTicket:
    """One place in a :class:`LocalSlots` line (from :meth:`LocalSlots.join`).

    States: waiting (in line) -> granted (holds a slot, nobody uses it yet) -> taken (a generation holds
    it, see :meth:`acquire`) -> done (the slot was given back); or waiting/granted -> done by
    :meth:`cancel`. Thread-safe: a page thread may read :attr:`ahead` while a backend thread waits.
    """

    def __init__(self, slots: LocalSlots) -> None:
        self._slots = slots
        self._state = _WAITING
        # Set when the ticket leaves the line, either way (granted, or cancelled).
        self._settled = threading.Event()

    # ------------------------------------------------------------------ reading
    @property
    def ahead(self) -> int | None:
        """How many requests are in line before this one (0: next); None once it is out of the line."""
        return self._slots.position(self)

    @property
    def waiting(self) -> bool:
        return self._state == _WAITING

    @property
    def granted(self) -> bool:
        """Whether this ticket holds a slot now (its turn came and the slot was not given back yet)."""
        return self._state in (_GRANTED, _TAKEN)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the ticket is out of the line (its turn came, or it was cancelled); False on timeout.

        Timing out does not give up the place: only :meth:`cancel` does.
        """
        return self._settled.wait(timeout)

    # ------------------------------------------------------------------ the semaphore face (for a backend)
    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: threading.Event | None = None
    ) -> bool:
        """Wait for this ticket's turn and take its slot: True, and the caller must :meth:`release` it.

        False when ``cancel`` is set (while waiting, or even just as the turn came: the ticket then
        leaves the line or passes its slot on, so a cancelled request never starts), when the ticket was
        cancelled, or when ``timeout`` (or ``blocking=False``) ran out (it then stays in line).
        Raises ``RuntimeError`` if the slot was already taken: a ticket is good for one generation.
        """
        deadline = time.monotonic() + (0.0 if not blocking else timeout if timeout is not None else float("inf"))
        while not self._settled.is_set():
            if cancel is not None and cancel.is_set():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            step = POLL_S if cancel is not None else None  # a cancel event must be looked at regularly
            if left != float("inf"):
                step = left if step is None else min(step, left)
            self._settled.wait(step)
        if cancel is not None and cancel.is_set():
            self.cancel()
            return False
        with self._slots._lock:
            if self._state == _GRANTED:
                self._state = _TAKEN
                return True
            if self._state == _TAKEN:
                raise RuntimeError("this ticket's slot is already taken: a ticket is good for one generation")
            return False

    def release(self) -> None:
        """Give the slot back (it goes to the first in line). ``ValueError`` if this ticket holds none."""
        with self._slots._lock:
            if self._state not in (_GRANTED, _TAKEN):
                raise ValueError(f"this ticket holds no slot (it is {self._state})")
            self._state = _DONE
            self._slots._hand_on()

    def cancel(self) -> None:
        """Leave: out of the line at once while waiting; a granted slot nobody took yet goes to the next
        in line. Does nothing once a generation took the slot (it gives it back when it ends) or when the
        ticket is done. Safe to call more than once."""
        with self._slots._lock:
            if self._state == _WAITING:
                self._slots._line.remove(self)
                self._state = _DONE
                self._settled.set()
            elif self._state == _GRANTED:
                self._state = _DONE
                self._slots._hand_on()

    def __repr__(self) -> str:
        return f"<SlotTicket {self._state}, {self.ahead} ahead>"


class LocalSlots:
    """At most ``limit`` holders at once; others wait in one FIFO line and can read their place in it.

    Drop-in for the ``threading.BoundedSemaphore`` the app used before (see the module docstring), with
    :meth:`join` for callers that want to show the wait. Fair: a slot given back goes straight to the
    first ticket in line, so a newcomer never overtakes a waiter.
    """

    def __init__(self, limit: int) -> None:
        if int(limit) < 1:
            raise ValueError(f"LocalSlots needs at least one slot, not {limit!r}")
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._held = 0
        self._line: deque[SlotTicket] = deque()

    # ------------------------------------------------------------------ reading
    @property
    def in_use(self) -> int:
        """Slots held now (granted tickets and semaphore-style holders)."""
        return self._held

    @property
    def waiting(self) -> int:
        """Requests in line now."""
        return len(self._line)

    def position(self, ticket: SlotTicket) -> int | None:
        """How many are in line before ``ticket`` (0: it is next); None when it is not in line."""
        with self._lock:
            if ticket._state != _WAITING:
                return None
            try:
                return self._line.index(ticket)
            except ValueError:  # pragma: no cover - a waiting ticket is always in its line
                return None

    # ------------------------------------------------------------------ joining
    def join(self) -> SlotTicket:
        """Take a place in line now and return its ticket (granted at once when a slot is free and
        nobody waits)."""
        ticket = SlotTicket(self)
        with self._lock:
            if self._held < self.limit and not self._line:
                self._held += 1
                ticket._state = _GRANTED
                ticket._settled.set()
            else:
                self._line.append(ticket)
        return ticket

    def acquire(
        self, blocking: bool = True, timeout: float | None = None, *, cancel: threading.Event | None = None
    ) -> bool:
        """Semaphore-style: wait in line for a slot (True: the caller must :meth:`release` it).

        False, out of the line, when ``blocking`` is False and no slot is free for a newcomer, when
        ``timeout`` runs out, or when ``cancel`` is set (checked every :data:`POLL_S`).
        """
        if not blocking:
            with self._lock:
                if self._held < self.limit and not self._line:
                    self._held += 1
                    return True
                return False
        ticket = self.join()
        if ticket.acquire(timeout=timeout, cancel=cancel):
            return True  # the slot now belongs to the caller, who gives it back with release()
        ticket.cancel()  # a timeout leaves the line too (semaphore semantics)
        return False

    def release(self) -> None:
        """Give one slot back (to the first in line, if anyone waits). ``ValueError`` if none is held."""
        with self._lock:
            if self._held == 0:
                raise ValueError("LocalSlots released more times than it was acquired")
            self._hand_on()

    def __enter__(self) -> LocalSlots:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _hand_on(self) -> None:
        """A held slot is free (call with the lock held): the first in line gets it, else it is counted free."""
        if self._line:
            nxt = self._line.popleft()
            nxt._state = _GRANTED
            nxt._settled.set()
        else:
            self._held -= 1

    def __repr__(self) -> str:
        return f"<LocalSlots {self._held}/{self.limit} in use, {len(self._line)} waiting>"
