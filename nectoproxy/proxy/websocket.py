"""A WebSocket connection after its 101: its messages parsed, hooked and relayed, or its bytes
relayed opaque.

:func:`relay_websocket` calls ``on_websocket_start``, then relays: when no plugin implements
``on_websocket_message`` and nothing taps the messages (capture off), as opaque bytes, as fast
as any upgraded connection; otherwise through wsproto's sans-IO frame protocol, once per side
(the proxy is the server to the client and the client to the origin), with permessage-deflate
when the two agreed on it. A message is held whole for the hook up to ``body_buffer_limit``;
without the hook, and past that limit, each piece is forwarded as it arrives (a fragment
of the same message), so a large message streams. Ping, pong and close frames pass through;
the first close frame's code and reason are kept. ``on_websocket_end`` fires at the end.
"""

from __future__ import annotations

import logging
import math
import time
from typing import cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode, ParseFailed

from nectoproxy.flow import Flow
from nectoproxy.plugins import PluginHost
from nectoproxy.proxy.streams import STREAM_ERRORS, EngineStream, close_quietly, relay
from nectoproxy.websocket import WebSocketData, WebSocketMessage

log = logging.getLogger("nectoproxy.websocket")

_READ = 256 * 1024
#: Read size when messages are compressed: wsproto inflates what one read brings at once, and
#: deflate can expand ~1000 times, so this bounds what a small compressed frame can become.
_READ_COMPRESSED = 32 * 1024


def parse_extensions(header: str | None) -> list[Extension] | None:
    """wsproto's extensions for a negotiated ``Sec-WebSocket-Extensions`` (one set per side,
    they hold compression state): none, or permessage-deflate; None for anything else (an
    extension the proxy cannot parse: such a connection is relayed opaque)."""
    agreed = [part.strip() for part in (header or "").split(",") if part.strip()]
    if not agreed:
        return []
    if len(agreed) > 1 or agreed[0].split(";")[0].strip().lower() != PerMessageDeflate.name:
        return None
    deflate = PerMessageDeflate()
    try:
        deflate.finalize(agreed[0])
    except (ValueError, IndexError):
        return None
    return [deflate]


async def relay_websocket(flow: Flow, hooks: PluginHost, client: EngineStream,
                          origin: EngineStream, *, buffer_limit: int) -> None:
    """Serve the WebSocket connection ``flow`` switched to, until both sides closed."""
    response = flow.response
    assert response is not None
    ws = WebSocketData(subprotocol=response.headers.get("sec-websocket-protocol"),
                       extensions=response.headers.get("sec-websocket-extensions"))
    flow.websocket = ws
    injected, queue = anyio.create_memory_object_stream[WebSocketMessage](math.inf)
    ws._send = injected.send_nowait
    try:
        with injected, queue:
            if hooks.has("on_websocket_start"):
                await hooks.call("on_websocket_start", flow=flow)
            wanted = hooks.has("on_websocket_message") or bool(ws.message_taps) or \
                queue.statistics().current_buffer_used > 0
            extensions = parse_extensions(ws.extensions) if wanted else None
            if extensions is None:
                if wanted:
                    log.info("%s: relaying WebSocket messages unparsed: extensions %r",
                             flow.request.url, ws.extensions)
                ws._send = None
                await relay(client, origin)
            else:
                ws.parsed = True
                relay_ = _MessageRelay(flow, hooks, client, origin, extensions, buffer_limit)
                await relay_.run(queue)
    finally:
        ws._send = None
        ws.timestamp_end = time.time()
        # (Also when the flow is cancelled: what on_websocket_start began is ended.)
        with anyio.CancelScope(shield=True):
            await close_quietly(client)
            await close_quietly(origin)
            if hooks.has("on_websocket_end"):
                await hooks.call("on_websocket_end", flow=flow)


