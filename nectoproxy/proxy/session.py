"""One client connection's HTTP/1.1 loop: idle waits, limits, proxy authentication, CONNECT,
and an :class:`~nectoproxy.proxy.exchange.Exchange` per request.

The loop keeps only what outlives a request: the client connection, the origin connection
reused between requests (:class:`~nectoproxy.proxy.exchange.OriginSlot`), and the running
exchange, which it tells when the client goes away. :class:`H1Client` is the exchange's view
of the client side, and the one place where that side's errors are mapped.
"""

from __future__ import annotations

import base64
import hmac
import logging
from types import TracebackType
from urllib.parse import urlsplit

import anyio
import h11

from nectoproxy.errors import ClientDisconnected, ProtocolError
from nectoproxy.flow import Connection, Flow, Headers, Request, Response, split_host_port
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.exchange import Chunk, Exchange
from nectoproxy.proxy.http1 import (
    HTTPConnection,
    error_response,
    header_pairs,
    request_from_event,
    send_error,
)
from nectoproxy.proxy.http2 import H2Session
from nectoproxy.proxy.pool import EarlyUpstream, OriginSlot
from nectoproxy.proxy.streams import STREAM_ERRORS, EngineStream
from nectoproxy.proxy.tunnel import Inner, tunnel

log = logging.getLogger("nectoproxy.http")

#: How often a stream that cannot report its peer's end is checked while a flow runs.
POLL_INTERVAL = 0.25


class client_errors:  # (lower case: used like a function, ``with client_errors():``)
    """Turns a stream failure while talking to the client into ClientDisconnected."""

    __slots__ = ("_message",)

    def __init__(self, message: str = "client went away") -> None:
        self._message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, STREAM_ERRORS):
            raise ClientDisconnected(self._message) from None


class H1Client:
    """The client side of an exchange on an HTTP/1.1 connection."""

    __slots__ = ("connection", "idle_timeout", "trailers")

    def __init__(self, connection: HTTPConnection, idle_timeout: float) -> None:
        self.connection = connection
        self.idle_timeout = idle_timeout
        self.trailers: Headers | None = None

    async def read_body(self) -> Chunk | None:
        connection = self.connection
        try:
            chunk = await connection.read_chunk(self.idle_timeout)
        except TimeoutError:
            raise ClientDisconnected("client stopped sending its request body") from None
        except h11.RemoteProtocolError as exc:
            if connection.eof:
                raise ClientDisconnected("client closed the connection mid-body") from None
            raise ProtocolError(f"malformed request body: {exc}") from None
        if chunk is None:
            self.trailers = connection.trailers
        return chunk

    async def send_continue(self) -> None:
        if self.connection.h11.they_are_waiting_for_100_continue:
            with client_errors():
                await self.connection.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[]))

    def can_answer(self) -> bool:
        return self.connection.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send_response(self, response: Response, chunks: list[Chunk], end: bool,
                            trailers: Headers | None) -> None:
        encode = self.connection.encode
        parts = [encode(_response_event(response))]
        parts += [encode(h11.Data(data=chunk)) for chunk in chunks if chunk]  # type: ignore[arg-type]
        if end:
            parts.append(encode(h11.EndOfMessage(headers=self._trailers(trailers))))
        with client_errors():
            await self.connection.send_bytes(b"".join(parts))

    async def send_body(self, chunk: Chunk) -> None:
        with client_errors("client went away mid-response"):
            await self.connection.send_data(chunk)

    async def end_response(self, trailers: Headers | None) -> None:
        with client_errors():
            await self.connection.send(h11.EndOfMessage(headers=self._trailers(trailers)))

    async def switch_protocols(self, response: Response) -> EngineStream:
        with client_errors():
            await self.connection.send(h11.InformationalResponse(
                status_code=101, headers=response.headers.to_raw(),
                reason=response.reason.encode("latin-1", errors="replace")))
        stream = self.connection.stream
        stream.unread(bytes(self.connection.h11.trailing_data[0]))
        return stream

    def _trailers(self, trailers: Headers | None) -> list[tuple[bytes, bytes]]:
        if trailers and self.connection.h11.their_http_version != b"1.0":
            return trailers.to_raw()
        return []


def _response_event(response: Response) -> h11.Response:
    return h11.Response(status_code=response.status_code, headers=response.headers.to_h11(),
                        reason=response.reason.encode("latin-1", errors="replace"))


