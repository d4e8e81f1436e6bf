"""What ``make run`` prints once the app runs: the lines an operator needs at start-up (where it listens, the
engine, the model, its threads and context) and then only events, never a line on a timer (the app once
printed "session sweep" every 30 s)."""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections import defaultdict
from datetime import datetime

import psutil
import pytest

#: A message repeated at least this often at a steady interval is a timer's, not an event's.
REPEATS = 3
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ (\w+) (\S+): (.*)$")


def timed_messages(log: str) -> list[tuple[float, str]]:
    """(epoch seconds, message with its numbers blanked) of every logged line."""
    out = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if m:
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp()
            out.append((when, f"{m[2]} {m[3]}: " + re.sub(r"\d+", "N", m[4])))
    return out


def timer_lines(log: str) -> list[str]:
    """The messages logged on a timer: seen at least :data:`REPEATS` times, at a steady gap of 5 s or more."""
    times = defaultdict(list)
    for when, message in timed_messages(log):
        times[message].append(when)
    out = []
    for message, seen in times.items():
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        steady = len(seen) >= REPEATS and all(abs(g - statistics.median(gaps)) <= 2 for g in gaps)
        if steady and statistics.median(gaps) >= 5:
            out.append(message)
    return out


def test_timer_lines_are_found():
    """The check below would have caught the old sweep line (and lets events through)."""
    sweep = [
        f"2026-11-30 10:{m:02d}:{s:02d},001 INFO llm_levels.sessions: session sweep: 0 removed"
        for m in (1, 2)
        for s in (0, 30)
    ]
    events = [
        f"2026-11-30 10:0{m}:{s:02d},5 INFO llm_levels.web.openai: chatcmpl-{m}: llama.cpp stream=False"
        for m, s in ((0, 5), (0, 9), (1, 40), (2, 2))
    ]
    assert timer_lines("\n".join(sorted(sweep + events))) == ["INFO llm_levels.sessions: session sweep: N removed"]


@pytest.mark.slow
def test_start_up_lines_then_no_timer_noise(app_server):
    up_s = time.time() - psutil.Process(app_server.proc.pid).create_time()
    time.sleep(max(0.0, 65 - up_s))  # long enough for anything every 30 s to show twice
    log = app_server.log()
    assert f"http://127.0.0.1:{app_server.port}" in log  # where it listens
    ready = [line for line in log.splitlines() if "llama.cpp ready:" in line]
    assert ready, log[-3000:]
    # engine, model, weight format, context per request, threads
    assert re.search(r"SmolLM2-135M-Instruct .*Q4_1, \d+ slots x \d+ tokens, \d+ threads?\)", ready[0]), ready
    assert "sweep" not in log.lower() and timer_lines(log) == []
