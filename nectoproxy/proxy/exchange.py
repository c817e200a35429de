"""One request/response: hooks, forwarding to the origin, bodies, errors.

An :class:`Exchange` lives for one flow. The client's side of it is a :class:`ClientSide`
(the HTTP/1.1 connection of :mod:`.session` today; an HTTP/2 stream would be another), the
origin's side an :class:`OriginSlot`, the origin connection its client connection keeps
between requests. For each request: buffer the body if a plugin wants to see it (and it is
small enough), call ``on_request``, forward to the origin unless a plugin answered, buffer or
stream the response the same way, call ``on_response``, send it, call ``on_complete``. Nothing
is buffered and no hook is dispatched when no plugin implements it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.abc
import h11

from nectoproxy.errors import (
    ClientDisconnected,
    FlowKilled,
    NectoProxyError,
    ProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from nectoproxy.flow import Flow, Headers, Response
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.filters import run_filters
from nectoproxy.proxy.http1 import (
    NOT_YET,
    declared_length,
    error_response,
    has_body,
    response_from_event,
    set_chunked,
    set_length,
    strip_hop_by_hop,
    upgrade_protocol,
)
from nectoproxy.proxy.pool import OriginSlot
from nectoproxy.proxy.streams import EngineStream, relay
from nectoproxy.proxy.upstream import Target, Upstream, upstream_errors
from nectoproxy.proxy.upstream2 import H2Upstream
from nectoproxy.proxy.websocket import relay_websocket

log = logging.getLogger("nectoproxy.http")

_NO_BODY_STATUS = frozenset({204, 304})
_HEAD_HOOKS = frozenset({"on_request_headers", "on_response_headers"})
Chunk = bytes | bytearray


class ClientSide(Protocol):
    """What an exchange needs from the client's side of its flow. Every method maps its own
    stream failures to :class:`ClientDisconnected` (and malformed input to ProtocolError)."""

    #: Trailer fields of the request body, once it was read to its end.
    trailers: Headers | None

    async def read_body(self) -> Chunk | None:
        """The next piece of the request body; None at its end."""

    async def send_continue(self) -> None:
        """Send ``100 Continue`` if the client waits for it before sending its body."""

    def can_answer(self) -> bool:
        """Whether no part of a response has been sent yet (an error answer still fits)."""

    async def send_response(self, response: Response, chunks: list[Chunk], end: bool,
                            trailers: Headers | None) -> None:
        """Send the head, then ``chunks``, then (if ``end``) the end of the body, together."""

    async def send_body(self, chunk: Chunk) -> None: ...

    async def end_response(self, trailers: Headers | None) -> None: ...

    async def switch_protocols(self, response: Response) -> EngineStream:
        """Send a ``101`` answer; the stream that now carries the other protocol."""


class Exchange:
    """Serves one flow; :meth:`run` returns whether the client connection may be reused."""

    __slots__ = ("_pending_response", "_request_body_read", "_response_body_read", "client",
                 "config", "flow", "gone", "hooks", "origin", "scope", "server_name",
                 "tunnel_target", "uploads")

    def __init__(self, services: Services, client: ClientSide, origin: OriginSlot, flow: Flow,
                 *, tunnel_target: tuple[str, int] | None = None,
                 server_name: str | None = None) -> None:
        self.config = services.config.proxy
        self.hooks = services.hooks
        self.client = client
        self.origin = origin
        self.flow = flow
        self.tunnel_target = tunnel_target
        self.server_name = server_name
        #: Cancelled when the client goes away meanwhile (see :meth:`client_gone`).
        self.scope = anyio.CancelScope()
        #: Why the client went away while this flow ran, if it did.
        self.gone: str | None = None
        #: Where a streamed request body may be sent to an HTTP/2 origin while its response
        #: is relayed (bidirectional streaming); None sends it before the response is read.
        self.uploads: anyio.abc.TaskGroup | None = None
        self._pending_response: Chunk = b""
        self._request_body_read = 0
        self._response_body_read = 0

    def client_gone(self, reason: str) -> None:
        """The client reset or left mid-request: the flow ends at once, whatever it waits
        for (an origin connect, an answer, a plugin), and its origin connection with it."""
        if self.gone is None:
            self.gone = reason
            self.scope.cancel()

    async def run(self) -> bool:
        flow = self.flow
        try:
            with self.scope:
                await self._handle()
            if self.gone is None:
                return True
            raise ClientDisconnected(self.gone)
        except FlowKilled:
            flow.error = flow.kill_reason
        except NectoProxyError as exc:
            # What failed after the client went away is a consequence, not the cause.
            error = exc if self.gone is None else ClientDisconnected(self.gone)
            flow.error = str(error)
            if not isinstance(error, ClientDisconnected):
                await self._answer_error(error.status, str(error))
        except h11.ProtocolError as exc:  # a peer broke HTTP in a way not caught earlier
            flow.error = f"protocol error: {exc}"
            await self._answer_error(502, f"cannot forward the request: {exc}")
        flow.timestamp_end = time.time()
        log.debug("flow %s failed: %s", flow.request.url, flow.error)
        if self.hooks.has("on_error"):
            await self.hooks.call("on_error", flow=flow, error=flow.error)
        return False

    async def _answer_error(self, status: int, message: str) -> None:
        if self.client.can_answer():
            self.flow.response = error_response(status, message)
            try:
                await self.client.send_response(self.flow.response,
                                                [self.flow.response.raw_content or b""],
                                                True, None)
            except ClientDisconnected:
                pass  # nothing more to tell a client that is gone

    # -- the request -------------------------------------------------------------------------

    async def _handle(self) -> None:
        flow = self.flow
        request = flow.request
        if not flow.received_request_headers:  # (reverse mode's session set them already)
            flow.received_request_headers = list(request.headers.fields)
        original_authority = request.authority
        upgrade = upgrade_protocol(request.headers)
        strip_hop_by_hop(request.headers)
        if upgrade:  # WebSocket & co: the handshake headers must reach the origin
            request.headers["Connection"] = "Upgrade"
            request.headers["Upgrade"] = upgrade
        limit = self.config.max_body_size
        if limit and declared_length(request.headers) > limit:
            raise ProtocolError(f"request body of {declared_length(request.headers)} bytes "
                                f"exceeds proxy.max_body_size ({limit})", status=413)
        await self.client.send_continue()
        if "expect" in request.headers:
            del request.headers["expect"]
        pending: Chunk = b""
        with_body = has_body(request.headers)
        await self._hook("on_request_headers")
        if not with_body:
            await self._client_chunk()  # the end of a request without a body
            request.raw_content = b""
        if flow.response is None and (self.hooks.has("on_request") or flow.intercepted):
            if with_body:
                buffered, complete = await self._buffer(self._client_chunk, request.headers)
                if complete:
                    request.raw_content = bytes(buffered)
                    request.trailers = self.client.trailers
                else:
                    pending = buffered
            await self._hook("on_request")
        # (Answered from the headers: an unread body means the connection closes.)
        flow.timestamp_request_end = time.time()
        if flow.response is None:
            if "host" not in request.headers or request.authority != original_authority:
                request.headers["Host"] = request.authority  # HTTP/1.0 clients may omit it
            await self._forward(pending)
        else:
            await self._hook("on_response_headers")
        await self._respond()

    async def _hook(self, name: str) -> None:
        if self.hooks.has(name):
            await self.hooks.call(name, flow=self.flow)
        # A flow paused by a head hook waits once its body is buffered and the body hook ran
        # (see Flow.intercept), so the whole message can be edited.
        if self.flow.intercepted and name not in _HEAD_HOOKS:
            await self._paused(name)
        if self.flow.killed:
            raise FlowKilled

    async def _paused(self, hook: str) -> None:
        """Wait while a plugin holds the flow (``flow.intercept()``); only this flow waits. A
        client that goes away meanwhile cancels the wait as it cancels any other."""
        flow = self.flow
        timeout = self.config.intercept_timeout or math.inf
        log.debug("flow %s paused after %s", flow.request.url, hook)
        with anyio.move_on_after(timeout) as waiting:
            await flow.wait_for_resume()
        if waiting.cancelled_caught:
            log.warning("%s %s was paused after %s for %gs (proxy.intercept_timeout): it "
                        "continues", flow.request.method, flow.request.url, hook, timeout)
            flow.resume()

    async def _forward(self, pending: Chunk) -> None:
        """Send the request to its origin and read the response head (and body, if wanted)."""
        flow = self.flow
        request = flow.request
        same_host = self.tunnel_target == (request.host, request.port)
        target = Target(request.scheme, request.host, request.port,
                        self.server_name if self.server_name and same_host else request.host)
        for attempt in (1, 2):
            upstream = await self.origin.get(target)
            reused = upstream.requests_sent > 0
            flow.server_address = upstream.address
            flow.timestamp_connected = flow.timestamp_connected or time.time()
            if not reused:
                flow.timestamp_tcp_connected = upstream.tcp_connected_at
                flow.timestamp_tls_established = upstream.tls_established_at
            if target.scheme == "https":
                flow.server_tls = upstream.tls_info()
            try:
                await self._send_request(upstream, pending)
                flow.timestamp_request_sent = time.time()
                event = await self._upstream_head(upstream)
                break
            except UpstreamError as exc:
                await self.origin.drop()
                # An idle kept-alive connection the origin closed meanwhile: try a fresh one,
                # unless the body already streamed (it cannot be sent twice).
                if not (reused and attempt == 1 and request.raw_content is not None):
                    raise
                log.debug("retrying %s on a new connection: %s", request.url, exc)
        flow.timestamp_response_start = time.time()
        response = response_from_event(event)
        flow.received_response_headers = list(response.headers.fields)
        flow.response = response
        limit = self.config.max_body_size
        if limit and declared_length(response.headers) > limit:
            raise UpstreamError(f"response body of {declared_length(response.headers)} bytes "
                                f"exceeds proxy.max_body_size ({limit})")
        await self._hook("on_response_headers")
        if response.status_code == 101:
            response.raw_content = b""  # the connection now carries another protocol
        elif request.method == "HEAD" or response.status_code in _NO_BODY_STATUS:
            response.raw_content = b""
            await self._upstream_chunk()
        elif self.hooks.has("on_response") or flow.intercepted:
            buffered, complete = await self._buffer(self._upstream_chunk, response.headers)
            if complete:
                response.raw_content = bytes(buffered)
                response.trailers = upstream.trailers
            else:
                self._pending_response = buffered

    async def _send_request(self, upstream: Upstream, pending: Chunk) -> None:
        if upstream.http2:
            await self._send_request_h2(upstream, pending)
            return
        flow = self.flow
        request = flow.request
        headers = request.headers
        reframe = (request.chunk_filters and not request.filters_keep_length) or request.trailers
        if reframe and (request.raw_content or has_body(headers)):
            set_chunked(headers)  # filters may change the size; trailers need chunks
        elif request.raw_content is not None and (request.raw_content or has_body(headers)):
            set_length(headers, len(request.raw_content))
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
        body = request.raw_content
        if body is not None and not request.chunk_filters:
            # The common case in one write: head, body, end (and so one TLS record).
            trailers = request.trailers
            end = h11.EndOfMessage(headers=trailers.to_raw() if trailers else [])
            data = upstream.encode(head) + (upstream.encode(h11.Data(data=body)) if body
                                            else b"") + upstream.encode(end)
            with upstream_errors(upstream.target):
                await upstream.send_bytes(data)
            flow.request_body_size = len(body)
            if body and flow.body_taps:
                await flow.tap("request", body)
            return
        with upstream_errors(upstream.target):
            await upstream.send(head)
        if body is not None:
            await self._to_origin(upstream, body)
            trailers = request.trailers
        else:
            if pending:
                await self._to_origin(upstream, pending)
            while (chunk := await self._client_chunk()) is not None:
                await self._to_origin(upstream, chunk)
            trailers = request.trailers = self.client.trailers  # (on the flow as well)
        with upstream_errors(upstream.target):
            await upstream.send(h11.EndOfMessage(headers=trailers.to_raw() if trailers else []))

    async def _send_request_h2(self, upstream: Upstream, pending: Chunk) -> None:
        """The request on a stream of an HTTP/2 origin (:class:`~.upstream2.H2Upstream`)."""
        assert isinstance(upstream, H2Upstream)
        flow = self.flow
        request = flow.request
        body = request.raw_content
        if request.chunk_filters and not request.filters_keep_length:
            if "content-length" in request.headers:
                del request.headers["content-length"]  # (HTTP/2 frames the body itself)
        elif body is not None and (body or has_body(request.headers)):
            set_length(request.headers, len(body))
        # (gRPC servers want "te: trailers", a hop-by-hop field the request lost on the way.)
        te_trailers = any(name.lower() == "te" and "trailers" in value.lower()
                          for name, value in flow.received_request_headers)
        flow.request_body_size = 0
        empty = body is not None and not body and not request.trailers
        with upstream_errors(upstream.target):
            await upstream.send_head(request, empty, te_trailers)
        if empty:
            return
        if body is not None:
            await self._to_origin(upstream, body)
            with upstream_errors(upstream.target):
                await upstream.end_body(request.trailers)
        elif self.uploads is not None:
            self.uploads.start_soon(self._upload, upstream, pending)
        else:
            await self._stream_to_origin(upstream, pending)

    async def _stream_to_origin(self, upstream: H2Upstream, pending: Chunk) -> None:
        if pending:
            await self._to_origin(upstream, pending)
        while (chunk := await self._client_chunk()) is not None:
            await self._to_origin(upstream, chunk)
        trailers = self.flow.request.trailers = self.client.trailers  # (on the flow as well)
        with upstream_errors(upstream.target):
            await upstream.end_body(trailers)

    async def _upload(self, upstream: H2Upstream, pending: Chunk) -> None:
        """The request body, streamed while the response comes (see ``uploads``)."""
        try:
            await self._stream_to_origin(upstream, pending)
        except ClientDisconnected as exc:
            self.client_gone(str(exc))
        except NectoProxyError as exc:
            # The origin stopped reading (it may have answered already): what it answered,
            # or that it failed, is what the response side reports.
            log.debug("request body to %s not sent whole: %s", upstream.target, exc)

    async def _to_origin(self, upstream: Upstream, data: Chunk) -> None:
        async def send(chunk: Chunk) -> None:
            with upstream_errors(upstream.target):
                await upstream.send_data(chunk)
            self.flow.request_body_size += len(chunk)
            if self.flow.body_taps:
                await self.flow.tap("request", chunk)

        filters = self.flow.request.chunk_filters
        await (run_filters(data, filters, send) if filters else send(data))

    # -- the response ------------------------------------------------------------------------

    async def _respond(self) -> None:
        flow = self.flow
        await self._hook("on_response")
        response = flow.response
        assert response is not None
        if response.status_code == 101 and self.origin.upstream is not None:
            await self._switch_protocols(response)
            return
        strip_hop_by_hop(response.headers)
        no_body = flow.request.method == "HEAD" or response.status_code in _NO_BODY_STATUS
        reframe = (response.chunk_filters and not response.filters_keep_length) or \
            response.trailers
        if reframe and not no_body:
            # Filters may change the size: let the client side frame the body (chunked, or
            # close-delimited for HTTP/1.0 clients) instead of promising a length.
            for name in ("content-length", "transfer-encoding"):
                if name in response.headers:
                    del response.headers[name]
        elif response.raw_content is not None and not no_body:
            set_length(response.headers, len(response.raw_content))
        if response.chunk_filters or not await self._send_whole(response, no_body):
            await self._send_streamed(response, no_body)
        await self._finish()

    async def _send_whole(self, response: Response, no_body: bool) -> bool:
        """Send the whole response in one write when its body is already here (buffered, or
        wholly in the upstream's receive buffer, as small responses are); when only its start
        is here, send that with the head and return False (the rest streams)."""
        chunks: list[Chunk] = []
        if response.raw_content is not None:
            if response.raw_content and not no_body:
                chunks.append(response.raw_content)
            trailers = response.trailers
        else:
            upstream = self.origin.upstream
            if upstream is None or self._pending_response:
                return False
            while (chunk := self._upstream_buffered_chunk(upstream)) is not None:
                if chunk is NOT_YET:  # not all here: send what we have, stream the rest
                    await self.client.send_response(response, chunks, False, None)
                    await self._sent_to_client(chunks)
                    return False
                chunks.append(chunk)  # type: ignore[arg-type]
            # (Kept on the flow too, relayed or buffered: gRPC's status lives there.)
            trailers = response.trailers = upstream.trailers
        await self.client.send_response(response, chunks, True, trailers)
        await self._sent_to_client(chunks)
        return True

    async def _sent_to_client(self, chunks: list[Chunk]) -> None:
        flow = self.flow
        for chunk in chunks:
            flow.response_body_size += len(chunk)
            if flow.body_taps:
                await flow.tap("response", chunk)

    async def _send_streamed(self, response: Response, no_body: bool) -> None:
        if self.client.can_answer():  # (_send_whole may have sent the head and a first part)
            await self.client.send_response(response, [], False, None)
        if response.raw_content is not None:
            if not no_body:
                await self._to_client(response.raw_content)
            trailers = response.trailers
        else:
            pending, self._pending_response = self._pending_response, b""
            if pending:
                await self._to_client(pending)
            while (chunk := await self._upstream_chunk()) is not None:
                await self._to_client(chunk)
            upstream = self.origin.upstream
            trailers = response.trailers = upstream.trailers if upstream else None
        await self.client.end_response(trailers)

    async def _to_client(self, data: Chunk) -> None:
        async def send(chunk: Chunk) -> None:
            await self.client.send_body(chunk)
            self.flow.response_body_size += len(chunk)
            if self.flow.body_taps:
                await self.flow.tap("response", chunk)

        filters = self.flow.response.chunk_filters if self.flow.response else []
        await (run_filters(data, filters, send) if filters else send(data))

    async def _finish(self) -> None:
        upstream = self.origin.upstream
        if upstream is not None and not upstream.reusable:
            await self.origin.drop()  # (a reusable one starts its next cycle when reused)
        self.flow.timestamp_end = time.time()
        if self.hooks.has("on_complete"):
            await self.hooks.call("on_complete", flow=self.flow)

    async def _switch_protocols(self, response: Response) -> None:
        """101 Switching Protocols: relay raw bytes both ways until either side closes (a
        WebSocket connection's messages, when plugins want them: see :mod:`.websocket`)."""
        upgrade = upgrade_protocol(response.headers)
        strip_hop_by_hop(response.headers)
        if upgrade:
            response.headers["Connection"] = "Upgrade"
            response.headers["Upgrade"] = upgrade
        try:
            client = await self.client.switch_protocols(response)
        except h11.LocalProtocolError as exc:
            raise UpstreamError(f"origin switched protocols unasked: {exc}") from None
        self.flow.metadata["upgraded"] = upgrade or True
        upstream = self.origin.detach()
        upstream.stream.unread(bytes(upstream.h11.trailing_data[0]))
        if isinstance(upgrade, str) and upgrade.strip().lower() == "websocket":
            await relay_websocket(self.flow, self.hooks, client, upstream.stream,
                                  buffer_limit=self.config.body_buffer_limit)
        else:
            await relay(client, upstream.stream)
        self.flow.timestamp_end = time.time()
        if self.hooks.has("on_complete"):
            await self.hooks.call("on_complete", flow=self.flow)

    # -- body plumbing -----------------------------------------------------------------------

    async def _buffer(self, read: Callable[[], Awaitable[Chunk | None]], headers: Headers
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

    async def _client_chunk(self) -> Chunk | None:
        chunk = await self.client.read_body()
        if chunk is not None and self.config.max_body_size:
            self._request_body_read += len(chunk)
            if self._request_body_read > self.config.max_body_size:
                raise ProtocolError(f"request body exceeds proxy.max_body_size "
                                    f"({self.config.max_body_size})", status=413)
        return chunk

    async def _upstream_chunk(self) -> Chunk | None:
        upstream = self.origin.upstream
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

    def _count_response_bytes(self, chunk: Chunk) -> None:
        if self.config.max_body_size:
            self._response_body_read += len(chunk)
            if self._response_body_read > self.config.max_body_size:
                raise UpstreamError(f"response body exceeds proxy.max_body_size "
                                    f"({self.config.max_body_size})")

    def _upstream_buffered_chunk(self, upstream: Upstream) -> Chunk | None | object:
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