class ClientSession:
    """Serves HTTP requests arriving on one client stream until it closes or must close."""

    # One per client connection, kept while it idles: no per-instance dict.
    __slots__ = ("client", "config", "connection", "exchange", "hooks", "host_header", "idle",
                 "origin", "scheme", "server_name", "services", "tunnel_target")

    def __init__(
        self,
        services: Services,
        stream: EngineStream,
        connection: Connection,
        *,
        scheme: str = "http",
        tunnel_target: tuple[str, int] | None = None,
        server_name: str | None = None,
        early: EarlyUpstream | None = None,
        host_header: str | None = None,
    ) -> None:
        self.services = services
        self.config = services.config.proxy
        self.hooks = services.hooks
        self.client = HTTPConnection(stream, h11.SERVER, self.config.max_header_size)
        self.connection = connection
        self.scheme = scheme
        self.tunnel_target = tunnel_target
        self.server_name = server_name
        #: The Host header every request is given (reverse mode), None to keep the client's.
        self.host_header = host_header
        self.origin = OriginSlot(services.origins, early)
        #: The running flow's exchange, if a request is being served.
        self.exchange: Exchange | None = None
        self.idle = False
        stream.on_peer_end = self._client_ended

    # -- the request loop --------------------------------------------------------------------

    async def run(self) -> None:
        self.services.sessions.add(self)
        try:
            while not self.services.stopping:
                event = await self._read_request_head()
                if event is None or not await self._authorized(event):
                    return
                if event.method == b"CONNECT":
                    await self._connect(event)
                    return
                if not await self._serve(event):
                    return
                if self.client.h11.their_state is h11.SEND_BODY:
                    await self._discard_request_body()
                if not self.client.reusable:
                    return
                self.client.h11.start_next_cycle()
        finally:
            self.services.sessions.discard(self)
            await self.origin.release()

    async def _connect(self, event: h11.Request) -> None:
        if self.tunnel_target is not None:
            await send_error(self.client, 400, "CONNECT inside a tunnel is not supported")
            return
        async with tunnel(self.services, self.client, self.connection, event) as inner:
            if inner is not None:
                await ClientSession.inside(self.services, inner, self.connection).run()

    @classmethod
    def inside(cls, services: Services, inner: Inner, connection: Connection
               ) -> ClientSession | H2Session:
        """The session serving what a tunnel (CONNECT, SOCKS, reverse mode) carries: HTTP/2
        when the client chose it in the TLS handshake."""
        ssl_object = inner.stream.ssl_object
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            return H2Session(services, inner, connection)
        return cls(services, inner.stream, connection, scheme=inner.scheme,
                   tunnel_target=inner.target, server_name=inner.server_name,
                   early=inner.early, host_header=inner.host_header)

    async def _serve(self, event: h11.Request) -> bool:
        """One request: an exchange; False when the connection must close afterwards."""
        try:
            request = self._make_request(event)
        except ProtocolError as exc:
            await send_error(self.client, exc.status, str(exc))
            return False
        flow = Flow(self.connection, request)
        if self.host_header is not None:  # reverse mode; the flow keeps the Host it was sent
            flow.received_request_headers = list(request.headers.fields)
            request.headers["Host"] = self.host_header
        exchange = self.exchange = Exchange(
            self.services, H1Client(self.client, self.config.idle_timeout), self.origin,
            flow, tunnel_target=self.tunnel_target,
            server_name=self.server_name)
        try:
            if self.client.stream.reports_peer_end:
                return await exchange.run()
            async with anyio.create_task_group() as watch:
                watch.start_soon(self._poll_client, exchange)
                try:
                    reusable = await exchange.run()
                finally:
                    watch.cancel_scope.cancel()
            return reusable
        finally:
            self.exchange = None

    def _client_ended(self, reset: bool) -> None:
        """The client's stream says it reset, or ended its side.

        While a flow runs that flow ends at once; but a client that half-closes after a whole
        request still gets its answer. Between requests the idle wait sees the end itself.
        """
        exchange = self.exchange
        if exchange is None or (not reset and self._request_complete()):
            return
        exchange.client_gone("client reset the connection" if reset
                             else "client closed the connection mid-body")

    def _request_complete(self) -> bool:
        """Whether the request's body has been, or could still be, read whole from what the
        client sent (bytes received but not read yet included)."""
        connection = self.client.h11
        if connection.their_state is not h11.SEND_BODY:
            return True
        stream = self.client.stream
        buffered = len(connection._receive_buffer) + stream.buffered
        remaining = getattr(connection._reader, "_remaining", None)
        if isinstance(remaining, int):  # Content-Length
            return buffered >= remaining
        tail = bytes(connection._receive_buffer)[-5:] + stream.buffered_tail(5)
        return tail.endswith(b"\r\n\r\n")  # chunked: the last chunk and trailers came

    async def _poll_client(self, exchange: Exchange) -> None:
        """For streams that cannot report a reset by themselves: look four times a second."""
        stream = self.client.stream
        while True:
            await anyio.sleep(POLL_INTERVAL)
            if stream.peer_reset():
                exchange.client_gone("client reset the connection")
                return

    async def _wait_while_idle(self) -> bool:
        """Wait for the next request; False after ``idle_timeout``, or if the proxy stops.

        The origin connection goes back to the shared pool meanwhile (the client most likely
        takes it again with its next request), so idle clients hold none. Waiting right on the
        stream keeps an idle connection's stack short; stop_idle() aborts the stream.
        """
        self.idle = True
        try:
            if not self.services.stopping:
                await self.origin.release()
            await self.client.stream.wait_readable(self.config.idle_timeout)
        except TimeoutError:
            return False
        finally:
            self.idle = False
        await self.client.wait_for_data()  # returns at once: bytes or EOF are there
        return True

    def stop_idle(self) -> None:
        """The proxy is stopping: end this session if it waits for a next request."""
        if self.idle:
            self.client.stream.abort()

    async def _authorized(self, event: h11.Request) -> bool:
        """Basic proxy authentication (``proxy.proxy_auth``), checked in constant time."""
        expected = self.config.proxy_auth
        if not expected or self.tunnel_target is not None:
            return True  # requests inside an authorized tunnel were authorized by its CONNECT
        given = b""
        for name, value in header_pairs(event.headers):
            if name == b"proxy-authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"basic":
                    try:
                        given = base64.b64decode(token.strip(), validate=True)
                    except ValueError:
                        given = b""
        if hmac.compare_digest(given, expected.encode()):
            return True
        log.warning("refused client %s: proxy authentication %s",
                    self.connection.client_address[0], "failed" if given else "missing")
        response = error_response(407, "NectoProxy requires proxy authentication")
        response.headers["Proxy-Authenticate"] = 'Basic realm="NectoProxy"'
        try:
            await H1Client(self.client, self.config.idle_timeout).send_response(
                response, [response.raw_content or b""], True, None)
        except ClientDisconnected:
            pass
        return False

    async def _read_request_head(self) -> h11.Request | None:
        try:
            # (Pipelined requests are buffered already: no wait for those.)
            if not self.client.has_buffered_data and not await self._wait_while_idle():
                return None
            if self.client.eof and not self.client.h11.trailing_data[0]:
                return None
            event = self.client.next_buffered_event()  # usually the whole head came at once
            if event is h11.NEED_DATA:
                with anyio.fail_after(self.config.header_timeout):
                    event = await self.client.next_event()
        except TimeoutError:
            if self.client.h11.trailing_data[0]:
                await send_error(self.client, 408, "request head not received in time")
            return None
        except h11.RemoteProtocolError as exc:
            # h11 hints 501 for transfer codings it does not know; for a proxy such a request
            # is simply malformed (RFC 9112 6.3), and answering 400 is what next hops expect.
            status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
            await send_error(self.client, status, f"malformed request: {exc}")
            return None
        if type(event) is h11.ConnectionClosed:
            return None
        assert type(event) is h11.Request
        # h11 only bounds a head that arrives in pieces; one that arrives whole is measured here.
        pairs = header_pairs(event.headers)
        if len(pairs) > self.config.max_header_count:
            await send_error(self.client, 431, f"{len(pairs)} header fields exceed "
                             f"proxy.max_header_count ({self.config.max_header_count})")
            return None
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in pairs)
        if size > self.config.max_header_size:
            await send_error(self.client, 431, f"request head of {size} bytes exceeds "
                             f"proxy.max_header_size ({self.config.max_header_size})")
            return None
        return event

    def _make_request(self, event: h11.Request) -> Request:
        target = event.target
        if target.startswith(b"/") or (target == b"*" and event.method == b"OPTIONS"):
            if self.tunnel_target is not None:
                return self._tunnel_request(event)
            host_header = dict(header_pairs(event.headers)).get(b"host", b"").decode("latin-1")
            try:
                host, port = split_host_port(host_header, 80)
            except ValueError:
                host, port = "", 0
            onboarding = self.config.onboarding_host.lower().rstrip(".")
            if onboarding and host.rstrip(".") == onboarding:
                return request_from_event(event, "http", host, port)
            raise ProtocolError(
                "NectoProxy is a proxy: configure your client to use it as its HTTP(S) proxy "
                f"(or open http://{self.config.onboarding_host}/ through it)"
            )
        try:
            parts = urlsplit(target.decode("ascii", errors="replace"))
        except ValueError as exc:  # "Invalid IPv6 URL" and the like
            raise ProtocolError(f"bad request target {target[:200]!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ProtocolError(f"unsupported request target {target[:200]!r}")
        if self.connection.mode == "reverse":  # everything goes to the origin
            request = self._tunnel_request(event)
            request.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            return request
        try:
            host, port = split_host_port(parts.netloc.rpartition("@")[2],
                                         80 if parts.scheme == "http" else 443)
        except ValueError as exc:
            raise ProtocolError(f"bad request target: {exc}") from None
        request = request_from_event(event, parts.scheme, host, port)
        if event.method == b"OPTIONS" and not parts.path and not parts.query:
            request.path = "*"  # RFC 9112 3.2.4: "OPTIONS http://host" is "OPTIONS *" there
        else:
            request.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return request

    def _tunnel_request(self, event: h11.Request) -> Request:
        assert self.tunnel_target is not None
        host, port = self.tunnel_target
        return request_from_event(event, self.scheme, host, port)

    async def _discard_request_body(self) -> None:
        """Read and drop a body nobody wanted (a plugin answered from the headers).

        Closing a socket with unread data makes the kernel send a reset, which can destroy the
        answer before the client reads it; so read the rest (bounded in size and time), and
        keep the connection if it all arrived.
        """
        with anyio.move_on_after(self.config.header_timeout):
            try:
                while await self.client.read_chunk() is not None:
                    pass
            except (h11.RemoteProtocolError, *STREAM_ERRORS):
                return
