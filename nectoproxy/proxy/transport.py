"""TransportStream: an :class:`~nectoproxy.proxy.streams.EngineStream` that is its own
asyncio protocol, on the event loop's transports (asyncio's or uvloop's).

A proxy does little but move bytes, and on anyio's asyncio backend every read that has to wait
resumes and pauses the socket (two ``epoll_ctl`` calls), and ``TLSStream`` runs OpenSSL one
record per await through several layers. Here:

* the stream reads ahead up to :data:`READ_HIGH` bytes and pauses the socket only then, so a
  peer that sends faster than the other side takes still meets back-pressure, but a
  request/response cycle costs no extra system calls;
* TLS runs through an :class:`ssl.SSLObject` inside ``data_received``: everything the socket
  delivered is decrypted in one go into one buffer, and a send encrypts all its records at once;
* bytes already read (the peeked ClientHello, what followed a CONNECT answer) can be pushed
  back with :meth:`TransportStream.unread`, and :meth:`TransportStream.start_tls` takes them as
  the start of the handshake;
* a peer's reset or end is reported (:attr:`on_peer_end`) the moment the loop sees it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute

from nectoproxy.proxy.streams import EngineStream

#: Stop reading the socket once this many received bytes wait unread; resume below READ_LOW.
READ_HIGH = 256 * 1024
READ_LOW = 64 * 1024
#: The transport's write buffer: a send waits while more than WRITE_HIGH bytes are unsent.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
#: How long a closed stream may go on flushing its unsent bytes before it is aborted.
CLOSE_FLUSH_TIMEOUT = 10.0
#: One TLS record carries at most this much plaintext.
_TLS_RECORD = 16384

class TransportStream(EngineStream, asyncio.Protocol):
    """An anyio byte stream that is its own asyncio protocol (see the module docstring)."""

    __slots__ = (
        "_close_timer",
        "_closed",
        "_drain",
        "_eof",
        "_error",
        "_handshaking",
        "_incoming",
        "_loop",
        "_lost",
        "_on_connect",
        "_outgoing",
        "_pending",
        "_reading_paused",
        "_size",
        "_ssl",
        "_transport",
        "_waiter",
        "_writing_paused",
        "on_peer_end",
    )

    def __init__(self, on_connect: Callable[[TransportStream], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes | bytearray] = []
        self._size = 0
        self._waiter: asyncio.Future[Any] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._on_connect = on_connect
        self._ssl: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._handshaking = False
        self._close_timer: asyncio.TimerHandle | None = None
        #: Called (from the event loop) when the peer ends the connection while we still use
        #: it: ``reset=True`` for a reset or any other error, False for an orderly end (a FIN,
        #: a TLS close_notify), after which bytes already received can still be read.
        self.on_peer_end: Callable[[bool], None] | None = None

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> TransportStream:
        """A stream on a connected socket (see :func:`nectoproxy.proxy.sockets.connect`)."""
        stream = cls()
        try:
            await stream._loop.create_connection(lambda: stream, sock=sock)
        except BaseException:
            sock.close()
            raise
        return stream

    @classmethod
    async def serve(cls, sock: socket.socket,
                    on_connect: Callable[[TransportStream], None]) -> asyncio.AbstractServer:
        """Accept on a listening socket; ``on_connect`` gets each new connection's stream."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: cls(on_connect), sock=sock,
                                        backlog=socket.SOMAXCONN)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        # No Nagle: a small write (a response head, a chunk) must not wait for an ACK.
        # uvloop sets this on every TCP socket, asyncio not on accepted ones.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # already closed by the peer: nothing will be sent anyway
        on_connect, self._on_connect = self._on_connect, None
        if on_connect is not None:
            on_connect(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()
        self._wake_writer()
        if not self._closed:
            self._peer_ended(reset=True)

    def _peer_ended(self, reset: bool) -> None:
        callback = self.on_peer_end
        if callback is not None:
            if reset:
                self.on_peer_end = None  # (a reset is final; an orderly end may be followed by one)
            callback(reset)

    def data_received(self, data: bytes) -> None:
        if self._ssl is None:
            self._push(data)
            return
        assert self._incoming is not None
        self._incoming.write(data)
        if self._handshaking:
            self._handshake_step()
        else:
            self._decrypt()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        self._peer_ended(reset=False)
        return True  # keep our sending side open (a half-close is the peer's alone)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # -- receiving ---------------------------------------------------------------------------

    def _push(self, data: bytes | bytearray) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size > READ_HIGH and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def _wait(self, timeout: float | None = None) -> None:
        """Wait for data_received & co; TimeoutError after ``timeout`` seconds.

        A timer of the loop's own costs less than half of an anyio cancel scope with a
        deadline, and a proxy waits with a timeout on almost every read.
        """
        waiter = self._waiter = self._loop.create_future()
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if waiter.result() is _TIMED_OUT:
            raise TimeoutError

    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes``; TimeoutError if nothing arrives within ``timeout`` seconds."""
        while not self._pending:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            if self._eof:
                raise anyio.EndOfStream
            await self._wait(timeout)
        pending = self._pending
        chunk = pending[0]
        if len(chunk) > max_bytes:
            pending[0] = chunk[max_bytes:]
            chunk = chunk[:max_bytes]
        elif len(pending) == 1:
            pending.clear()
        else:
            taken = len(chunk)
            count = 1
            while count < len(pending) and taken + len(pending[count]) <= max_bytes:
                taken += len(pending[count])
                count += 1
            chunk = b"".join(pending[:count]) if count > 1 else chunk
            del pending[:count]
        self._size -= len(chunk)
        if self._reading_paused and self._size <= READ_LOW and self._transport is not None \
                and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk  # type: ignore[return-value]  # bytes-like; callers copy or pass it on

    async def wait_readable(self, timeout: float | None = None) -> None:
        """Return once there is something to receive (bytes, end of stream or an error);
        TimeoutError if nothing came within ``timeout`` seconds."""
        while not self._pending and not self._eof and self._error is None and not self._closed:
            await self._wait(timeout)

    @property
    def buffered(self) -> int:
        """How many received bytes wait unread."""
        return self._size

    def buffered_tail(self, length: int) -> bytes:
        """The last ``length`` (or fewer) received bytes that wait unread."""
        tail = b""
        for chunk in reversed(self._pending):
            tail = bytes(chunk[-(length - len(tail)):]) + tail
            if len(tail) >= length:
                break
        return tail

    @property
    def quiet(self) -> bool:
        """Open, and nothing received: no bytes, no end of stream, no error (an idle
        connection the peer has not given up on)."""
        return not (self._pending or self._eof or self._lost or self._closed
                    or self._error is not None)

    def unread(self, data: bytes | bytearray) -> None:
        """Put bytes back in front of what :meth:`receive` returns next."""
        if data:
            self._pending.insert(0, data)
            self._size += len(data)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, item: bytes | bytearray | memoryview) -> None:
        transport = self._transport
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost or transport is None or transport.is_closing():
            raise anyio.BrokenResourceError from self._error
        if self._ssl is not None:
            if not item:
                return
            try:
                self._ssl.write(item)
            except ssl.SSLError as exc:
                raise anyio.BrokenResourceError from exc
            assert self._outgoing is not None
            item = self._outgoing.read()
        transport.write(item)
        while self._writing_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
            if self._closed:
                raise anyio.ClosedResourceError
            if self._lost:
                raise anyio.BrokenResourceError from self._error

    async def send_eof(self) -> None:
        if self._ssl is not None:
            raise NotImplementedError("TLS does not support half-closing")
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                pass

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._ssl is not None and not self._handshaking and not self._lost:
                self._send_close_notify()
            if transport.get_write_buffer_size():
                # Let the last bytes go out, but not forever to a peer that stopped reading.
                self._close_timer = self._loop.call_later(CLOSE_FLUSH_TIMEOUT, self._abort)
            transport.close()
        self._wake()
        self._wake_writer()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes."""
        self._closed = True
        self._abort()
        self._wake()
        self._wake_writer()

    def _abort(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.abort()  # (a transport that finished closing must not be touched)

    # -- TLS ---------------------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None,
                        session: ssl.SSLSession | None = None) -> None:
        """See :meth:`EngineStream.start_tls`; driven by ``data_received`` (a cancelled
        handshake leaves the stream fit only for closing)."""
        if self._ssl is not None:
            raise RuntimeError("TLS already started on this stream")
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname, session=session)
        self._handshaking = True
        pending, self._pending, self._size = self._pending, [], 0
        for chunk in pending:
            self._incoming.write(chunk)
        if self._reading_paused and self._transport is not None and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()
        self._handshake_step()
        while self._handshaking:
            if self._error is not None:
                error = self._error
                if isinstance(error, ssl.SSLError):
                    raise error
                raise anyio.BrokenResourceError from error
            if self._eof or self._closed:
                raise anyio.EndOfStream
            await self._wait()
        if self._error is not None and not self._pending:
            raise anyio.BrokenResourceError from self._error

    def _handshake_step(self) -> None:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return
        except ssl.SSLError as exc:
            self._flush_tls()  # the alert that tells the peer why
            self._error = exc
            self._wake()
            return
        self._handshaking = False
        self._flush_tls()
        self._decrypt()  # application data that came with the end of the handshake
        self._wake()

    def _decrypt(self) -> None:
        """Decrypt every whole record received so far into one buffer, and queue it."""
        sslobj, incoming = self._ssl, self._incoming
        assert sslobj is not None and incoming is not None
        ended_before = self._eof or self._error is not None
        # Plaintext is never longer than its records; part of one may sit inside OpenSSL.
        buffer = bytearray(incoming.pending + _TLS_RECORD)
        filled = 0
        while True:
            if len(buffer) - filled < _TLS_RECORD:
                buffer += bytes(_TLS_RECORD)
            try:
                count = cast(int, sslobj.read(_TLS_RECORD, memoryview(buffer)[filled:]))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: a clean end of stream
                self._eof = True
                break
            except ssl.SSLError as exc:
                self._error = exc
                break
            if not count:
                self._eof = True  # close_notify (read() returns 0 for it)
                break
            filled += count
        ended = not ended_before and (self._eof or self._error is not None)
        if self._outgoing is not None and self._outgoing.pending:
            self._flush_tls()  # e.g. the answer to a TLS 1.3 KeyUpdate
        if filled:
            del buffer[filled:]
            self._push(buffer)
        elif self._eof or self._error is not None:
            self._wake()
        if ended and not self._closed:
            self._peer_ended(reset=self._error is not None)

    def _flush_tls(self) -> None:
        outgoing = self._outgoing
        transport = self._transport
        if outgoing is not None and outgoing.pending and transport is not None \
                and not transport.is_closing():
            transport.write(outgoing.read())

    def _send_close_notify(self) -> None:
        assert self._ssl is not None
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: ours is sent, the peer's is not awaited
        self._flush_tls()

    # -- attributes --------------------------------------------------------------------------

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self._ssl

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        transport = self._transport
        if transport is None:
            return {}

        def remote() -> Any:
            peer = transport.get_extra_info("peername")
            return tuple(peer[:2]) if isinstance(peer, tuple) else peer

        def local() -> Any:
            name = transport.get_extra_info("sockname")
            return tuple(name[:2]) if isinstance(name, tuple) else name

        attributes: dict[Any, Callable[[], Any]] = {
            anyio.abc.SocketAttribute.raw_socket: lambda: transport.get_extra_info("socket"),
            anyio.abc.SocketAttribute.remote_address: remote,
            anyio.abc.SocketAttribute.local_address: local,
        }
        if self._ssl is not None:
            sslobj = self._ssl
            attributes[TLSAttribute.ssl_object] = lambda: sslobj
            attributes[TLSAttribute.server_side] = lambda: sslobj.server_side
            attributes[TLSAttribute.peer_certificate_binary] = lambda: sslobj.getpeercert(True)
            attributes[TLSAttribute.alpn_protocol] = sslobj.selected_alpn_protocol
            attributes[TLSAttribute.cipher] = sslobj.cipher
            attributes[TLSAttribute.tls_version] = sslobj.version
        return attributes


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