class _Side:
    """One peer: its stream, the wsproto state that reads its frames and writes to it, and
    the message being read from it."""

    __slots__ = ("dropping", "fragments", "from_client", "held", "held_size", "message", "out",
                 "out_size", "proto", "stream", "streaming", "write_lock")

    def queue(self, frame: bytearray) -> None:
        self.out.append(frame)
        self.out_size += len(frame)

    def __init__(self, stream: EngineStream, proto: FrameProtocol, *, from_client: bool
                 ) -> None:
        self.stream = stream
        self.proto = proto
        #: Whether what is read from this side comes from the client.
        self.from_client = from_client
        #: Set while a message is sent to this side in fragments (by the pump that relays to
        #: it): another (injected) message must not come between them. A whole message is
        #: one frame, queued at once: it only waits for this to be None.
        self.fragments: anyio.Event | None = None
        #: Held while a write to this side is under way (by its pump, or the injector).
        self.write_lock = anyio.Lock()
        #: Frames encoded for this side, sent together (one write per read on the other), and
        #: their size.
        self.out: list[bytes | bytearray] = []
        self.out_size = 0
        self.message: WebSocketMessage | None = None
        self.held: list[str | bytes] = []
        self.held_size = 0
        #: The message being read is forwarded piece by piece (the other side's
        #: ``fragments`` is set), or is being dropped.
        self.streaming = False
        self.dropping = False


