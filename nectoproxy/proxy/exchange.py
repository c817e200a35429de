"""One client connection's request/response loop (plain HTTP, or HTTP inside a TLS tunnel).

For each request: read the head, buffer the body if a plugin wants to see it (and it is small
enough), call ``on_request``, forward to the origin unless a plugin answered, buffer or stream
the response the same way, call ``on_response``, send it, call ``on_complete``. Nothing is
buffered and no hook is dispatched when no plugin implements it.
"""

from __future__ import annotations

import base64
import hmac
import inspect
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11

from nectoproxy.config import Config
from nectoproxy.errors import (
    ClientDisconnected,
    FlowKilled,
    NectoProxyError,
    ProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from nectoproxy.flow import Connection, Flow, Headers, Request, Response, split_host_port
from nectoproxy.plugins import PluginHost
from nectoproxy.proxy.http1 import (
    NOT_YET,
    HTTPConnection,
    header_pairs,
    request_from_event,
    response_from_event,
    strip_hop_by_hop,
)
from nectoproxy.proxy.streams import TransportStream, with_prefix
from nectoproxy.proxy.upstream import (
    EarlyUpstream,
    Target,
    Upstream,
    UpstreamPool,
    open_upstream,
)

if TYPE_CHECKING:
    from nectoproxy.certs import CertStore

log = logging.getLogger("nectoproxy.http")

_STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                  ConnectionError, ssl.SSLError, OSError)
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass
class Services:
    """What every session shares: configuration, plugins, the CA, the upstream TLS context."""

    config: Config
    hooks: PluginHost
    certs: CertStore
    upstream_tls: ssl.SSLContext
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    sessions: set[ClientSession] = field(default_factory=set)
    stopping: bool = False


def error_response(status: int, message: str) -> Response:
    response = Response.make(status, message.rstrip("\n") + "\n")
    response.headers["Connection"] = "close"
    return response


