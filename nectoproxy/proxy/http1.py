"""HTTP/1.1 on top of h11: one small wrapper used for both the client and the upstream side.

h11 does the parsing and framing without I/O; this module only moves bytes between it and an
engine stream, and turns h11's events into the objects of :mod:`nectoproxy.flow` and back.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import h11

from nectoproxy.flow import Headers, Request, Response
from nectoproxy.proxy.streams import STREAM_ERRORS, EngineStream, close_quietly

READ_SIZE = 256 * 1024
#: "No body bytes are buffered right now" (as opposed to None: the body ended).
NOT_YET = object()
#: Chunk sizes above this are refused: no real body needs them, and parsers that overflow on
#: them are a classic request-smuggling vector.
MAX_CHUNK_SIZE = 2**53
_HEAD_END = re.compile(rb"\r?\n\r?\n")
#: A CR not followed by LF, an LF not preceded by CR, or a line starting with white space
#: (obs-fold). h11 tolerates them; a proxy must not, since the next hop may read them otherwise.
_AMBIGUOUS = re.compile(rb"\r(?!\n)|(?<!\r)\n|\n[ \t]")

#: Hop-by-hop fields (RFC 9110 section 7.6.1) that never cross the proxy. Content-Length and
#: Transfer-Encoding describe framing and are rewritten by h11 on each side.
HOP_BY_HOP = frozenset({
    "connection", "proxy-connection", "keep-alive", "proxy-authorization",
    "proxy-authenticate", "te", "trailer", "upgrade",
})


def strip_hop_by_hop(headers: Headers) -> None:
    """Remove hop-by-hop fields, including every field the Connection header names."""
    named = {
        token.strip().lower()
        for value in headers.get_all("connection")
        for token in value.split(",")
    }
    drop = HOP_BY_HOP | (named - {"content-length", "transfer-encoding", "host"})
    if any(k.lower() in drop for k, _ in headers.fields):
        headers.without(drop)


def header_pairs(headers: Any) -> list[tuple[bytes, bytes]]:
    """The (lower-case name, value) pairs of an h11 header list.

    h11's list is a ``Sequence`` whose inherited iteration calls ``__getitem__`` per item;
    its own item list is read directly when it is there (a few microseconds per request).
    """
    items = getattr(headers, "_full_items", None)
    if type(items) is list:
        return [(name, value) for _, name, value in items]
    return list(headers)


def http_version(raw: bytes) -> str:
    return "HTTP/" + raw.decode("ascii")


class HTTPConnection:
    """An h11 connection bound to an anyio byte stream."""

    __slots__ = ("_head_state", "eof", "h11", "stream", "trailers")

    def __init__(self, stream: EngineStream, role: Any, max_header_size: int) -> None:
        self.stream = stream
        self.h11 = h11.Connection(role, max_incomplete_event_size=max_header_size)
        # The peer's state in which its next bytes are a message head.
        self._head_state = h11.IDLE if role is h11.SERVER else h11.SEND_RESPONSE
        self.eof = False
        self.trailers: Headers | None = None

    async def next_event(self, timeout: float | None = None) -> Any:
        """The next h11 event, reading from the stream as needed.

        ``timeout`` bounds each read (TimeoutError); an event already buffered costs no timer.
        """
        while True:
            event = self.next_buffered_event()
            if event is h11.NEED_DATA:
                await self._receive(timeout)
                continue
            return event

    def next_buffered_event(self) -> Any:
        """The next event from bytes already received (h11.NEED_DATA if there is none), with
        the checks h11 leaves to us: ambiguous heads, CL + TE, absurd chunk sizes."""
        if self.h11.their_state is self._head_state:
            self._check_head_bytes()
        event: Any = self.h11.next_event()
        if event is h11.PAUSED:
            raise h11.LocalProtocolError("connection paused (pipelined request pending)")
        kind = type(event)
        if kind is h11.Request or kind is h11.Response:
            names = [name for name, _ in header_pairs(event.headers)]
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError(
                    "both Content-Length and Transfer-Encoding", error_status_hint=400)
        elif kind is h11.Data and getattr(self.h11._reader, "_bytes_in_chunk", 0) \
                > MAX_CHUNK_SIZE:
            raise h11.RemoteProtocolError("chunk size too large", error_status_hint=400)
        return event

    def _check_head_bytes(self) -> None:
        # h11's receive buffer, read in place (trailing_data would copy it on every call).
        buffer = getattr(self.h11._receive_buffer, "_data", None)
        data = buffer if isinstance(buffer, bytearray) else self.h11.trailing_data[0]
        end = _HEAD_END.search(data)
        if end is None:
            return
        head = data[: end.start()].lstrip(b"\r\n")  # h11 allows blank lines before a head
        bad = _AMBIGUOUS.search(head)
        if bad is not None:
            what = "obs-fold line" if len(bad.group()) == 2 else "bare CR or LF"
            raise h11.RemoteProtocolError(f"{what} in message head", error_status_hint=400)

    @property
    def has_buffered_data(self) -> bool:
        data, closed = self.h11.trailing_data
        return bool(data) or closed

    async def wait_for_data(self) -> None:
        """Return once some bytes of the next message are buffered (or the peer closed)."""
        if not self.has_buffered_data:
            await self._receive()

    async def _receive(self, timeout: float | None = None) -> None:
        """Read once into h11; TimeoutError if nothing came within ``timeout`` seconds."""
        try:
            data = await self.stream.receive(READ_SIZE, timeout=timeout)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError,
                ConnectionError):
            data = b""
        if not data:
            self.eof = True
        self.h11.receive_data(data)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send(data)

    async def send_data(self, data: bytes | bytearray | memoryview) -> None:
        """Send body bytes; h11 frames them (chunked or counted) without copying the payload."""
        if not data:
            return
        parts = self.h11.send_with_data_passthrough(h11.Data(data=data))  # type: ignore[arg-type]
        if parts:
            # Content-Length framing passes the payload through as is; chunked framing adds a
            # size line and CRLF, which are cheaper joined than sent as three writes.
            await self.stream.send(parts[0] if len(parts) == 1 else b"".join(parts))

    async def read_chunk(self, timeout: float | None = None) -> bytes | bytearray | None:
        """The next piece of the current body, or None at its end (trailers kept aside)."""
        while True:
            chunk = self._chunk_from(await self.next_event(timeout))
            if chunk is not NOT_YET:
                return chunk  # type: ignore[return-value]

    def read_buffered_chunk(self) -> bytes | bytearray | None | object:
        """Like :meth:`read_chunk` from bytes already received; ``NOT_YET`` if there are none."""
        while True:
            event = self.next_buffered_event()
            if event is h11.NEED_DATA:
                return NOT_YET
            chunk = self._chunk_from(event)
            if chunk is not NOT_YET:
                return chunk

    def _chunk_from(self, event: Any) -> bytes | bytearray | None | object:
        kind = type(event)
        if kind is h11.Data:
            return event.data if event.data else NOT_YET
        if kind is h11.EndOfMessage:
            self.trailers = Headers.from_raw(event.headers.raw_items()) if event.headers else None
            return None
        raise h11.RemoteProtocolError(f"unexpected {kind.__name__} in a body")

    def encode(self, event: Any) -> bytes:
        """The bytes h11 would send for ``event``, to be written later with others."""
        return self.h11.send(event) or b""

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send(data)

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def aclose(self) -> None:
        await close_quietly(self.stream)


def request_from_event(event: h11.Request, scheme: str, host: str, port: int) -> Request:
    """A Request for an origin-form target (absolute-form is resolved by the caller)."""
    return Request(
        method=event.method.decode("ascii"),
        scheme=scheme,
        host=host,
        port=port,
        path=event.target.decode("ascii", errors="surrogateescape"),
        headers=Headers.from_h11(event.headers),
        raw_content=None,
        http_version=http_version(event.http_version),
    )


def response_from_event(event: h11.Response | h11.InformationalResponse) -> Response:
    return Response(
        status_code=event.status_code,
        headers=Headers.from_h11(event.headers),
        raw_content=None,
        http_version=http_version(event.http_version),
        reason=event.reason.decode("latin-1"),
    )


def error_response(status: int, message: str) -> Response:
    """The plain-text answer the proxy itself gives when a flow fails (or a client is
    refused); it closes the connection."""
    response = Response.make(status, message.rstrip("\n") + "\n")
    response.headers["Connection"] = "close"
    return response


def response_bytes(response: Response) -> bytes:
    """A whole HTTP/1.1 response as bytes (head and body), for answers sent without h11."""
    head = f"HTTP/1.1 {response.status_code} {response.reason}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in response.headers.fields) + "\r\n"
    return head.encode("latin-1") + (response.raw_content or b"")


async def send_error(connection: HTTPConnection, status: int, message: str) -> None:
    """Answer with :func:`error_response` if the connection can still take an answer; a
    client that is gone or past answering is told nothing."""
    if connection.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    response = error_response(status, message)
    try:
        await connection.send(h11.Response(status_code=status, headers=response.headers.to_raw(),
                                           reason=response.reason.encode("latin-1")))
        await connection.send_data(response.raw_content or b"")
        await connection.send(h11.EndOfMessage())
    except (h11.LocalProtocolError, *STREAM_ERRORS):
        pass


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers


def upgrade_protocol(headers: Headers) -> str | None:
    """The Upgrade header's value when Connection names "upgrade" (a protocol switch)."""
    tokens = {t.strip().lower() for v in headers.get_all("connection") for t in v.split(",")}
    return headers.get("upgrade") if "upgrade" in tokens else None


def declared_length(headers: Headers) -> int:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def set_chunked(headers: Headers) -> None:
    if "content-length" in headers:
        del headers["content-length"]
    headers["Transfer-Encoding"] = "chunked"


def set_length(headers: Headers, length: int) -> None:
    if "transfer-encoding" in headers:
        del headers["transfer-encoding"]
    if headers.get("content-length") != str(length):
        headers["Content-Length"] = str(length)
