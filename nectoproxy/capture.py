"""Capture: every flow the proxy handles, written to the flow store as it happens.

:class:`Capture` is an ordinary plugin (named "capture"). It watches through public hooks and
the engine's body taps, and hands everything to a :class:`~nectoproxy.store.CaptureWriter`,
whose methods never block, so the proxy never waits for the disk. A flow appears in the store
when its request head is in (status still empty), its bodies follow as they are relayed, and
it is completed by ``on_complete`` or ``on_error``. Bodies are stored up to ``max_body_size``
bytes each (the rest is dropped from the store only, and the body is marked truncated).

:func:`record_from_flow` is the one mapping from the engine's :class:`~nectoproxy.flow.Flow` to
the store's :class:`~nectoproxy.store.FlowRecord`; the HAR plugin uses it too.
"""

from __future__ import annotations

import logging
import time
import weakref
import zlib
from collections.abc import Awaitable
from typing import Any

import anyio

from nectoproxy import replaytag
from nectoproxy.flow import Flow, Tunnel, format_authority
from nectoproxy.hookspecs import hookimpl
from nectoproxy.store import DEFAULT_MAX_BODY_SIZE, FlowRecord, FlowWriter, TlsInfo
from nectoproxy.store.capturewire import End, Head, coding, fields_from_end, record_from_head
from nectoproxy.store.records import Timings
from nectoproxy.store.wsframes import WebSocketEvent
from nectoproxy.websocket import WebSocketData, WebSocketMessage

log = logging.getLogger("nectoproxy.capture")

_REPLAY = replaytag.HEADER.lower()
#: Longest a body's relay waits for the writer at a time (see ``_wait_for_writer``).
WRITER_WAIT = 2.0

def _address(address: tuple[str, int] | None) -> str | None:
    return format_authority(address[0], address[1]) if address else None


def flow_head(flow: Flow, *, mode: str = "regular", replay_of: str | None = None) -> Head:
    """What is known of ``flow`` when its request head is in, as plain values (the writer
    maps them to a record: :func:`~nectoproxy.store.capturewire.record_from_head`)."""
    request = flow.request
    tls = flow.connection.tls
    return (flow.id, mode, _address(flow.client_address), request.scheme, request.method,
            request.url, request.host, request.port, request.path, request.http_version,
            list(flow.received_request_headers or request.headers.fields),
            flow.timestamp_start,
            None if tls is None else (tls.sni, tls.version, tls.cipher, tls.alpn), replay_of)


_NOT_COUNTED = (False, False, -1, -1)


def flow_end(flow: Flow, head: Head,
             bodies: tuple[bool, bool, int | None, int | None] = _NOT_COUNTED) -> End:
    """What ``flow`` added to its ``head`` by its end, as plain values (see
    :data:`~nectoproxy.store.capturewire.END_FIELDS`; the writer maps them to fields)."""
    request = flow.request
    method, url = request.method, request.url
    target = None if method == head[4] and url == head[5] else (
        method, url, request.host, request.port, request.path, request.scheme)
    fields = request.headers.fields
    # Forwarded: what went to the origin, when it is not what came (compared unredacted).
    sent = list(fields) if flow.timestamp_request_sent is not None and \
        fields != head[10] else None
    server = flow.server_tls
    response = flow.response
    answer: tuple[Any, ...] | None = None
    if response is not None:
        shown = list(response.headers.fields)
        received = flow.received_response_headers
        size = flow.response_body_size
        if size == 0 and response.raw_content:  # a body never relayed (a plugin's answer)
            size = len(response.raw_content)
        answer = (response.status_code, response.reason,
                  list(received) if received is not None else shown, shown, size)
    return (flow.timestamp_start,
            (flow.timestamp_tcp_connected, flow.timestamp_tls_established,
             flow.timestamp_request_sent, flow.timestamp_response_start, flow.timestamp_end),
            _address(flow.server_address),
            None if server is None else (server.sni, server.version, server.cipher,
                                         server.alpn, server.subject, server.issuer,
                                         server.not_after),
            flow.error, list(flow.modified_by), bool(flow.metadata.get("upgraded")), target,
            sent, coding(fields),
            flow.request_body_size or (len(request.raw_content) if request.raw_content else 0),
            answer, bodies,
            (None if not request.trailers else list(request.trailers.fields),
             None if response is None or not response.trailers
             else list(response.trailers.fields)))


def record_from_flow(flow: Flow, *, mode: str = "regular") -> FlowRecord:
    """Everything known about ``flow`` now, as the store keeps it (bodies apart)."""
    head = flow_head(flow, mode=mode)
    record = record_from_head(head)
    for name, value in fields_from_end(flow_end(flow, head)).items():
        setattr(record, name, value)
    return record


