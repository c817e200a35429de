"""Byte streams: the one stream interface the engine reads and writes through.

The engine never asks what kind of stream it has. Where a connection is accepted or opened,
one of two implementations of :class:`EngineStream` is chosen, once:

* :class:`TransportStream`, straight on the asyncio (or uvloop) transport, with TLS driven in
  place: it is the transport's protocol, reads ahead up to :data:`READ_HIGH` bytes and only then
  pauses the socket (back-pressure without extra system calls per request/response cycle), runs
  TLS through an :class:`ssl.SSLObject` inside ``data_received`` (everything the socket brought
  decrypted in one go), and reports a peer's reset or end the moment the loop sees it;
* :class:`AnyioStream`, an adapter that gives any anyio byte stream (a SocketStream, a
  TLSStream) the same interface: used on anyio backends other than asyncio (trio), or when
  :func:`connect`/the server is asked for anyio's streams.

Also here: :func:`relay` (copy both ways, half-closes passed on), :func:`close_quietly`,
:func:`connect` (happy eyeballs) and :func:`connect_socket`. Nothing here knows about HTTP.
"""

from __future__ import annotations

import abc
import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream

#: Errors a stream operation may raise when the peer or the network fails.
STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                 ConnectionError, ssl.SSLError, OSError)


def loop_transports_available() -> bool:
    """Whether this task runs where :class:`TransportStream` works (an asyncio loop)."""
    try:
        asyncio.get_running_loop()  # (on trio there is none)
    except RuntimeError:
        return False
    return True


class EngineStream(anyio.abc.ByteStream):
    """The interface of every stream the engine uses (see the module docstring)."""

    #: Called when the peer ends the connection while it is in use: ``reset=True`` for a reset
    #: or any other error, False for an orderly end; streams that cannot tell by themselves
    #: (:attr:`reports_peer_end` False) never call it.
    on_peer_end: Callable[[bool], None] | None
    reports_peer_end: bool = True

    @abc.abstractmethod
    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes``; TimeoutError if nothing arrives within ``timeout`` seconds."""

    @abc.abstractmethod
    async def wait_readable(self, timeout: float | None = None) -> None:
        """Return once there is something to receive (bytes, the end, an error)."""

    @abc.abstractmethod
    def unread(self, data: bytes | bytearray) -> None:
        """Put bytes back in front of what :meth:`receive` returns next."""

    @property
    @abc.abstractmethod
    def buffered(self) -> int:
        """How many received bytes wait unread (as far as this stream knows)."""

    @abc.abstractmethod
    def buffered_tail(self, length: int) -> bytes:
        """The last ``length`` (or fewer) received bytes that wait unread."""

    @property
    @abc.abstractmethod
    def quiet(self) -> bool:
        """Open, and nothing received: an idle connection the peer has not given up on."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping unsent bytes; a receive in progress ends."""

    @abc.abstractmethod
    async def start_tls(self, context: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None,
                        session: ssl.SSLSession | None = None) -> None:
        """Run a TLS handshake over this stream; afterwards it carries the plaintext.

        Bytes already received (or pushed back with :meth:`unread`) are the handshake's start.
        Raises :class:`ssl.SSLError` (certificate verification included),
        :class:`anyio.EndOfStream` or :class:`anyio.BrokenResourceError` if it fails; time-outs
        are the caller's. ``session`` (client side) offers an earlier session for resumption.
        """

    @property
    @abc.abstractmethod
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS state once :meth:`start_tls` succeeded."""

    def peer_reset(self) -> bool:
        """For streams that do not report their peer's end: whether the peer reset now."""
        return False


