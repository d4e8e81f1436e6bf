"""The local model's line (llm_levels/slots.py): FIFO order, places, cancel while waiting, release."""

from __future__ import annotations

import threading
import time

import pytest

from llm_levels.slots import POLL_S, LocalSlots


def wait_until(cond, within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_free_slots_are_granted_at_once_then_others_wait_with_their_place():
    slots = LocalSlots(2)
    a, b = slots.join(), slots.join()
    assert a.granted and b.granted and a.ahead is None and slots.in_use == 2
    c, d, e = slots.join(), slots.join(), slots.join()
    assert [t.ahead for t in (c, d, e)] == [0, 1, 2] and slots.waiting == 3
    assert not c.wait(0.01) and c.waiting and not c.granted
    a.release()  # the freed slot goes straight to the first in line
    assert c.wait(0) and c.granted and c.ahead is None
    assert [d.ahead, e.ahead] == [0, 1] and slots.in_use == 2


def test_first_come_first_served_across_threads():
    slots = LocalSlots(1)
    assert slots.acquire()
    order: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        assert slots.acquire()
        with lock:
            order.append(i)
        slots.release()

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        wait_until(lambda n=i + 1: slots.waiting == n)  # each joins the line before the next one starts
    slots.release()
    for t in threads:
        t.join(5)
    assert order == list(range(6))
    assert slots.in_use == 0 and slots.waiting == 0


def test_a_newcomer_never_overtakes_a_waiter():
    slots = LocalSlots(1)
    first = slots.join()
    waiter = slots.join()
    first.release()
    # The slot went to the waiter, so it is not free for a newcomer, even before the waiter takes it.
    assert waiter.granted and not slots.acquire(blocking=False)
    assert not slots.acquire(timeout=0.05) and slots.waiting == 0  # a timed-out acquire leaves the line
    waiter.release()
    assert slots.acquire(blocking=False)
    slots.release()


def test_cancel_while_waiting_leaves_the_line_at_once_and_never_starts():
    slots = LocalSlots(1)
    holder = slots.join()
    a, b, c = slots.join(), slots.join(), slots.join()
    b.cancel()
    assert b.ahead is None and not b.waiting and not b.granted and b.wait(0)  # out of the line, settled
    assert [a.ahead, c.ahead] == [0, 1]
    holder.release()
    assert a.granted and not b.granted and c.ahead == 0
    assert not b.acquire(blocking=False)  # a cancelled ticket never gets a slot
    b.cancel()  # twice is fine
    a.release()
    assert c.granted


def test_a_cancel_event_takes_a_waiting_backend_out_of_the_line():
    slots = LocalSlots(1)
    holder = slots.join()
    ticket = slots.join()
    cancel = threading.Event()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(ticket.acquire(cancel=cancel)))
    t.start()
    time.sleep(0.1)
    assert t.is_alive() and ticket.ahead == 0
    t0 = time.monotonic()
    cancel.set()
    t.join(2)
    assert result == [False] and time.monotonic() - t0 < POLL_S * 4 + 0.2
    assert ticket.ahead is None and slots.waiting == 0
    holder.release()
    assert slots.in_use == 0  # the slot was not handed to the cancelled ticket


def test_cancelled_just_as_the_turn_came_passes_the_slot_on():
    slots = LocalSlots(1)
    holder = slots.join()
    ticket, nxt = slots.join(), slots.join()
    holder.release()
    assert ticket.granted
    cancel = threading.Event()
    cancel.set()
    assert not ticket.acquire(cancel=cancel)  # never starts...
    assert nxt.granted and slots.in_use == 1  # ...and the slot went on to the next in line


def test_a_granted_slot_nobody_took_is_passed_on_by_cancel_but_a_taken_one_is_not():
    slots = LocalSlots(1)
    granted = slots.join()
    waiter = slots.join()
    granted.cancel()
    assert waiter.granted
    assert waiter.acquire(timeout=0)  # a generation takes it
    with pytest.raises(RuntimeError, match="one generation"):
        waiter.acquire(timeout=0)
    waiter.cancel()  # the caller's cleanup: the slot belongs to the generation now
    assert waiter.granted and slots.in_use == 1
    waiter.release()
    assert slots.in_use == 0 and not waiter.granted


def test_release_is_bounded_like_a_bounded_semaphore():
    slots = LocalSlots(2)
    with pytest.raises(ValueError):
        slots.release()
    with slots:
        assert slots.in_use == 1
    assert slots.in_use == 0
    t = slots.join()
    t.release()
    with pytest.raises(ValueError, match="holds no slot"):
        t.release()
    with pytest.raises(ValueError):
        LocalSlots(0)


def test_semaphore_face_with_a_cancel_event_and_timeouts():
    slots = LocalSlots(1)
    assert slots.acquire(timeout=0.01)
    cancel = threading.Event()
    cancel.set()
    assert not slots.acquire(cancel=cancel) and slots.waiting == 0
    assert not slots.acquire(timeout=0.05) and slots.waiting == 0
    slots.release()
    assert slots.acquire(cancel=threading.Event())
    slots.release()
    assert slots.in_use == 0


def test_many_threads_never_exceed_the_limit_and_all_finish():
    slots = LocalSlots(3)
    running = 0
    peak = 0
    lock = threading.Lock()

    def worker(i: int) -> None:
        nonlocal running, peak
        cancel = threading.Event()
        if i % 5 == 0:
            cancel.set()  # some give up while they wait
        if i % 2:
            ticket = slots.join()
            ok = ticket.acquire(cancel=cancel)
            release = ticket.release
        else:
            ok = slots.acquire(cancel=cancel)
            release = slots.release
        if not ok:
            return
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak <= 3 and slots.in_use == 0 and slots.waiting == 0