def tunnel_record(tunnel: Tunnel, *, mode: str = "regular") -> FlowRecord:
    """A pass-through tunnel as an entry of its own."""
    from nectoproxy.store import new_flow_id

    authority = format_authority(tunnel.host, tunnel.port)
    end = tunnel.timestamp_end or tunnel.timestamp_start
    tls = TlsInfo(sni=tunnel.sni) if tunnel.sni else None
    return FlowRecord(
        id=new_flow_id(), kind="tunnel", mode=mode, scheme="tunnel", method="CONNECT",
        url=authority, host=tunnel.host, port=tunnel.port, path="",
        client_addr=_address(tunnel.connection.client_address),
        server_addr=_address(tunnel.server_address), started_at=tunnel.timestamp_start,
        duration=round((end - tunnel.timestamp_start) * 1000, 3), error=tunnel.error,
        bytes_up=tunnel.bytes_up, bytes_down=tunnel.bytes_down, tls_client=tls,
        request_headers=[], timings=Timings(complete=round((end - tunnel.timestamp_start)
                                                           * 1000, 3)))


class _DecodedSize:
    """Counts a body's decoded size as its encoded bytes go by (gzip and deflate)."""

    __slots__ = ("_decoder", "size")

    def __init__(self, coding: str) -> None:
        wbits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._decoder: Any = zlib.decompressobj(wbits)
        self.size: int | None = 0

    def feed(self, data: bytes | bytearray, first: bool) -> None:
        if self.size is None:
            return
        try:
            self.size += len(self._decoder.decompress(data))
        except zlib.error:
            self.size = None
            if first:  # raw deflate (no zlib header), as some servers send: start again
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                try:
                    self.size = len(self._decoder.decompress(data))
                except zlib.error:
                    pass


class _FlowCapture:
    """One flow's capture state; it is also the flow's body tap."""

    __slots__ = ("_flow", "decoded", "flow_id", "owner", "started", "stored", "truncated",
                 "writer")

    def __init__(self, owner: Capture, flow: Flow, started: Head) -> None:
        self.owner = owner
        # Weakly: the flow holds this tap, and a cycle would leave every flow (with its
        # bodies) to the cyclic collector instead of going when its connection does.
        self._flow = weakref.ref(flow)
        self.flow_id = flow.id
        self.writer = owner.writer
        #: The head the flow started with (what was sent to the writer then).
        self.started = started
        self.stored = {"request": 0, "response": 0}
        self.truncated = {"request": False, "response": False}
        #: Per direction, once its first chunk came: its decoded-size counter, if encoded.
        self.decoded: dict[str, _DecodedSize | None] = {}

    def __call__(self, direction: str, chunk: bytes | bytearray) -> Awaitable[None] | None:
        stored = self.stored[direction]
        limit = self.owner.max_body_size
        first = direction not in self.decoded
        if first:
            self.decoded[direction] = self._counter(direction)
        counter = self.decoded[direction]
        if counter is not None and stored < limit:
            counter.feed(chunk, first)
        if stored >= limit:
            if chunk:
                self.truncated[direction] = True
                if counter is not None:
                    counter.size = None
            return None
        if len(chunk) > limit - stored:
            chunk = chunk[: limit - stored]
            self.truncated[direction] = True
        self.stored[direction] = stored + len(chunk)
        writer = self.writer
        writer.body_chunk(self.flow_id, direction, chunk)  # type: ignore[arg-type]
        if writer.queued_bytes > writer.max_queued_bytes // 2:
            return self._wait_for_writer()
        return None

    async def _wait_for_writer(self) -> None:
        """The writer is behind (bodies come faster than the disk takes them): hold this
        body a little, so that it is stored whole instead of dropped. Bounded: after
        ``WRITER_WAIT`` seconds the body goes on, and what does not fit is dropped."""
        writer = self.writer
        deadline = time.monotonic() + WRITER_WAIT
        while writer.queued_bytes > writer.max_queued_bytes // 4 and \
                time.monotonic() < deadline:
            await anyio.sleep(0.002)

    def _counter(self, direction: str) -> _DecodedSize | None:
        flow = self._flow()
        if flow is None:
            return None
        message = flow.request if direction == "request" else flow.response
        if message is None:
            return None
        name = coding(message.headers.fields)
        return _DecodedSize(name) if name in ("gzip", "x-gzip", "deflate") else None

    def finish(self, flow: Flow) -> None:
        # Bodies that were never relayed: a request answered by a plugin, an error answer.
        if self.stored["request"] == 0 and flow.request.raw_content and \
                flow.timestamp_request_sent is None:
            self("request", flow.request.raw_content)  # (a wait it asks for is not needed)
        response = flow.response
        if self.stored["response"] == 0 and response is not None and response.raw_content \
                and flow.response_body_size == 0:
            self("response", response.raw_content)
        decoded = self.decoded
        request, response_counter = decoded.get("request"), decoded.get("response")
        truncated = self.truncated
        self.writer.flow_end(flow.id, flow_end(flow, self.started, (
            truncated["request"], truncated["response"],
            -1 if request is None else request.size,
            -1 if response_counter is None else response_counter.size)))


