"""Giving back the memory of float32 weights that only sit in a memory-mapped safetensors file.

A model loaded from a safetensors file (the converted copy of the embedded GGUF) keeps its float32
weights in a file mapping: a page costs memory only once touched. Building the int8 copies touches
every page (~520 MB for SmolLM2-135M) although the fast path never reads those float matrices again.
:func:`release` tells the kernel to drop such pages (``madvise(MADV_DONTNEED)``); a later reader (the
plain path, the ICL lab's scoring) simply faults them back in from the file, unchanged.

It is only ever applied to whole pages that lie inside a *file* mapping of a ``.safetensors`` file:
on anonymous memory (a model converted in this process, or copied) the same call would zero the
weights, so anything else is left alone. Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap
import sys
from typing import Iterable

log = logging.getLogger(__name__)

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


class PageReleaser:
    """Drops the pages of tensors that live in memory-mapped ``.safetensors`` files (see the module doc)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.released = 0
        self._madvise = None
        if not sys.platform.startswith("linux"):
            return
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 6 and parts[5].endswith(".safetensors"):
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        self.ranges.append((lo, hi))
            self.ranges.sort()
            if self.ranges:
                libc = ctypes.CDLL(None, use_errno=True)
                self._madvise = libc.madvise
                self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                self._madvise.restype = ctypes.c_int
        except Exception as e:  # noqa: BLE001 - no releasing is always safe
            log.debug("page release unavailable: %s", e)
            self.ranges = []

    @property
    def active(self) -> bool:
        return self._madvise is not None

    def _inside(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.ranges, (lo, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= lo and hi <= self.ranges[i][1]

    def release(self, tensors: Iterable[object]) -> int:
        """Drop the whole pages of ``tensors`` that lie in a safetensors file mapping; bytes released."""
        if self._madvise is None:
            return 0
        done = 0
        for t in tensors:
            try:
                ptr, size = t.data_ptr(), t.numel() * t.element_size()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001
                continue
            lo = -(-ptr // _PAGE) * _PAGE
            hi = (ptr + size) // _PAGE * _PAGE
            if hi <= lo or not self._inside(ptr, ptr + size):
                continue
            if self._madvise(lo, hi - lo, _MADV_DONTNEED) == 0:
                done += hi - lo
        self.released += done
        return done
