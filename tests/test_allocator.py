"""Tests for llm_levels/allocator.py: the malloc arena cap really caps glibc's arenas.

Each case runs in a fresh Python process (arenas, once made, stay for the life of a process): eight
threads call glibc's malloc/free at the same time through ctypes (which releases the GIL), the way
native code in the server (HTTP, SSL, torch) allocates from many threads, and the process reports
how many arenas glibc made.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm_levels.allocator import limit_malloc_arenas, malloc_arena_count
from llm_levels.config import Settings

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import ctypes, sys, threading
sys.path.insert(0, {root!r})
from llm_levels.allocator import limit_malloc_arenas, malloc_arena_count
applied = limit_malloc_arenas(int(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def work():
    for _ in range(30000):
        libc.free(libc.malloc(1024))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(applied, malloc_arena_count())
"""

pytestmark = pytest.mark.skipif(malloc_arena_count() is None, reason="glibc only")


def arenas_after_threads(limit: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT)), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_the_cap_holds_when_many_threads_allocate_at_once():
    applied, capped = arenas_after_threads(2)
    assert applied and 1 <= capped <= 2
    # Without the cap the same work makes more arenas (contention is timing-dependent: a few tries).
    uncapped = [arenas_after_threads(0) for _ in range(3)]
    assert all(not a for a, _ in uncapped)  # 0 = glibc's default: nothing applied
    assert max(n for _, n in uncapped) > capped


def test_zero_or_negative_leaves_glibc_alone_and_the_default_setting_is_two():
    assert limit_malloc_arenas(0) is False and limit_malloc_arenas(-1) is False
    assert Settings.from_env({}).malloc_arena_max == 2
    assert Settings.from_env({"MALLOC_ARENA_MAX": "0"}).malloc_arena_max == 0