class AnyioStream(EngineStream):
    """Any anyio byte stream behind the :class:`EngineStream` interface.

    It knows only what it has read, so it cannot report a peer's end by itself
    (:attr:`reports_peer_end` is False: a session polls the socket instead), and it reads only
    while someone waits for data: anyio's asyncio streams pause the socket after a receive
    that had to wait, and a new one is paused here too, so a peer that sends faster than the
    other side takes meets back-pressure.
    """

    reports_peer_end = False

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.wrapped = stream
        self.on_peer_end = None
        self._prefix = bytearray()
        self._ended: BaseException | None = None  # EndOfStream or the error a read raised
        self._pause_reading()

    def _pause_reading(self) -> None:
        transport = getattr(self.wrapped, "_transport", None)
        pause = getattr(transport, "pause_reading", None)
        if pause is not None:
            try:
                pause()
            except (RuntimeError, AttributeError, OSError):  # closing, or not pausable
                pass

    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        if self._prefix:
            data = bytes(self._prefix[:max_bytes])
            del self._prefix[:max_bytes]
            return data
        if self._ended is not None:
            raise self._ended
        if timeout is None:
            return await self.wrapped.receive(max_bytes)
        with anyio.fail_after(timeout):
            return await self.wrapped.receive(max_bytes)

    async def wait_readable(self, timeout: float | None = None) -> None:
        if self._prefix or self._ended is not None:
            return
        try:
            data = await self.receive(timeout=timeout)
        except TimeoutError:
            raise
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError, ssl.SSLError) as exc:
            self._ended = exc
            return
        self._prefix += data

    def unread(self, data: bytes | bytearray) -> None:
        self._prefix[:0] = data

    @property
    def buffered(self) -> int:
        return len(self._prefix)

    def buffered_tail(self, length: int) -> bytes:
        return bytes(self._prefix[-length:])

    @property
    def quiet(self) -> bool:
        """Open and idle: nothing unread here, and (a syscall) nothing waiting in the socket:
        between responses an origin has nothing to say, so bytes or an EOF mean it closed."""
        if self._prefix or self._ended is not None:
            return False
        return self._peek() == "idle"

    @property
    def raw_socket(self) -> socket.socket | None:
        return self.wrapped.extra(anyio.abc.SocketAttribute.raw_socket, None)

    def peer_reset(self) -> bool:
        """Whether the socket reports a reset (or another error) right now (a syscall)."""
        return self._peek() == "error"

    def _peek(self) -> str:
        """What the socket holds, without taking it: "idle" (nothing), "data" (bytes or the
        end of the stream) or "error"; "idle" when there is no socket to ask."""
        raw = self.raw_socket
        if raw is None:
            return "idle"
        if raw.fileno() < 0:
            return "error"
        sock = socket.socket(fileno=raw.fileno())
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return "idle"
        except OSError:
            return "error"
        finally:
            sock.detach()  # the fd still belongs to the event loop's transport
        return "data"

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        await self.wrapped.send(bytes(item) if not isinstance(item, bytes) else item)

    async def send_eof(self) -> None:
        await self.wrapped.send_eof()

    async def aclose(self) -> None:
        await self.wrapped.aclose()

    def abort(self) -> None:
        raw = self.raw_socket
        if raw is not None and raw.fileno() >= 0:
            try:
                raw.shutdown(socket.SHUT_RDWR)  # a receive in progress sees the end
            except OSError:
                pass

    async def start_tls(self, context: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None,
                        session: ssl.SSLSession | None = None) -> None:
        prefix, self._prefix = bytes(self._prefix), bytearray()
        inner = _Prefixed(prefix, self.wrapped) if prefix else self.wrapped
        self.wrapped = await TLSStream.wrap(inner, server_side=server_side,
                                            hostname=server_hostname, ssl_context=context,
                                            standard_compatible=False)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.wrapped.extra(TLSAttribute.ssl_object, None)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.wrapped.extra_attributes


class _Prefixed(anyio.abc.ByteStream):
    """An anyio stream that first returns bytes already read from it (for TLSStream.wrap)."""

    def __init__(self, prefix: bytes, stream: anyio.abc.ByteStream) -> None:
        self._prefix = prefix
        self._stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._stream.extra_attributes


async def close_quietly(stream: anyio.abc.AsyncResource) -> None:
    """Close, even inside a cancelled scope, and ignore what a broken peer makes it raise."""
    with anyio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except STREAM_ERRORS:
            pass


#: A lingering close's bounds (see :func:`linger`).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


async def linger(stream: EngineStream) -> None:
    """The end of a lingering close, after the last answer was sent: end this side, then read
    and drop what the client still sends, for up to :data:`LINGER_SECONDS` or
    :data:`LINGER_BYTES`. A socket closed with unread bytes in it makes the kernel reset the
    connection, and the client may lose the answer (an error page, a GOAWAY) it had not read
    yet."""
    try:
        await stream.send_eof()
    except (*STREAM_ERRORS, NotImplementedError):
        pass
    with anyio.move_on_after(LINGER_SECONDS):
        received = 0
        try:
            while received < LINGER_BYTES:
                received += len(await stream.receive())
        except STREAM_ERRORS:
            pass


async def relay(a: EngineStream, b: EngineStream) -> tuple[int, int]:
    """Copy bytes both ways until both directions have ended; half-closes are passed on.
    Returns the bytes copied from ``a`` to ``b`` and from ``b`` to ``a``."""
    copied = [0, 0]

    async def copy(source: EngineStream, sink: EngineStream, way: int) -> None:
        try:
            while True:
                data = await source.receive(256 * 1024)
                await sink.send(data)
                copied[way] += len(data)
        except STREAM_ERRORS:
            pass
        try:
            await sink.send_eof()
        except (*STREAM_ERRORS, NotImplementedError):
            tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(copy, a, b, 0)
            tg.start_soon(copy, b, a, 1)
    finally:
        await close_quietly(a)
        await close_quietly(b)
    return copied[0], copied[1]