class _MessageCapture:
    """A captured WebSocket connection's message tap: each message becomes one event, its
    content stored up to ``max_body_size`` bytes per direction over the whole connection
    (bounded as its two bodies would be; past that, messages keep their size only)."""

    __slots__ = ("flow_id", "owner", "parts", "room", "size")

    def __init__(self, owner: Capture, flow_id: str) -> None:
        self.owner = owner
        self.flow_id = flow_id
        self.room = {True: owner.max_body_size, False: owner.max_body_size}
        #: The message being relayed each way: its pieces kept so far and its whole size.
        self.parts: dict[bool, list[bytes]] = {True: [], False: []}
        self.size = {True: 0, False: 0}

    def __call__(self, message: WebSocketMessage, piece: bytes, last: bool
                 ) -> Awaitable[None] | None:
        way = message.from_client
        self.size[way] += len(piece)
        room = self.room[way]
        if room and piece:
            kept = piece if len(piece) <= room else piece[:room]
            self.parts[way].append(kept)
            self.room[way] = room - len(kept)
        if not last:
            return None
        data = b"".join(self.parts[way])
        size, self.size[way], self.parts[way] = self.size[way], 0, []
        writer = self.owner.writer
        writer.websocket(WebSocketEvent(
            self.flow_id, "message", message.timestamp, direction=message.direction,
            opcode=1 if message.is_text else 2, size=size, injected=message.injected,
            truncated=len(data) < size, data=data))
        if writer.queued_bytes > writer.max_queued_bytes // 2:
            return _wait_for(writer)
        return None


async def _wait_for(writer: FlowWriter) -> None:
    """As :meth:`_FlowCapture._wait_for_writer`, for WebSocket messages."""
    deadline = time.monotonic() + WRITER_WAIT
    while writer.queued_bytes > writer.max_queued_bytes // 4 and time.monotonic() < deadline:
        await anyio.sleep(0.002)


class Capture:
    """The capture plugin: hand it the process's writer (``Capture(writer, token=...)``), a
    :class:`~nectoproxy.store.CaptureWriter` or a :class:`~nectoproxy.store.ProcessWriter`."""

    name = "capture"
    #: Stripping its own replay header is all it changes (so it is not tracked as a change);
    #: it records which other plugins change a flow.
    changes_flows = False
    tracks_changes = True

    def __init__(self, writer: FlowWriter, *, token: str = "",
                 max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        self.writer = writer
        self.token = token
        self.max_body_size = max_body_size
        #: False pauses capture: new flows are not stored (flows under way still are).
        self.enabled = True
        #: The captured WebSocket connections open now, by flow id (the API sends into them).
        self.websockets: weakref.WeakValueDictionary[str, WebSocketData] = \
            weakref.WeakValueDictionary()

    def _state(self, flow: Flow) -> _FlowCapture | None:
        for tap in flow.body_taps:
            if isinstance(tap, _FlowCapture) and tap.owner is self:
                return tap
        return None

    def _start(self, flow: Flow) -> _FlowCapture:
        replay_of: str | None = None
        headers = flow.request.headers
        if _REPLAY in headers:
            tag = replaytag.parse(self.token, headers[_REPLAY])
            del headers[_REPLAY]
            flow.received_request_headers = [
                (k, v) for k, v in flow.received_request_headers if k.lower() != _REPLAY]
            if tag is not None:
                original, flow.id = tag
                replay_of = original or None
        head = flow_head(flow, mode=flow.connection.mode, replay_of=replay_of)
        state = _FlowCapture(self, flow, head)
        flow.body_taps.append(state)
        self.writer.flow_head(head)
        return state

    @hookimpl(tryfirst=True)
    def on_request_headers(self, flow: Flow) -> None:
        if self.enabled or _REPLAY in flow.request.headers:
            self._start(flow)

    @hookimpl(trylast=True)
    def on_complete(self, flow: Flow) -> None:
        state = self._state(flow)
        if state is not None:
            state.finish(flow)

    @hookimpl(trylast=True)
    def on_error(self, flow: Flow) -> None:
        state = self._state(flow)
        if state is None and self.enabled:  # failed before its head reached the hooks
            state = self._start(flow)
        if state is not None:
            state.finish(flow)

    @hookimpl(trylast=True)
    def on_websocket_start(self, flow: Flow) -> None:
        ws = flow.websocket
        if ws is None or self._state(flow) is None:
            return
        self.writer.websocket(WebSocketEvent(
            flow.id, "open", ws.timestamp_start,
            info={"subprotocol": ws.subprotocol, "extensions": ws.extensions}))
        ws.message_taps.append(_MessageCapture(self, flow.id))
        self.websockets[flow.id] = ws

    @hookimpl(trylast=True)
    def on_websocket_end(self, flow: Flow) -> None:
        ws = flow.websocket
        if ws is None or self.websockets.pop(flow.id, None) is None:
            return
        self.writer.websocket(WebSocketEvent(
            flow.id, "close", ws.timestamp_end or time.time(),
            direction=None if ws.closed_by_client is None else
            ("client" if ws.closed_by_client else "server"),
            info={"code": ws.close_code, "reason": ws.close_reason,
                  "messagesFromClient": ws.messages_from_client,
                  "messagesFromServer": ws.messages_from_server}))

    @hookimpl(trylast=True)
    def on_tunnel(self, tunnel: Tunnel) -> None:
        if self.enabled:
            self.writer.tunnel(tunnel_record(tunnel, mode=tunnel.connection.mode))

