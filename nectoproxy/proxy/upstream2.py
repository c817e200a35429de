"""HTTP/2 to origins: one connection per origin, multiplexing the streams of many flows.

When an origin picks ``h2`` in ALPN, :class:`H2OriginConnection` takes over the connection
:func:`~nectoproxy.proxy.upstream.open_upstream` opened (TLS verified, via the upstream proxy
too), and the pool shares it: each flow gets an :class:`H2Upstream`, one stream, which the
exchange uses as it uses an HTTP/1.1 :class:`~nectoproxy.proxy.upstream.Upstream` (the same
reads: a response head, body chunks, trailers; its own sends: :meth:`H2Upstream.send_head`,
``send_data``, :meth:`H2Upstream.end_body`).

There is no reader task: whichever stream waits for something from the origin reads for all
of them (one at a time, under a lock) and hands each event to its stream, as httpcore does.
Response data is acknowledged as the exchange reads it, so a slow client back-pressures the
origin through its flow-control window; request data is sent only as the origin's window
allows.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from nectoproxy.errors import UpstreamError
from nectoproxy.flow import Headers, Request, reason_phrase
from nectoproxy.proxy.http1 import NOT_YET
from nectoproxy.proxy.streams import STREAM_ERRORS, close_quietly
from nectoproxy.proxy.upstream import Upstream, upstream_errors

log = logging.getLogger("nectoproxy.upstream")

#: Flow-control credit per stream and for the connection (what the origin may send ahead of
#: the exchanges reading it).
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
#: Fields RFC 9113 section 8.2.2 forbids (connection-specific), and Host (as :authority).
_NOT_SENT = frozenset({"connection", "proxy-connection", "keep-alive", "transfer-encoding",
                       "upgrade", "host", "te"})
_Event = tuple[str, Any]


class H2OriginConnection:
    """An HTTP/2 client connection to one origin, shared by the flows that go there."""

    def __init__(self, upstream: Upstream, max_header_list_size: int) -> None:
        #: The connection as opened (its stream, target, timestamps and TLS details).
        self.upstream = upstream
        self.stream = upstream.stream
        self.target = upstream.target
        self.max_header_list_size = max_header_list_size
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
        })
        self.h2.decoder.max_header_list_size = max_header_list_size
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        log.debug("%s chose HTTP/2: one connection for the flows that go there", self.target)
        self.streams: dict[int, H2Upstream] = {}
        #: Streams handed out (their requests may not be sent yet).
        self.users = 0
        self.opened = 0
        self.error: str | None = None
        self.goaway = False
        #: Replaced in the pool by a newer connection to the same origin: it takes no new
        #: streams, and closes when its last one ends.
        self.retired = False
        self.idle_since = time.monotonic()
        self._read_lock = anyio.Lock()
        self._send_lock = anyio.Lock()
        self._read_done = anyio.Event()

    def usable(self) -> bool:
        """Whether a new stream may start here now."""
        if self.error is not None or self.goaway or self.retired:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return self.users < limit and self.h2.highest_outbound_stream_id < 2**31 - 1000

    def new_stream(self) -> H2Upstream:
        self.users += 1
        return H2Upstream(self)

    # -- reading (whoever waits reads for everyone) ----------------------------------------------

    async def wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Read from the origin until ``ready()``; TimeoutError after ``timeout`` seconds."""
        with anyio.fail_after(timeout if timeout is not None else math.inf):
            while not ready():
                if self.error is not None:
                    raise UpstreamError(self.error)
                if self._read_lock.locked():
                    await self._read_done.wait()
                    continue
                async with self._read_lock:
                    await self._read_once()

    async def _read_once(self) -> None:
        try:
            try:
                data = await self.stream.receive(65536)
            except STREAM_ERRORS:
                data = b""
            if not data:
                self._fail(f"{self.target} closed the connection")
                return
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._fail(f"invalid HTTP/2 from {self.target}: {exc}")
                await self.flush_quietly()
                return
            for event in events:
                self._dispatch(event)
            await self.flush_quietly()
        finally:
            done, self._read_done = self._read_done, anyio.Event()
            done.set()

    def _dispatch(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        stream = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.DataReceived):
            if stream is None:
                self._acknowledge(event.stream_id, event.flow_controlled_length)
            else:
                stream.events.append(("data", (bytes(event.data or b""),
                                               event.flow_controlled_length or 0)))
        elif stream is not None and isinstance(event, h2.events.ResponseReceived):
            stream.events.append(("head", list(event.headers or [])))
        elif stream is not None and isinstance(event, h2.events.TrailersReceived):
            stream.trailer_fields = list(event.headers or [])
        elif stream is not None and isinstance(event, h2.events.StreamEnded):
            stream.events.append(("end", None))
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                stream.events.append(("reset", event.error_code))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            for other in list(self.streams.values()):
                if other.stream_id is not None and other.stream_id > last:
                    other.events.append(("reset", "GOAWAY"))
            if event.error_code:
                self._fail(f"{self.target} ended the HTTP/2 connection "
                           f"({_code(event.error_code)})")

    def _fail(self, why: str) -> None:
        if self.error is None:
            log.debug("HTTP/2 connection to %s ends: %s", self.target, why)
            self.error = why
            self.goaway = True

    def _acknowledge(self, stream_id: int | None, length: int | None) -> None:
        if stream_id is not None and length:
            try:
                self.h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.ProtocolError:
                pass

    # -- writing --------------------------------------------------------------------------------

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.h2.data_to_send()
            if data:
                with upstream_errors(self.target):
                    await self.stream.send(data)

    async def flush_quietly(self) -> None:
        try:
            await self.flush()
        except UpstreamError as exc:
            self._fail(str(exc))

    def release(self, stream: H2Upstream) -> None:
        self.users -= 1
        if stream.stream_id is not None:
            self.streams.pop(stream.stream_id, None)
        if not self.users:
            self.idle_since = time.monotonic()

    @property
    def closable(self) -> bool:
        return self.users == 0 and (self.error is not None or self.goaway or self.retired)

    async def aclose(self) -> None:
        if self.error is None:
            try:
                self.h2.close_connection()  # GOAWAY NO_ERROR
            except h2.exceptions.ProtocolError:
                pass  # (the origin ended it already)
            with anyio.move_on_after(1):
                await self.flush_quietly()
        self._fail("connection closed")
        await close_quietly(self.stream)


