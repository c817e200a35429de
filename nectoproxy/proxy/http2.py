"""One client connection's HTTP/2 (RFC 9113): many exchanges at once, one per stream.

The sibling of :mod:`.session` for a client that chose ``h2`` in ALPN inside intercepted TLS.
One :class:`H2Session` runs the sans-IO ``h2`` connection: a reader (this session's own
task) turns the client's bytes into events and hands each stream's body to its
:class:`~nectoproxy.proxy.h2stream.H2Stream`, which is the
:class:`~nectoproxy.proxy.exchange.ClientSide` of that stream's
:class:`~nectoproxy.proxy.exchange.Exchange`. Each exchange runs in its own task with
its own :class:`~nectoproxy.proxy.pool.OriginSlot`, so a slow, killed or failing stream never
holds up the others: a failure ends that stream alone (RST_STREAM), or answers it with an HTTP
error while no part of its response was sent.

Back-pressure: a DATA frame is acknowledged (its flow-control credit given back) only when
the exchange reads it, so a client cannot send faster than its origin takes the body; the
response waits for the client's window the same way. Defences (RFC 9113 section 10.5, with
limits in ``[proxy]``): concurrent streams (over the limit: REFUSED_STREAM), header list size
(the library's HPACK decoder; a bigger block ends the connection), rapid reset (CVE-2023-44487)
and SETTINGS/PING/empty DATA floods (counted per window: GOAWAY ENHANCE_YOUR_CALM), the preface within
``header_timeout``, and ``idle_timeout`` with no stream open.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from nectoproxy.errors import ClientDisconnected
from nectoproxy.flow import Connection, Flow, Headers, Request
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.exchange import Chunk, Exchange
from nectoproxy.proxy.h2stream import HTTP_VERSION, H2Stream
from nectoproxy.proxy.pool import EarlyUpstream, Origins, OriginSlot
from nectoproxy.proxy.streams import STREAM_ERRORS, close_quietly
from nectoproxy.proxy.tunnel import Inner
from nectoproxy.proxy.upstream import Target, Upstream

log = logging.getLogger("nectoproxy.http2")

#: Flow-control credit each stream starts with, and the whole connection's: what a client may
#: send ahead of the exchanges reading it (RFC 9113 default: 65,535 both).
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
#: The window the reset and control-frame counts are kept over, in seconds.
RATE_WINDOW = 10.0


class _Connection(h2.connection.H2Connection):
    """The library treats a stream over the concurrency limit as a connection error; RFC 9113
    section 5.1.2 allows refusing just that stream, which :class:`H2Session` does itself."""

    @property
    def open_inbound_streams(self) -> int:
        return 0


class _AfterEarly(OriginSlot):
    """The origin slot of a stream that did not get the eager connection: the first streams
    all start at once, so when one needs the origin it lets the eager connection say first
    whether the origin speaks HTTP/2 (then they share it) rather than open its own."""

    __slots__ = ("early_done",)

    def __init__(self, origins: Origins, early_done: anyio.Event | None) -> None:
        super().__init__(origins)
        self.early_done = early_done

    async def get(self, target: Target) -> Upstream:
        if self.early_done is not None:
            await self.early_done.wait()
            self.early_done = None
        return await super().get(target)


class _Rate:
    """Counts events in a sliding window: whether more than ``limit`` came in ``window``."""

    __slots__ = ("limit", "times", "window")

    def __init__(self, limit: int, window: float = RATE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def exceeded(self) -> bool:
        now = time.monotonic()
        times = self.times
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        return len(times) > self.limit


class H2Session:
    """Serves the HTTP/2 connection on one client stream until it closes or must close."""

    def __init__(self, services: Services, inner: Inner, connection: Connection) -> None:
        self.services = services
        self.config = services.config.proxy
        self.hooks = services.hooks
        self.stream = inner.stream
        self.inner = inner
        self.connection = connection
        self.early: EarlyUpstream | None = inner.early
        self._early_done = inner.early.done if inner.early is not None else None
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = _Connection(config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                self.config.http2_max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.config.http2_max_header_list_size,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
        })
        self.h2.decoder.max_header_list_size = self.config.http2_max_header_list_size
        self.streams: dict[int, H2Stream] = {}
        self._send_lock = anyio.Lock()
        self._window_opened = anyio.Event()
        self._resets = _Rate(self.config.http2_max_resets)
        self._control = _Rate(self.config.http2_max_control_frames)
        self._idle_since = time.monotonic()
        self._group: anyio.abc.TaskGroup | None = None
        self._wait = anyio.CancelScope()
        self._goaway = False
        self._refused = 0
        self.idle = False
        self.closed = False

    # -- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        self.services.sessions.add(self)
        try:
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            async with anyio.create_task_group() as group:
                self._group = group
                try:
                    await self._flush()
                    await self._read_loop()
                except ClientDisconnected:
                    pass
                finally:
                    self.closed = True
                    for stream in list(self.streams.values()):
                        stream.lost("client closed the connection")
                    self.wake_senders()
        finally:
            self.services.sessions.discard(self)
            if self.early is not None:
                await self.early.discard()
            await close_quietly(self.stream)

    async def _read_loop(self) -> None:
        preface_deadline = time.monotonic() + self.config.header_timeout
        preface = True
        while not self.services.stopping:
            if preface:
                deadline = preface_deadline
            elif self.streams:
                deadline = None
            else:
                deadline = self._idle_since + self.config.idle_timeout
            if self._goaway and not self.streams:
                return  # the client said it was done, and every stream was answered
            try:
                self.idle = not self.streams
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
                # (Waiting for bytes, not reading them: the last stream to end cancels the
                # wait, so the idle deadline starts then.)
                with anyio.CancelScope() as self._wait:
                    await self.stream.wait_readable(timeout)
                if self._wait.cancelled_caught:
                    continue
                data = await self.stream.receive(65536)
            except TimeoutError:
                if preface:
                    log.info("HTTP/2 client %s sent no connection preface within %gs "
                             "(proxy.header_timeout): closed",
                             self.connection.client_address[0], self.config.header_timeout)
                    return
                if self.streams:
                    continue
                self.h2.close_connection()  # GOAWAY NO_ERROR: idle for idle_timeout
                await self._flush_quietly()
                return
            except STREAM_ERRORS:
                return
            finally:
                self.idle = False
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.DenialOfServiceError as exc:
                self._defence(f"header list over proxy.http2_max_header_list_size "
                              f"({self.config.http2_max_header_list_size} bytes; an HPACK "
                              f"bomb?): {exc}")
                await self._flush_quietly()
                return
            except h2.exceptions.ProtocolError as exc:
                if "continuation" in str(exc).lower():  # (the library stops at 64 frames)
                    self._defence(f"CONTINUATION flood: {exc}")
                elif not self._goaway:
                    self._defence(f"protocol error: {exc}")
                await self._flush_quietly()
                return
            preface = False
            if not await self._handle(events):
                await self._flush_quietly()
                return
            await self._flush_quietly()

    async def _handle(self, events: list[h2.events.Event]) -> bool:
        """Act on the client's events; False when the connection must end."""
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id or 0)
                if not event.data and event.stream_ended is None and self._control.exceeded():
                    return self._calm(self._flood("empty DATA"))  # (CVE-2019-9518)
                if stream is None or stream.gone is not None or not event.data:
                    self._acknowledge(event.stream_id, event.flow_controlled_length)
                else:
                    stream.received(bytes(event.data or b""), event.flow_controlled_length or 0)
            elif isinstance(event, h2.events.RequestReceived):
                if not self._start_stream(event):
                    return False
            elif isinstance(event, h2.events.StreamEnded):
                if (stream := self.streams.get(event.stream_id or 0)) is not None:
                    stream.end()
            elif isinstance(event, h2.events.TrailersReceived):
                if (stream := self.streams.get(event.stream_id or 0)) is not None:
                    stream.trailers = _headers(event.headers or [])
            elif isinstance(event, h2.events.StreamReset):
                if (stream := self.streams.get(event.stream_id or 0)) is not None:
                    self._acknowledge(stream.stream_id, stream.unread_length())
                    stream.lost("client reset the stream")
                if not self._reset_counted():
                    return False
            elif isinstance(event, h2.events.WindowUpdated):
                self.wake_senders()
            elif isinstance(event, (h2.events.RemoteSettingsChanged, h2.events.PingReceived)):
                self.wake_senders()
                if self._control.exceeded():
                    kind = "PING" if isinstance(event, h2.events.PingReceived) else "SETTINGS"
                    return self._calm(self._flood(kind))
            elif isinstance(event, h2.events.ConnectionTerminated):
                # (Its last_stream_id is about streams this proxy would push: none.)
                self._goaway = True
                if self.streams and event.error_code:
                    return False
        return True

    def _flood(self, kind: str) -> str:
        return (f"more than {self.config.http2_max_control_frames} SETTINGS, PING and empty "
                f"DATA frames in {RATE_WINDOW:g}s ({kind} flood; "
                "proxy.http2_max_control_frames)")

    def _calm(self, why: str) -> bool:
        """End the connection with GOAWAY ENHANCE_YOUR_CALM (a defence fired)."""
        self._defence(why)
        self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        return False

    def _defence(self, why: str) -> None:
        log.warning("HTTP/2 client %s: %s; connection closed",
                    self.connection.client_address[0], why)

    def _acknowledge(self, stream_id: int | None, length: int | None) -> None:
        if stream_id is not None and length:
            try:
                self.h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.ProtocolError:
                pass  # (the connection is ending)

    # -- streams -------------------------------------------------------------------------------

    def _start_stream(self, event: h2.events.RequestReceived) -> bool:
        """Serve a new stream (or refuse it); False when the connection must end."""
        stream_id = event.stream_id
        assert stream_id is not None
        if len(self.streams) >= self.config.http2_max_concurrent_streams:
            if not self._refused:  # (once per connection)
                log.info("HTTP/2 client %s: stream %d refused (REFUSED_STREAM), %d open "
                         "already (proxy.http2_max_concurrent_streams)",
                         self.connection.client_address[0], stream_id, len(self.streams))
            self._refused += 1
            self._reset_id(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return self._reset_counted()
        stream = H2Stream(self, stream_id)
        with_body = event.stream_ended is None
        stream.ended = not with_body
        self.streams[stream_id] = stream
        assert self._group is not None
        self._group.start_soon(self._serve, stream, event.headers or [], with_body)
        return True

    def _reset_counted(self) -> bool:
        """A stream ended before its answer (reset by the client, or refused): too many of
        those is the rapid reset attack."""
        if self._resets.exceeded():
            return self._calm(f"more than {self.config.http2_max_resets} streams reset or "
                              f"refused in {RATE_WINDOW:g}s (proxy.http2_max_resets; rapid "
                              "reset, CVE-2023-44487)")
        return True

    async def _serve(self, stream: H2Stream, fields: list[tuple[bytes, bytes]],
                     with_body: bool) -> None:
        early, self.early = self.early, None
        slot = OriginSlot(self.services.origins, early) if early is not None \
            else _AfterEarly(self.services.origins, self._early_done)
        try:
            request, authority = self._make_request(fields)
            flow = Flow(self.connection, request)
            flow.received_request_headers = list(request.headers.fields)
            if self.inner.host_header is not None:  # reverse mode: the origin's Host
                request.headers["Host"] = self.inner.host_header
            elif "host" not in request.headers:  # (h2 carries it as :authority)
                request.headers.fields.insert(0, ("Host", authority or request.authority))
            if request.method == "CONNECT":  # (RFC 9113 8.5; RFC 8441 is not offered)
                await stream.answer(501, "CONNECT inside an HTTP/2 tunnel is not supported")
                return
            if len(fields) > self.config.max_header_count:
                await stream.answer(431, f"{len(fields)} header fields exceed "
                                    f"proxy.max_header_count ({self.config.max_header_count})")
                return
            if with_body and "content-length" not in request.headers:
                request.headers["Transfer-Encoding"] = "chunked"  # (so the origin sees a body)
            if request.headers.get("expect", "").lower() == "100-continue":
                stream.waiting_continue = True
            exchange = stream.exchange = Exchange(
                self.services, stream, slot, flow, tunnel_target=self.inner.target,
                server_name=self.inner.server_name)
            if stream.gone is not None:
                exchange.client_gone(stream.gone)
            async with anyio.create_task_group() as uploads:
                exchange.uploads = uploads
                try:
                    await exchange.run()
                except ClientDisconnected:
                    pass
                uploads.cancel_scope.cancel()  # (a body the origin did not want)
            if not stream.response_ended and not self.closed:
                killed = flow.killed or stream.gone is not None
                self._reset(stream, h2.errors.ErrorCodes.CANCEL if killed
                            else h2.errors.ErrorCodes.INTERNAL_ERROR)
            elif not stream.ended and stream.gone is None and not self.closed:
                # Answered before the whole request came: the client need not send the rest.
                self._reset(stream, h2.errors.ErrorCodes.NO_ERROR)
        except Exception:  # a bug: this stream fails, the connection's others go on
            log.exception("HTTP/2 stream %d of client %s failed", stream.stream_id,
                          self.connection.client_address[0])
            self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            with anyio.CancelScope(shield=True):
                await slot.release()
                self._acknowledge(stream.stream_id, stream.unread_length())
                del self.streams[stream.stream_id]
                if not self.streams:
                    self._idle_since = time.monotonic()
                    self._wait.cancel()
                await self._flush_quietly()

    def _reset(self, stream: H2Stream, code: h2.errors.ErrorCodes) -> None:
        self._reset_id(stream.stream_id, code)

    def _reset_id(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            pass  # (already closed: the client reset it first)

    def _make_request(self, fields: list[tuple[bytes, bytes]]) -> tuple[Request, str]:
        """The stream's request (pseudo-header fields mapped), and its ``:authority``."""
        pseudo: dict[bytes, bytes] = {}
        headers = []
        for name, value in fields:
            if name.startswith(b":"):
                pseudo[name] = value
            else:
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        request_headers = Headers(headers)
        host, port = self.inner.target
        method = pseudo.get(b":method", b"GET").decode("ascii", errors="replace")
        path = pseudo.get(b":path", b"/").decode("ascii", errors="surrogateescape")
        if method == "OPTIONS" and path == "*":
            path = "*"
        scheme = pseudo.get(b":scheme", self.inner.scheme.encode()).decode("ascii")
        request = Request(method, scheme if scheme in ("http", "https") else self.inner.scheme,
                          host, port, path, request_headers, raw_content=None,
                          http_version=HTTP_VERSION)
        authority = pseudo.get(b":authority", b"").decode("latin-1")
        return request, authority

    # -- sending -------------------------------------------------------------------------------

    async def send_headers(self, stream: H2Stream, fields: list[tuple[bytes, bytes]],
                           end: bool) -> None:
        self._check(stream)
        try:
            self.h2.send_headers(stream.stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise ClientDisconnected(f"stream {stream.stream_id} closed: {exc}") from None
        await self._flush()

    async def send_data(self, stream: H2Stream, data: Chunk, end: bool = False) -> None:
        view = memoryview(data)
        while True:
            self._check(stream)
            try:
                window = min(self.h2.local_flow_control_window(stream.stream_id),
                             self.h2.max_outbound_frame_size)
            except h2.exceptions.ProtocolError as exc:
                raise ClientDisconnected(f"stream {stream.stream_id} closed: {exc}") from None
            if window <= 0 and view:
                await self._window_opened.wait()
                continue
            part, view = view[:window], view[window:]
            try:
                self.h2.send_data(stream.stream_id, bytes(part), end_stream=end and not view)
            except h2.exceptions.ProtocolError as exc:
                raise ClientDisconnected(f"stream {stream.stream_id} closed: {exc}") from None
            await self._flush()
            if not view:
                return

    def wake_senders(self) -> None:
        """Flow-control windows opened (or a stream ended): senders waiting look again."""
        self._window_opened.set()
        self._window_opened = anyio.Event()

    def _check(self, stream: H2Stream) -> None:
        if stream.gone is not None:
            raise ClientDisconnected(stream.gone)

    async def consumed(self, stream_id: int, length: int) -> None:
        """The exchange read ``length`` bytes of flow-controlled data: give the credit back."""
        if length:
            self._acknowledge(stream_id, length)
            await self._flush_quietly()

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self.h2.data_to_send()
            if data:
                try:
                    await self.stream.send(data)
                except STREAM_ERRORS:
                    raise ClientDisconnected("client went away") from None

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except ClientDisconnected:
            pass

    def stop_idle(self) -> None:
        """The proxy is stopping: end this connection if no stream is open."""
        if self.idle:
            self.stream.abort()


def _headers(fields: list[tuple[bytes, bytes]]) -> Headers:
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields
                    if not k.startswith(b":")])
