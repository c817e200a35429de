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
