"""Caps the number of glibc malloc arenas of the server process (``MALLOC_ARENA_MAX``).

glibc gives threads that allocate at the same time separate heaps ("arenas"), up to 8 per CPU core.
Memory freed in an arena stays with that arena for reuse and is rarely handed back to the system, so
a server with many threads (Gradio's worker threads, the HTTP client's, the local model's) slowly
gathers free-but-kept memory in every arena. Measured on this app (bench/LOAD.md, "Memory over
time"; 2 cores, 20 chat sessions for 10 minutes, same code): with glibc's default 16 arenas the RSS
went 804 → 982 MB and was still rising ~12 MB a minute at the end; with 2 arenas it went 767 → 857 MB
and was flat for the last 6 minutes. Code and load were the same; only the arena setting differed.

:func:`limit_malloc_arenas` applies the cap with ``mallopt(M_ARENA_MAX, n)``. It must run before the
server starts its threads (``web.app.serve`` calls it first); arenas that already exist are kept.
Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

#: glibc's ``M_ARENA_MAX`` parameter number for ``mallopt`` (malloc.h).
M_ARENA_MAX = -8


def limit_malloc_arenas(n: int) -> bool:
    """Let glibc's malloc use at most ``n`` arenas; ``n`` <= 0 leaves glibc's default. True if applied."""
    if n <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_ARENA_MAX, int(n)) == 1  # mallopt returns 1 on success
    if not ok:
        log.warning("could not limit malloc arenas to %d (mallopt refused)", n)
    return ok


def malloc_arena_count() -> int | None:
    """How many malloc arenas this process has now (from glibc's ``malloc_info``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.free.argtypes = [ctypes.c_void_p]
        buf, size = ctypes.c_void_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not stream:
            return None
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        text = ctypes.string_at(buf, size.value).decode(errors="replace")
        libc.free(buf)
    except (OSError, AttributeError):
        return None
    return text.count("<heap nr=")