class _MessageRelay:
    __slots__ = ("client", "flow", "hooks", "limit", "origin", "read_size", "running", "scope",
                 "whole", "ws")

    def __init__(self, flow: Flow, hooks: PluginHost, client: EngineStream,
                 origin: EngineStream, extensions: list[Extension], limit: int) -> None:
        self.flow = flow
        assert flow.websocket is not None
        self.ws = flow.websocket
        self.hooks = hooks
        self.whole = hooks.has("on_websocket_message")
        self.limit = limit
        # The extensions were agreed on one connection: each side gets its own instance.
        twin = parse_extensions(self.ws.extensions) or []
        self.client = _Side(client, FrameProtocol(client=False, extensions=extensions),
                            from_client=True)
        self.origin = _Side(origin, FrameProtocol(client=True, extensions=twin),
                            from_client=False)
        self.read_size = _READ_COMPRESSED if extensions else _READ
        self.running = 2
        self.scope = anyio.CancelScope()

    async def run(self, queue: MemoryObjectReceiveStream[WebSocketMessage]) -> None:
        with self.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, self.client, self.origin)
                tg.start_soon(self._pump, self.origin, self.client)
                tg.start_soon(self._inject, queue)

    async def _pump(self, source: _Side, sink: _Side) -> None:
        try:
            while True:
                data = await source.stream.receive(self.read_size)
                source.proto.receive_bytes(data)
                for frame in source.proto.received_frames():
                    await self._frame(source, sink, frame)
                await self._flush(sink)
        except STREAM_ERRORS:
            pass
        except ParseFailed as exc:
            log.info("%s: invalid WebSocket frame from the %s: %s", self.flow.request.url,
                     "client" if source.from_client else "server", exc)
            self._closed(int(exc.code), str(exc), source.from_client)
            self.scope.cancel()  # (both streams are closed by the caller)
            return
        try:
            await self._flush(sink)
            await sink.stream.send_eof()
        except (*STREAM_ERRORS, NotImplementedError):
            self.scope.cancel()
        self.running -= 1
        if not self.running:
            self.scope.cancel()  # (the injector waits for nothing more)

    def _closed(self, code: int, reason: str, by_client: bool) -> None:
        if self.ws.closed_by_client is None:
            self.ws.close_code, self.ws.close_reason = code, reason
            self.ws.closed_by_client = by_client

    async def _frame(self, source: _Side, sink: _Side, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            code, reason = cast("tuple[int, str]", frame.payload)
            self._closed(int(code), reason, source.from_client)
            sink.queue(sink.proto.close(code, reason))
        elif opcode is Opcode.PING:
            sink.queue(sink.proto.ping(frame.payload))  # type: ignore[arg-type]
        elif opcode is Opcode.PONG:
            sink.queue(sink.proto.pong(frame.payload))  # type: ignore[arg-type]
        else:
            await self._data(source, sink, frame)

    async def _data(self, source: _Side, sink: _Side, frame: Frame) -> None:
        piece: str | bytes = frame.payload  # type: ignore[assignment]
        last = frame.message_finished
        message = source.message
        if message is None:
            message = source.message = WebSocketMessage(
                from_client=source.from_client, content=b"", is_text=frame.opcode is Opcode.TEXT)
        if source.dropping:
            pass
        elif source.streaming:
            await self._piece(sink, message, piece, last)
        elif not self.whole:
            if not last:  # (a message in one piece is one frame: nothing can come between)
                sink.fragments = anyio.Event()
                source.streaming = True
            await self._piece(sink, message, piece, last)
        else:
            await self._hold(source, sink, message, piece, last)
        if last:
            source.message = None
            source.dropping = False
            if source.streaming:
                source.streaming = False
                assert sink.fragments is not None
                sink.fragments.set()
                sink.fragments = None

    async def _hold(self, source: _Side, sink: _Side, message: WebSocketMessage,
                    piece: str | bytes, last: bool) -> None:
        """Hold the message for ``on_websocket_message`` until it is whole, or larger than
        the limit (then the hook sees its start, and the rest streams)."""
        source.held.append(piece)
        source.held_size += len(piece)
        if not last and source.held_size <= self.limit:
            return
        held = source.held
        start = "".join(cast("list[str]", held)) if message.is_text else \
            b"".join(cast("list[bytes]", held))
        source.held = []
        source.held_size = 0
        head = message.content = start.encode("utf-8") if isinstance(start, str) else start
        message.streamed = not last
        # What the hook injects that way goes after this message: it waits meanwhile.
        sink.fragments = hold = anyio.Event()
        try:
            await self.hooks.call("on_websocket_message", flow=self.flow, message=message)
            if message.dropped:
                source.dropping = True
                return
            if last:
                sink.queue(sink.proto.send_data(message.text if message.is_text
                                                else message.content))
            else:  # the rest streams: the hold lasts until its end (see _data)
                source.streaming = True
                sink.queue(sink.proto.send_data(start, fin=False))
        finally:
            if not source.streaming:
                sink.fragments = None
                hold.set()
        await self._sent(message, message.content if last else head, last)

    async def _piece(self, sink: _Side, message: WebSocketMessage, piece: str | bytes,
                     last: bool) -> None:
        sink.queue(sink.proto.send_data(piece, fin=last))
        if sink.out_size >= _READ:
            await self._flush(sink)
        await self._sent(message, piece.encode("utf-8") if isinstance(piece, str) else piece,
                         last)

    async def _send_whole(self, sink: _Side, message: WebSocketMessage) -> None:
        while sink.fragments is not None:  # a fragmented message is under way: after it
            await sink.fragments.wait()
        sink.queue(sink.proto.send_data(message.text if message.is_text else message.content))
        await self._sent(message, message.content, True)

    async def _sent(self, message: WebSocketMessage, piece: bytes, last: bool) -> None:
        """A piece of ``message`` was queued: the taps see it, the last one is counted."""
        if self.ws.message_taps:
            await self.ws.tap(message, piece, last)
        if last:
            self._count(message)

    def _count(self, message: WebSocketMessage) -> None:
        if message.from_client:
            self.ws.messages_from_client += 1
        else:
            self.ws.messages_from_server += 1

    async def _flush(self, side: _Side) -> None:
        if not side.out:
            return
        lock = side.write_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # (uncontended, the usual case: no scheduling round)
        try:
            frames, side.out, side.out_size = side.out, [], 0
            if frames:  # (a writer that had to wait may find its frames sent already)
                # One frame, the usual case, is sent as wsproto made it, without a copy (both
                # stream kinds take a bytearray, though EngineStream declares bytes).
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                await side.stream.send(data)  # type: ignore[arg-type]
        finally:
            lock.release()

    async def _inject(self, queue: MemoryObjectReceiveStream[WebSocketMessage]) -> None:
        async for message in queue:
            sink = self.origin if message.from_client else self.client
            try:
                await self._send_whole(sink, message)
                await self._flush(sink)
            except STREAM_ERRORS:
                log.debug("%s: injected message not sent: the peer is gone",
                          self.flow.request.url)
