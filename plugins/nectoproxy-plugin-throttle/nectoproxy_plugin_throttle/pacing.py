"""Pacing body chunks to a byte rate, as they stream (a chunk filter).

A :class:`Pacer` is a virtual link of ``rate`` bytes per second: each chunk is cut into slices
worth about 1/10 s, and each slice may start only when the previous one has finished "on the
wire". Idle time earns no credit (a link does not save up bandwidth), so a response that
arrives late is not then sent in a burst.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

import anyio

#: How much time one slice is worth; smaller slices mean a smoother rate and more wake-ups.
SLICE_SECONDS = 0.1


class Pacer:
    """A chunk filter that lets bytes through at ``rate`` bytes per second.

    Used as ``flow.response.chunk_filters.append(Pacer(rate))``: the engine awaits it with
    each chunk and sends what it returns (the same bytes, unchanged).
    """

    def __init__(
        self,
        rate: int,
        *,
        slice_seconds: float = SLICE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.slice_size = max(1, int(rate * slice_seconds))
        self._clock = clock
        self._sleep = sleep
        self._free_at: float | None = None  # when the virtual link can take the next slice
        self.bytes_paced = 0

    def slices(self, length: int) -> Iterator[int]:
        """The sizes of the slices a chunk of ``length`` bytes is cut into."""
        full, rest = divmod(length, self.slice_size)
        yield from (self.slice_size for _ in range(full))
        if rest:
            yield rest

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may go, then book the link for their duration."""
        now = self._clock()
        start = now
        if self._free_at is not None and self._free_at > now:
            await self._sleep(self._free_at - now)
            start = self._free_at  # not the clock: oversleeping must not slow the rate down
        self._free_at = start + size / self.rate
        self.bytes_paced += size

    async def __call__(self, chunk: bytes) -> bytes:
        # The filter API sends what the filter returns, in one piece: the slices are paced
        # here one by one and the chunk leaves when its last slice is due (see README,
        # "Limits").
        for size in self.slices(len(chunk)):
            await self.take(size)
        return chunk