def _code(code: Any) -> str:
    return getattr(code, "name", str(code))


class H2Upstream(Upstream):
    """One stream on an :class:`H2OriginConnection`: what one flow sees of the origin."""

    __slots__ = ("connection", "ended", "events", "released", "request_ended", "stream_id",
                 "trailer_fields")

    http2 = True

    def __init__(self, connection: H2OriginConnection) -> None:
        origin = connection.upstream
        super().__init__(origin.stream, origin.target, 0)
        self.connection = connection
        self.stream_id: int | None = None
        self.events: deque[_Event] = deque()
        self.trailer_fields: list[tuple[bytes, bytes]] = []
        self.ended = False
        self.request_ended = False
        self.released = False
        self.requests_sent = connection.opened
        self.session_saved = True  # (the TLS session of a shared connection is not kept)
        self.address = origin.address
        self.opened_at = origin.opened_at
        self.tcp_connected_at = origin.tcp_connected_at
        self.tls_established_at = origin.tls_established_at

    # -- the request ---------------------------------------------------------------------------

    async def send_head(self, request: Request, end: bool, te_trailers: bool) -> None:
        """Start the stream with ``request``'s head (the pseudo-header fields from its method,
        URL and Host); ``end`` when it has no body."""
        connection = self.connection
        authority = request.headers.get("host") or request.authority
        fields = [(b":method", request.method.encode()), (b":scheme", request.scheme.encode()),
                  (b":authority", authority.encode("latin-1")),
                  (b":path", request.path.encode("latin-1", errors="surrogateescape"))]
        fields += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                   for name, value in request.headers.fields if name.lower() not in _NOT_SENT]
        if te_trailers:
            fields.append((b"te", b"trailers"))
        await connection.wait(lambda: connection.h2.open_outbound_streams
                              < connection.h2.remote_settings.max_concurrent_streams, None)
        if connection.error is not None or connection.goaway:
            raise UpstreamError(connection.error or f"{self.target} is closing the connection")
        stream_id = connection.h2.get_next_available_stream_id()
        try:
            connection.h2.send_headers(stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamError(f"cannot send the request to {self.target}: {exc}") from None
        self.stream_id = stream_id
        self.request_ended = end
        connection.streams[stream_id] = self
        connection.opened += 1
        await connection.flush()

    async def send_data(self, data: bytes | bytearray | memoryview) -> None:
        await self._send(data, False)

    async def end_body(self, trailers: Headers | None) -> None:
        self.request_ended = True
        if trailers:
            await self._send_headers([(k.lower().encode("latin-1"), v.encode("latin-1"))
                                      for k, v in trailers.fields], end=True)
        else:
            await self._send(b"", True)

    async def _send_headers(self, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        assert self.stream_id is not None
        try:
            self.connection.h2.send_headers(self.stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise UpstreamError(f"{self.target} closed the stream: {exc}") from None
        await self.connection.flush()

    async def _send(self, data: bytes | bytearray | memoryview, end: bool) -> None:
        connection = self.connection
        stream_id = self.stream_id
        assert stream_id is not None
        view = memoryview(data)
        while True:
            self._check_reset()
            try:
                window = min(connection.h2.local_flow_control_window(stream_id),
                             connection.h2.max_outbound_frame_size)
            except h2.exceptions.ProtocolError as exc:
                raise UpstreamError(f"{self.target} closed the stream: {exc}") from None
            if window <= 0 and view:
                await connection.wait(lambda: self._window_open(stream_id), None)
                continue
            part, view = view[:window], view[window:]
            try:
                connection.h2.send_data(stream_id, bytes(part), end_stream=end and not view)
            except h2.exceptions.ProtocolError as exc:
                raise UpstreamError(f"{self.target} closed the stream: {exc}") from None
            await connection.flush()
            if not view:
                return

    def _window_open(self, stream_id: int) -> bool:
        return bool(self.events) or self.connection.h2.local_flow_control_window(stream_id) > 0

    def _check_reset(self) -> None:
        # (A reset while the request is still being sent: the origin answered early, or gave
        # up; what it answered, if anything, is read as usual.)
        if self.events and self.events[-1][0] == "reset":
            code = self.events[-1][1]
            raise UpstreamError(f"{self.target} reset the stream ({_code(code)})")

    # -- the response ------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> Any:
        """The response head, as h11 would give it (``http_version`` 2.0)."""
        while True:
            await self.connection.wait(lambda: bool(self.events), timeout)
            kind, value = self.events.popleft()
            if kind == "head":
                status = int(dict(value).get(b":status", b"0"))
                if 100 <= status < 200:
                    continue  # (informational answers are not relayed)
                headers = [(k, v) for k, v in value if not k.startswith(b":")]
                try:
                    return h11.Response(status_code=status, headers=headers,
                                        http_version=b"2.0",
                                        reason=reason_phrase(status).encode())
                except h11.LocalProtocolError as exc:
                    raise UpstreamError(f"invalid response from {self.target}: {exc}") from None
            self._unexpected(kind, value, "before its response head")

    def _unexpected(self, kind: str, value: Any, when: str) -> None:
        if kind == "reset":
            raise UpstreamError(f"{self.target} reset the stream ({_code(value)}) {when}")
        raise UpstreamError(f"{self.target} sent {kind} {when}")

    async def read_chunk(self, timeout: float | None = None) -> bytes | bytearray | None:
        await self.connection.wait(lambda: bool(self.events), timeout)
        chunk = self.read_buffered_chunk()
        await self.connection.flush_quietly()  # (the window update)
        assert chunk is not NOT_YET
        return chunk  # type: ignore[return-value]

    def read_buffered_chunk(self) -> bytes | bytearray | None | object:
        if not self.events:
            return NOT_YET
        kind, value = self.events.popleft()
        if kind == "data":
            data: bytes = value[0]
            self.connection._acknowledge(self.stream_id, value[1])
            return data
        if kind == "end":
            self.ended = True
            self.trailers = _headers(self.trailer_fields) if self.trailer_fields else None
            return None
        self._unexpected(kind, value, "mid-response")
        return None

    @property
    def reusable(self) -> bool:
        return False  # (a stream serves one request; the connection is the pool's)

    async def aclose(self) -> None:
        """The flow is done with its stream: reset it if it is still open, give back what
        it did not read."""
        connection = self.connection
        if self.released:
            return
        self.released = True
        if self.stream_id is not None:
            for kind, value in self.events:
                if kind == "data":
                    connection._acknowledge(self.stream_id, value[1])
            self.events.clear()
            if not (self.ended and self.request_ended):
                try:
                    connection.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
                except h2.exceptions.ProtocolError:
                    pass  # (closed meanwhile)
        connection.release(self)
        self.stream_id = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            await connection.flush_quietly()
            if connection.closable:
                await connection.aclose()


def _headers(fields: list[tuple[bytes, bytes]]) -> Headers:
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields
                    if not k.startswith(b":")])
