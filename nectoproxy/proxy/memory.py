"""Giving memory back to the system after a crowd of connections has gone.

A burst of a thousand connections makes the process allocate some 20 MiB, which Python frees
once they close; but glibc's allocator keeps freed memory inside its heap unless the top of the
heap happens to be free, so the resident size stays at the burst's peak. ``malloc_trim`` hands
the free pages back (about a third of such a burst; the rest is Python's own object arenas,
freed only when every object in them is). The proxy calls it after the number of open
connections has fallen by :data:`RELEASE_AFTER_DROP` or more, not on a schedule.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("nectoproxy.server")

#: Connections that must have closed since the last peak before memory is handed back.
RELEASE_AFTER_DROP = 64


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim  # glibc only (not musl, not macOS)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()

#: glibc's mallopt parameter, and the size from which allocations get pages of their own.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Give allocations of ``size`` bytes or more pages of their own, for good.

    glibc raises this threshold each time such a block is freed (up to 32 MiB), so after a
    few large bodies have passed, body-sized buffers come from the heap instead, and a heap
    with holes between long-lived objects never shrinks: a proxy's resident size then creeps
    up for hours. A fixed threshold turns that adjustment off; large buffers go back to the
    system the moment they are freed. Returns whether the C library took it (glibc only).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


def release_free_memory() -> None:
    """Return the allocator's free pages to the system, where the C library can."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class PeakTracker:
    """Counts open connections and says when enough have closed since the last peak."""

    __slots__ = ("peak",)

    def __init__(self) -> None:
        self.peak = 0

    def should_release(self, current: int) -> bool:
        """True once per fall of RELEASE_AFTER_DROP or more below the highest count seen."""
        release = self.peak - current >= RELEASE_AFTER_DROP
        if release or current > self.peak:
            self.peak = current
        return release
