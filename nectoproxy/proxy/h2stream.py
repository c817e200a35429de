"""The client side of one exchange on an HTTP/2 stream (:class:`H2Stream`, a
:class:`~nectoproxy.proxy.exchange.ClientSide`), for :mod:`.http2`'s session.

The session's reader hands the stream what the client sent (:meth:`H2Stream.received`,
:meth:`H2Stream.end`, :meth:`H2Stream.lost`); the exchange reads the body and sends the
response through it, and the session's :class:`StreamWriter` methods put the frames on the
connection (waiting for the client's flow-control window). Reading a DATA frame's bytes is
what gives its flow-control credit back.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import anyio
import h11

from nectoproxy.errors import ClientDisconnected
from nectoproxy.flow import Headers, Response
from nectoproxy.proxy.exchange import Chunk, Exchange
from nectoproxy.proxy.http1 import error_response
from nectoproxy.proxy.streams import EngineStream

HTTP_VERSION = "HTTP/2.0"
#: Fields RFC 9113 section 8.2.2 forbids on HTTP/2 (connection-specific), and Host (sent as
#: :authority): never sent.
_CONNECTION_SPECIFIC = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade",
    b"host",
})


class StreamWriter(Protocol):
    """What a stream needs from its connection (:class:`~nectoproxy.proxy.http2.H2Session`)."""

    async def send_headers(self, stream: H2Stream, fields: list[tuple[bytes, bytes]],
                           end: bool) -> None: ...

    async def send_data(self, stream: H2Stream, data: Chunk, end: bool = False) -> None: ...

    async def consumed(self, stream_id: int, length: int) -> None:
        """``length`` bytes of flow-controlled data were read: give the credit back."""

    def wake_senders(self) -> None: ...


class H2Stream:
    """The client side of one exchange on an HTTP/2 stream (a ``ClientSide``)."""

    __slots__ = ("_chunks", "_ready", "ended", "exchange", "gone", "headers_sent",
                 "response_ended", "session", "stream_id", "trailers", "waiting_continue")

    def __init__(self, session: StreamWriter, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.trailers: Headers | None = None
        #: Received, not yet read: (data, the flow-control length to give back once read).
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._ready = anyio.Event()
        #: Whether the client ended its side (END_STREAM); whether it reset or left.
        self.ended = False
        self.gone: str | None = None
        self.headers_sent = False
        self.response_ended = False
        self.waiting_continue = False
        self.exchange: Exchange | None = None

    # -- what the reader hands over ----------------------------------------------------------

    def _wake(self) -> None:
        self._ready.set()

    def received(self, data: bytes, flow_length: int) -> None:
        self._chunks.append((data, flow_length))
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def lost(self, reason: str) -> None:
        if self.gone is None:
            self.gone = reason
            self._wake()
            if self.exchange is not None:
                self.exchange.client_gone(reason)
            self.session.wake_senders()

    def unread_length(self) -> int:
        length = sum(n for _, n in self._chunks)
        self._chunks.clear()
        return length

    # -- ClientSide ----------------------------------------------------------------------------

    async def read_body(self) -> Chunk | None:
        while not self._chunks:
            if self.ended:
                return None
            if self.gone is not None:
                raise ClientDisconnected(self.gone)
            self._ready = anyio.Event()
            await self._ready.wait()
        data, flow_length = self._chunks.popleft()
        await self.session.consumed(self.stream_id, flow_length)
        return data

    async def send_continue(self) -> None:
        if self.waiting_continue:
            self.waiting_continue = False
            await self.session.send_headers(self, [(b":status", b"100")], end=False)

    def can_answer(self) -> bool:
        return not self.headers_sent and self.gone is None

    async def send_response(self, response: Response, chunks: list[Chunk], end: bool,
                            trailers: Headers | None) -> None:
        head = [(b":status", str(response.status_code).encode())]
        head += _fields(response.headers)
        self.headers_sent = True
        body = [chunk for chunk in chunks if chunk]
        await self.session.send_headers(self, head, end=end and not body and not trailers)
        for chunk in body:
            await self.session.send_data(self, chunk)
        if end and (body or trailers):
            await self.end_response(trailers)
        elif end:
            self.response_ended = True

    async def send_body(self, chunk: Chunk) -> None:
        if chunk:
            await self.session.send_data(self, chunk)

    async def end_response(self, trailers: Headers | None) -> None:
        if trailers:
            await self.session.send_headers(self, _fields(trailers), end=True)
        else:
            await self.session.send_data(self, b"", end=True)
        self.response_ended = True

    async def answer(self, status: int, message: str) -> None:
        """Answer the stream with the proxy's own error response (before any exchange)."""
        response = error_response(status, message)
        try:
            await self.send_response(response, [response.raw_content or b""], True, None)
        except ClientDisconnected:
            pass

    async def switch_protocols(self, response: Response) -> EngineStream:
        # (The exchange answers 502 for this: an h2 request cannot ask for an upgrade.)
        raise h11.LocalProtocolError("HTTP/2 streams cannot switch protocols")


def _fields(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Header fields as HTTP/2 sends them: lower-case names, no connection-specific fields
    (``te`` only as ``trailers``, which gRPC needs)."""
    out = []
    for name, value in headers.fields:
        key = name.lower().encode("latin-1")
        if key in _CONNECTION_SPECIFIC or key.startswith(b":"):
            continue
        if key == b"te" and value.strip().lower() != "trailers":
            continue
        out.append((key, value.encode("latin-1")))
    return out