class ClientSession:
    """Serves HTTP requests arriving on one client stream until it closes or must close."""

    # One per client connection, kept while it idles: no per-instance dict.
    __slots__ = ("_client_gone", "_flow_scope", "_head_parts", "_pending_response",
                 "_request_body_read", "_response_body_read", "_response_started", "client",
                 "config", "connection", "early", "hooks", "idle", "idle_scope", "scheme",
                 "server_name", "services", "tunnel_target", "upstream")

    def __init__(
        self,
        services: Services,
        stream: anyio.abc.ByteStream,
        connection: Connection,
        *,
        scheme: str = "http",
        tunnel_target: tuple[str, int] | None = None,
        server_name: str | None = None,
        early: EarlyUpstream | None = None,
    ) -> None:
        self.services = services
        self.config = services.config.proxy
        self.hooks = services.hooks
        self.client = HTTPConnection(stream, h11.SERVER, self.config.max_header_size)
        self.connection = connection
        self.scheme = scheme
        self.tunnel_target = tunnel_target
        self.server_name = server_name
        self.upstream: Upstream | None = None
        #: The origin connection an intercepted CONNECT started eagerly, until first used.
        self.early = early
        self.idle_scope: anyio.CancelScope | None = None
        self.idle = False
        self._response_started = False
        self._pending_response: bytes | bytearray = b""
        self._head_parts: list[bytes] = []
        self._request_body_read = 0
        self._response_body_read = 0
        #: The running flow's cancel scope: cancelled when the client goes away meanwhile.
        self._flow_scope: anyio.CancelScope | None = None
        #: Why the client went away during the running flow (see _client_ended), if it did.
        self._client_gone: str | None = None
        if isinstance(stream, TransportStream):
            stream.on_peer_end = self._client_ended

    # -- the request loop --------------------------------------------------------------------

    async def run(self) -> None:
        self.services.sessions.add(self)
        try:
            while not self.services.stopping:
                event = await self._read_request_head()
                if event is None:
                    return
                if not await self._authorized(event):
                    return
                if event.method == b"CONNECT":
                    if self.tunnel_target is not None:
                        await self._send_error(400, "CONNECT inside a tunnel is not supported")
                        return
                    from nectoproxy.proxy.tunnel import handle_connect

                    await handle_connect(self, event)
                    return
                if not await self._exchange(event):
                    return
                if self.client.h11.their_state is h11.SEND_BODY:
                    await self._discard_request_body()
                if not self.client.reusable:
                    return
                self.client.h11.start_next_cycle()
        finally:
            self.services.sessions.discard(self)
            await self._release_upstream()

    async def _wait_while_idle(self) -> bool:
        """Wait for the next request; False after ``idle_timeout``, or if the proxy stops.

        The origin connection goes back to the shared pool meanwhile (the client most likely
        takes it again with its next request), so idle clients hold none. An idle connection
        should cost little memory: a native stream waits with the loop's own timer, and
        anyio's streams with one cancel scope (its deadline, or stop_idle()).
        """
        stream = self.client.stream
        if isinstance(stream, TransportStream):  # its own timer; stop_idle() closes it
            self.idle = True
            try:
                if self.upstream is not None and not self.services.stopping:
                    await self._release_upstream()
                # Waiting right on the stream keeps an idle connection's stack short.
                await stream.wait_readable(self.config.idle_timeout)
            except TimeoutError:
                return False
            finally:
                self.idle = False
            await self.client.wait_for_data()  # returns at once: bytes or EOF are there
            return True
        deadline = anyio.current_time() + self.config.idle_timeout
        with anyio.CancelScope(deadline=deadline) as self.idle_scope:
            if self.upstream is not None and not self.services.stopping:
                await self._release_upstream()
            await self.client.wait_for_data()
        scope, self.idle_scope = self.idle_scope, None
        return not scope.cancelled_caught

    def stop_idle(self) -> None:
        """The proxy is stopping: end this session if it waits for a next request."""
        if self.idle_scope is not None:
            self.idle_scope.cancel()
        elif self.idle:
            stream = self.client.stream
            assert isinstance(stream, TransportStream)
            stream.abort()

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
        await self._send_response(response)
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
                await self._send_error(408, "request head not received in time")
            return None
        except h11.RemoteProtocolError as exc:
            # h11 hints 501 for transfer codings it does not know; for a proxy such a request
            # is simply malformed (RFC 9112 6.3), and answering 400 is what next hops expect.
            status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
            await self._send_error(status, f"malformed request: {exc}")
            return None
        if type(event) is h11.ConnectionClosed:
            return None
        assert type(event) is h11.Request
        # h11 only bounds a head that arrives in pieces; one that arrives whole is measured here.
        pairs = header_pairs(event.headers)
        if len(pairs) > self.config.max_header_count:
            await self._send_error(431, f"{len(pairs)} header fields exceed "
                                        f"proxy.max_header_count ({self.config.max_header_count})")
            return None
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in pairs)
        if size > self.config.max_header_size:
            await self._send_error(431, f"request head of {size} bytes exceeds "
                                        f"proxy.max_header_size ({self.config.max_header_size})")
            return None
        return event

    async def _exchange(self, event: h11.Request) -> bool:
        """Handle one request; False when the connection must close afterwards."""
        self._response_started = False
        try:
            request = self._make_request(event)
        except ProtocolError as exc:
            await self._send_error(exc.status, str(exc))
            return False
        flow = Flow(self.connection, request)
        scope = self._flow_scope = anyio.CancelScope()
        try:
            if isinstance(self.client.stream, TransportStream):
                with scope:  # (cancelled by _client_ended)
                    await self._handle(flow)
            else:
                failure: Exception | None = None
                async with anyio.create_task_group() as watch:
                    watch.start_soon(self._poll_client, scope)
                    try:
                        with scope:
                            await self._handle(flow)
                    except Exception as exc:  # noqa: BLE001 - raised below, not in a group
                        failure = exc
                    finally:
                        watch.cancel_scope.cancel()
                if failure is not None:
                    raise failure
            if self._client_gone is None:
                return True
            raise ClientDisconnected(self._client_gone)
        except FlowKilled:
            flow.error = flow.kill_reason
        except NectoProxyError as exc:
            # What failed after the client went away is a consequence, not the cause.
            error = exc if self._client_gone is None else ClientDisconnected(self._client_gone)
            flow.error = str(error)
            if not self._response_started and not isinstance(error, ClientDisconnected):
                flow.response = error_response(error.status, str(error))
                await self._send_response(flow.response)
        except h11.ProtocolError as exc:  # a peer broke HTTP in a way not caught earlier
            flow.error = f"protocol error: {exc}"
            if not self._response_started:
                flow.response = error_response(502, f"cannot forward the request: {exc}")
                await self._send_response(flow.response)
        finally:
            self._flow_scope = None
        flow.timestamp_end = time.time()
        log.debug("flow %s failed: %s", flow.request.url, flow.error)
        if self.hooks.has("on_error"):
            await self.hooks.call("on_error", flow=flow, error=flow.error)
        return False

    def _client_ended(self, reset: bool) -> None:
        """The client's stream says it reset, or ended its side (see TransportStream).

        While a flow runs (connecting to the origin, waiting for it, in a plugin, streaming a
        body) that flow is cancelled at once, and its origin connection closed with it; but a
        client that half-closes after a whole request still gets its answer. Between requests
        the idle wait sees the end by itself.
        """
        scope = self._flow_scope
        if scope is None or self._client_gone is not None or \
                (not reset and self._request_complete()):
            return
        self._client_gone = "client reset the connection" if reset else \
            "client closed the connection mid-body"
        scope.cancel()

    def _request_complete(self) -> bool:
        """Whether the request's body has been, or could still be, read whole from what the
        client sent (bytes received but not read yet included)."""
        connection = self.client.h11
        if connection.their_state is not h11.SEND_BODY:
            return True
        stream = self.client.stream
        assert isinstance(stream, TransportStream)
        buffered = len(connection._receive_buffer) + stream.buffered
        remaining = getattr(connection._reader, "_remaining", None)
        if isinstance(remaining, int):  # Content-Length
            return buffered >= remaining
        tail = bytes(connection._receive_buffer)[-5:] + stream.buffered_tail(5)
        return tail.endswith(b"\r\n\r\n")  # chunked: the last chunk and trailers came

    async def _poll_client(self, scope: anyio.CancelScope) -> None:
        """For anyio's streams, which report nothing by themselves: a reset of the client's
        socket cancels the flow, found by peeking at it four times a second."""
        raw = self.client.stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if raw is None:
            return
        while True:
            await anyio.sleep(0.25)
            if raw.fileno() < 0:
                return
            sock = socket.socket(fileno=raw.fileno())
            try:
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                self._client_gone = "client reset the connection"
                scope.cancel()
                return
            finally:
                sock.detach()

    def _make_request(self, event: h11.Request) -> Request:
        target = event.target
        if target.startswith(b"/") or (target == b"*" and event.method == b"OPTIONS"):
            if self.tunnel_target is not None:
                host, port = self.tunnel_target
                return request_from_event(event, self.scheme, host, port)
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
        parts = urlsplit(target.decode("ascii", errors="replace"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ProtocolError(f"unsupported request target {target[:200]!r}")
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

    # -- one flow ----------------------------------------------------------------------------

    async def _handle(self, flow: Flow) -> None:
        request = flow.request
        original_authority = request.authority
        upgrade = _upgrade_protocol(request.headers)
        strip_hop_by_hop(request.headers)
        if upgrade:  # WebSocket & co: the handshake headers must reach the origin
            request.headers["Connection"] = "Upgrade"
            request.headers["Upgrade"] = upgrade
        self._request_body_read = self._response_body_read = 0
        limit = self.config.max_body_size
        if limit and _declared_length(request.headers) > limit:
            raise ProtocolError(f"request body of {_declared_length(request.headers)} bytes "
                                f"exceeds proxy.max_body_size ({limit})", status=413)
        if self.client.h11.they_are_waiting_for_100_continue:
            await self._client_send(h11.InformationalResponse(status_code=100, headers=[]))
        if "expect" in request.headers:
            del request.headers["expect"]
        pending: bytes | bytearray = b""
        has_body = _has_body(request.headers)
        if self.hooks.has("on_request_headers"):
            await self.hooks.call("on_request_headers", flow=flow)
            if flow.killed:
                raise FlowKilled
        if not has_body:
            await self._client_chunk()  # h11's EndOfMessage for a request without a body
        if flow.response is not None:
            pass  # answered from the headers; an unread body means the connection closes
        elif self.hooks.has("on_request"):
            if has_body:
                buffered, complete = await self._buffer(self._client_chunk, request.headers)
                if complete:
                    request.raw_content = bytes(buffered)
                    request.trailers = self.client.trailers
                else:
                    pending = buffered
            else:
                request.raw_content = b""
            await self.hooks.call("on_request", flow=flow)
            if flow.killed:
                raise FlowKilled
        elif not has_body:
            request.raw_content = b""
        flow.timestamp_request_end = time.time()
        if flow.response is None:
            if "host" not in request.headers or (
                    request.authority != original_authority and "host" in request.headers):
                request.headers["Host"] = request.authority  # HTTP/1.0 clients may omit it
            await self._forward(flow, pending)
        else:
            await self._response_headers(flow)
        await self._respond(flow)

    async def _response_headers(self, flow: Flow) -> None:
        if self.hooks.has("on_response_headers"):
            await self.hooks.call("on_response_headers", flow=flow)
            if flow.killed:
                raise FlowKilled

    async def _forward(self, flow: Flow, pending: bytes | bytearray) -> None:
        """Send the request to its origin and read the response head (and body, if wanted)."""
        request = flow.request
        target = Target(request.scheme, request.host, request.port,
                        self.server_name if self.server_name and self._same_host(request)
                        else request.host)
        for attempt in (1, 2):
            upstream = await self._upstream_for(target)
            reused = upstream.requests_sent > 0
            flow.server_address = upstream.address
            flow.timestamp_connected = flow.timestamp_connected or time.time()
            try:
                await self._send_request(upstream, flow, pending)
                event = await self._upstream_head(upstream)
                break
            except UpstreamError as exc:
                await self._drop_upstream()
                # An idle kept-alive connection the origin closed meanwhile: try a fresh one,
                # unless the body already streamed (it cannot be sent twice).
                if not (reused and attempt == 1 and request.raw_content is not None):
                    raise
                log.debug("retrying %s on a new connection: %s", request.url, exc)
        flow.timestamp_response_start = time.time()
        response = response_from_event(event)
        flow.response = response
        limit = self.config.max_body_size
        if limit and _declared_length(response.headers) > limit:
            raise UpstreamError(f"response body of {_declared_length(response.headers)} bytes "
                                f"exceeds proxy.max_body_size ({limit})")
        await self._response_headers(flow)
        if response.status_code == 101:
            response.raw_content = b""  # the connection now carries another protocol
        elif request.method == "HEAD" or response.status_code in _NO_BODY_STATUS:
            response.raw_content = b""
            await self._upstream_chunk()
        elif self.hooks.has("on_response"):
            buffered, complete = await self._buffer(self._upstream_chunk, response.headers)
            if complete:
                response.raw_content = bytes(buffered)
                response.trailers = self.upstream.trailers if self.upstream else None
            else:
                self._pending_response = buffered

    def _same_host(self, request: Request) -> bool:
        return self.tunnel_target is not None and (request.host, request.port) == self.tunnel_target

    async def _upstream_for(self, target: Target) -> Upstream:
        if self.early is not None:
            early, self.early = self.early, None
            if early.target == target:
                self.upstream = await early.take()
                return self.upstream
            await early.discard()  # a plugin sent the request elsewhere
        if self.upstream is not None:
            if self.upstream.target == target and self.upstream.reusable:
                self.upstream.h11.start_next_cycle()
                return self.upstream
            await self._release_upstream()
        pool = self.services.pool
        self.upstream = await pool.take(target) or await open_upstream(
            target, self.config, self.services.upstream_tls, pool)
        return self.upstream

    async def _release_upstream(self) -> None:
        """Hand a reusable origin connection to the shared pool (or close it)."""
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            await self.services.pool.put(upstream)

    async def _drop_upstream(self) -> None:
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            self.services.pool.remember_session(upstream)
            await upstream.aclose()

    async def _send_request(self, upstream: Upstream, flow: Flow,
                            pending: bytes | bytearray) -> None:
        request = flow.request
        headers = request.headers
        reframe = (request.chunk_filters and not request.filters_keep_length) or request.trailers
        if reframe and (request.raw_content or _has_body(headers)):
            _set_chunked(headers)  # filters may change the size; trailers need chunks
        elif request.raw_content is not None and (request.raw_content or _has_body(headers)):
            _set_length(headers, len(request.raw_content))
        raw_headers = headers.to_h11()
        target = request.path
        if upstream.via is not None:  # chained proxy: absolute form, and its credentials
            target = request.url
            if upstream.via.authorization:
                raw_headers = [*headers.to_raw(),
                               (b"Proxy-Authorization", upstream.via.authorization.encode())]
        head = h11.Request(method=request.method, target=target, headers=raw_headers)
        upstream.requests_sent += 1
        flow.request_body_size = 0
        if request.raw_content is not None and not request.chunk_filters:
            # The common case in one write: head, body, end (and so one TLS record).
            trailers = request.trailers
            await self._upstream_write(upstream.encode(head), upstream.encode(
                h11.Data(data=request.raw_content)) if request.raw_content else b"",
                upstream.encode(h11.EndOfMessage(headers=trailers.to_raw() if trailers else [])))
            flow.request_body_size = len(request.raw_content)
            return
        await self._upstream_send(head)
        if request.raw_content is not None:
            await self._upstream_data(request.raw_content, request.chunk_filters, flow)
            trailers = request.trailers
        else:
            if pending:
                await self._upstream_data(pending, request.chunk_filters, flow)
            while (chunk := await self._client_chunk()) is not None:
                await self._upstream_data(chunk, request.chunk_filters, flow)
            trailers = self.client.trailers
        await self._upstream_send(h11.EndOfMessage(headers=trailers.to_raw() if trailers else []))

    async def _respond(self, flow: Flow) -> None:
        response = flow.response
        assert response is not None
        if self.hooks.has("on_response"):
            await self.hooks.call("on_response", flow=flow)
            if flow.killed:
                raise FlowKilled
            response = flow.response
            assert response is not None
        if response.status_code == 101 and self.upstream is not None:
            await self._switch_protocols(flow, response)
            return
        strip_hop_by_hop(response.headers)
        no_body = flow.request.method == "HEAD" or response.status_code in _NO_BODY_STATUS
        reframe = (response.chunk_filters and not response.filters_keep_length) or \
            response.trailers
        if reframe and not no_body:
            # Filters may change the size: let h11 frame the body (chunked, or close-delimited
            # for HTTP/1.0 clients) instead of promising a length.
            for name in ("content-length", "transfer-encoding"):
                if name in response.headers:
                    del response.headers[name]
        elif response.raw_content is not None and not no_body:
            _set_length(response.headers, len(response.raw_content))
        if not response.chunk_filters and await self._send_whole(flow, response, no_body):
            return await self._finish(flow)
        if not self._response_started:  # (_send_whole may have sent the head and a first part)
            await self._send_head(response)
        if response.raw_content is not None:
            if not no_body:
                await self._client_data(response.raw_content, response.chunk_filters, flow)
            trailers = response.trailers
        else:
            pending, self._pending_response = self._pending_response, b""
            if pending:
                await self._client_data(pending, response.chunk_filters, flow)
            while (chunk := await self._upstream_chunk()) is not None:
                await self._client_data(chunk, response.chunk_filters, flow)
            trailers = self.upstream.trailers if self.upstream else None
        await self._client_send(h11.EndOfMessage(headers=self._trailers_for_client(trailers)))
        await self._finish(flow)

    def _trailers_for_client(self, trailers: Headers | None) -> list[tuple[bytes, bytes]]:
        if trailers and self.client.h11.their_http_version != b"1.0":
            return trailers.to_raw()
        return []

    async def _send_whole(self, flow: Flow, response: Response, no_body: bool) -> bool:
        """Send head, body and end in one write when the body is already here (buffered, or
        wholly in the upstream's receive buffer, as small responses are); False otherwise."""
        chunks: list[bytes | bytearray] = []
        if response.raw_content is not None:
            if response.raw_content and not no_body:
                chunks.append(response.raw_content)
            trailers = response.trailers
        else:
            if self.upstream is None or self._pending_response:
                return False
            while (chunk := self._upstream_buffered_chunk()) is not None:
                if chunk is NOT_YET:  # not all here: send what we have, stream the rest
                    await self._send_head(response, flush=False)
                    self._head_parts.extend(self.client.encode(h11.Data(data=bytes(c)))
                                            for c in chunks)
                    await self._flush_head()
                    self._pending_response = b""
                    flow.response_body_size += sum(len(c) for c in chunks)
                    return False
                chunks.append(chunk)  # type: ignore[arg-type]
            trailers = self.upstream.trailers
        client = self.client
        parts = [client.encode(self._response_event(response))]
        parts += [client.encode(h11.Data(data=chunk)) for chunk in chunks]  # type: ignore[arg-type]
        parts.append(client.encode(h11.EndOfMessage(headers=self._trailers_for_client(trailers))))
        self._response_started = True
        try:
            await client.send_bytes(b"".join(parts))
        except _STREAM_ERRORS:
            raise ClientDisconnected("client went away") from None
        flow.response_body_size += sum(len(chunk) for chunk in chunks)
        return True

    async def _finish(self, flow: Flow) -> None:
        if self.upstream is not None:
            if self.upstream.reusable:
                pass  # start_next_cycle happens when it is reused
            elif flow.response is not None:
                await self._drop_upstream()
        flow.timestamp_end = time.time()
        if self.hooks.has("on_complete"):
            await self.hooks.call("on_complete", flow=flow)

    async def _switch_protocols(self, flow: Flow, response: Response) -> None:
        """101 Switching Protocols: relay raw bytes both ways until either side closes."""
        from nectoproxy.proxy.tunnel import relay

        assert self.upstream is not None
        upgrade = _upgrade_protocol(response.headers)
        strip_hop_by_hop(response.headers)
        if upgrade:
            response.headers["Connection"] = "Upgrade"
            response.headers["Upgrade"] = upgrade
        try:
            await self._client_send(h11.InformationalResponse(
                status_code=101, headers=response.headers.to_raw(),
                reason=response.reason.encode("latin-1", errors="replace")))
        except h11.LocalProtocolError as exc:
            raise UpstreamError(f"origin switched protocols unasked: {exc}") from None
        self._response_started = True
        flow.metadata["upgraded"] = upgrade or True
        client = with_prefix(self.client.stream, bytes(self.client.h11.trailing_data[0]))
        upstream, self.upstream = self.upstream, None
        origin = with_prefix(upstream.stream, bytes(upstream.h11.trailing_data[0]))
        await relay(client, origin)
        flow.timestamp_end = time.time()
        if self.hooks.has("on_complete"):
            await self.hooks.call("on_complete", flow=flow)

    # -- body plumbing -----------------------------------------------------------------------

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
            except (h11.RemoteProtocolError, *_STREAM_ERRORS):
                return

    async def _buffer(
        self, read: Callable[[], Awaitable[bytes | bytearray | None]], headers: Headers
    ) -> tuple[bytearray, bool]:
        """Read a body up to ``body_buffer_limit``; (bytes so far, whether that was all)."""
        limit = self.config.body_buffer_limit
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return bytearray(), False
        buffered = bytearray()
        while (chunk := await read()) is not None:
            buffered += chunk
            if len(buffered) > limit:
                return buffered, False
        return buffered, True

    async def _client_chunk(self) -> bytes | bytearray | None:
        try:
            chunk = await self.client.read_chunk(self.config.idle_timeout)
        except TimeoutError:
            raise ClientDisconnected("client stopped sending its request body") from None
        except h11.RemoteProtocolError as exc:
            if self.client.eof:
                raise ClientDisconnected("client closed the connection mid-body") from None
            raise ProtocolError(f"malformed request body: {exc}") from None
        if chunk is not None and self.config.max_body_size:
            self._request_body_read += len(chunk)
            if self._request_body_read > self.config.max_body_size:
                raise ProtocolError(f"request body exceeds proxy.max_body_size "
                                    f"({self.config.max_body_size})", status=413)
        return chunk

    async def _upstream_chunk(self) -> bytes | bytearray | None:
        upstream = self.upstream
        assert upstream is not None
        try:
            chunk = await upstream.read_chunk(self.config.read_timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"{upstream.target} sent nothing for "
                                  f"{self.config.read_timeout:g}s") from None
        except h11.RemoteProtocolError as exc:
            if upstream.eof:
                raise UpstreamError(f"{upstream.target} closed the connection mid-response") \
                    from None
            raise UpstreamError(f"invalid response from {upstream.target}: {exc}") from None
        if chunk is not None:
            self._count_response_bytes(chunk)
        return chunk

    def _count_response_bytes(self, chunk: bytes | bytearray) -> None:
        if self.config.max_body_size:
            self._response_body_read += len(chunk)
            if self._response_body_read > self.config.max_body_size:
                raise UpstreamError(f"response body exceeds proxy.max_body_size "
                                    f"({self.config.max_body_size})")

    def _upstream_buffered_chunk(self) -> bytes | bytearray | None | object:
        upstream = self.upstream
        assert upstream is not None
        try:
            chunk = upstream.read_buffered_chunk()
        except h11.RemoteProtocolError as exc:
            raise UpstreamError(f"invalid response from {upstream.target}: {exc}") from None
        if isinstance(chunk, (bytes, bytearray)):
            self._count_response_bytes(chunk)
        return chunk

    async def _upstream_head(self, upstream: Upstream
                             ) -> h11.Response | h11.InformationalResponse:
        while True:
            try:
                event = await upstream.next_event(self.config.read_timeout)
            except TimeoutError:
                raise UpstreamTimeout(f"{upstream.target} did not answer within "
                                      f"{self.config.read_timeout:g}s") from None
            except h11.RemoteProtocolError as exc:
                if upstream.eof:
                    raise UpstreamError(f"{upstream.target} closed the connection without "
                                        "answering") from None
                raise UpstreamError(f"invalid response from {upstream.target}: {exc}") from None
            if type(event) is h11.Response or (
                    type(event) is h11.InformationalResponse and event.status_code == 101):
                return event
            if type(event) is h11.ConnectionClosed:
                raise UpstreamError(f"{upstream.target} closed the connection without answering")
            # 1xx informational responses (100 Continue, 103 Early Hints) are not relayed.

    async def _upstream_write(self, *parts: bytes) -> None:
        assert self.upstream is not None
        try:
            await self.upstream.send_bytes(b"".join(parts))
        except _STREAM_ERRORS as exc:
            raise UpstreamError(f"connection to {self.upstream.target} lost: "
                                f"{type(exc).__name__}") from None

    async def _upstream_send(self, event: Any) -> None:
        assert self.upstream is not None
        try:
            await self.upstream.send(event)
        except _STREAM_ERRORS as exc:
            raise UpstreamError(f"connection to {self.upstream.target} lost: "
                                f"{type(exc).__name__}") from None

    async def _upstream_data(self, data: bytes | bytearray,
                             filters: list[Callable[[bytes], Any]], flow: Flow) -> None:
        upstream = self.upstream
        assert upstream is not None

        async def send(chunk: bytes | bytearray) -> None:
            try:
                await upstream.send_data(chunk)
            except _STREAM_ERRORS as exc:
                raise UpstreamError(f"connection to {upstream.target} lost: "
                                    f"{type(exc).__name__}") from None
            flow.request_body_size += len(chunk)

        if filters:
            await _filtered(data, filters, send)
        else:
            await send(data)

    async def _client_send(self, event: Any) -> None:
        try:
            await self.client.send(event)
        except _STREAM_ERRORS:
            raise ClientDisconnected("client went away") from None

    async def _client_data(self, data: bytes | bytearray, filters: list[Callable[[bytes], Any]],
                           flow: Flow) -> None:
        async def send(chunk: bytes | bytearray) -> None:
            try:
                await self.client.send_data(chunk)
            except _STREAM_ERRORS:
                raise ClientDisconnected("client went away mid-response") from None
            flow.response_body_size += len(chunk)

        if filters:
            await _filtered(data, filters, send)
        else:
            await send(data)

    @staticmethod
    def _response_event(response: Response) -> h11.Response:
        return h11.Response(status_code=response.status_code, headers=response.headers.to_h11(),
                            reason=response.reason.encode("latin-1", errors="replace"))

    async def _send_head(self, response: Response, *, flush: bool = True) -> None:
        self._response_started = True
        self._head_parts = [self.client.encode(self._response_event(response))]
        if flush:
            await self._flush_head()

    async def _flush_head(self) -> None:
        data, self._head_parts = b"".join(self._head_parts), []
        try:
            await self.client.send_bytes(data)
        except _STREAM_ERRORS:
            raise ClientDisconnected("client went away") from None

    async def _send_response(self, response: Response) -> None:
        """Send a complete (error) response if the client side can still take one."""
        if self.client.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self._send_head(response)
            await self.client.send_data(response.raw_content or b"")
            await self.client.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, ClientDisconnected, *_STREAM_ERRORS):
            pass  # the client is gone or past answering: nothing more to tell it

    async def _send_error(self, status: int, message: str) -> None:
        log.debug("answering %s: %s", status, message)
        await self._send_response(error_response(status, message))


async def _filtered(data: bytes | bytearray, filters: list[Callable[[bytes], Any]],
                    send: Callable[[bytes | bytearray], Awaitable[None]]) -> None:
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
    if isinstance(result, (bytes, bytearray, memoryview)):
        pieces: Any = [result]
    else:
        pieces = result
    if hasattr(pieces, "__aiter__"):
        async for piece in pieces:
            await _next_filter(piece, rest, send)
    else:
        for piece in pieces:
            await _next_filter(piece, rest, send)


async def _next_filter(piece: Any, rest: list[Callable[[bytes], Any]],
                       send: Callable[[bytes | bytearray], Awaitable[None]]) -> None:
    if not piece:
        return
    if rest:
        await _filtered(piece, rest, send)
    else:
        await send(piece)


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers


def _upgrade_protocol(headers: Headers) -> str | None:
    """The Upgrade header's value when Connection names "upgrade" (a protocol switch)."""
    tokens = {t.strip().lower() for v in headers.get_all("connection") for t in v.split(",")}
    return headers.get("upgrade") if "upgrade" in tokens else None


def _declared_length(headers: Headers) -> int:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def _set_chunked(headers: Headers) -> None:
    if "content-length" in headers:
        del headers["content-length"]
    headers["Transfer-Encoding"] = "chunked"


def _set_length(headers: Headers, length: int) -> None:
    if "transfer-encoding" in headers:
        del headers["transfer-encoding"]
    if headers.get("content-length") != str(length):
        headers["Content-Length"] = str(length)
