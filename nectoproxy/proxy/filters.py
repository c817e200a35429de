"""Chunk filters: functions a plugin puts on a message to change or pace its body as it is
sent (see "Streaming" in docs/plugins.md)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

Chunk = bytes | bytearray


async def run_filters(data: Chunk, filters: list[Callable[[bytes], Any]],
                    send: Callable[[Chunk], Awaitable[None]]) -> None:
    """Run ``data`` through the chunk filters and send what comes out, piece by piece.

    A filter returns bytes, or an (async) iterable of pieces, each sent as soon as it is
    produced (a pacing filter yields small slices and sleeps between them); the pieces go
    through the remaining filters in turn.
    """
    first, rest = filters[0], filters[1:]
    result = first(bytes(data))
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return
    pieces: Any = [result] if isinstance(result, (bytes, bytearray, memoryview)) else result
    if hasattr(pieces, "__aiter__"):
        async for piece in pieces:
            await _next_filter(piece, rest, send)
    else:
        for piece in pieces:
            await _next_filter(piece, rest, send)


async def _next_filter(piece: Any, rest: list[Callable[[bytes], Any]],
                       send: Callable[[Chunk], Awaitable[None]]) -> None:
    if not piece:
        return
    if rest:
        await run_filters(piece, rest, send)
    else:
        await send(piece)
