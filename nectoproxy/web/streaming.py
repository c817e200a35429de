"""A response whose body is a blocking iterator run in one worker thread.

Store iterators (``iter_body``, a HAR export walking a session) read through the calling
thread's SQLite connection, so the whole iteration has to stay in one thread. That thread hands
each piece to the event loop through a one-slot memory stream: at most one piece waits for a
slow client, and when the client goes away the stream is closed, the thread's next hand-over
fails, and the thread stops reading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("nectoproxy.web")

class ThreadedStreamResponse(Response):
    """Streams what ``make()`` yields (bytes, or str encoded as UTF-8); ``make`` is called in
    the worker thread, so it may block. ``limiter`` bounds how many run at once (each holds a
    worker thread while its client reads)."""

    def __init__(self, make: Callable[[], Iterator[bytes | str]], *,
                 limiter: anyio.CapacityLimiter, status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None) -> None:
        self.make = make
        self.limiter = limiter
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self.failure: Exception | None = None

    def _run(self, sender: MemoryObjectSendStream[bytes]) -> None:
        try:
            for piece in self.make():
                data = piece.encode() if isinstance(piece, str) else piece
                if data:
                    anyio.from_thread.run(sender.send, data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client went away
        except Exception as exc:  # noqa: BLE001 -- reported by __call__, which aborts the answer
            self.failure = exc
        finally:
            anyio.from_thread.run_sync(sender.close)

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":  # the head only: nothing to read
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        sender, receiver = anyio.create_memory_object_stream[bytes](1)
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch, receive, group.cancel_scope)
            group.start_soon(lambda: anyio.to_thread.run_sync(self._run, sender, limiter=self.limiter))
            with receiver:
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
                async for chunk in receiver:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.failure is None:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    # Headers are gone already: returning unfinished makes the server cut the
                    # connection, so the client sees an incomplete answer, not a short one.
                    log.warning("%s %s: streaming stopped: %s", scope.get("method"),
                                scope.get("path"), self.failure)
            group.cancel_scope.cancel()  # the watcher; the thread has finished
