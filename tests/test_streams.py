"""Tests for the engine's streams: TransportStream on real loopback sockets (plain asyncio and
uvloop), TLS through trustme certificates, back-pressure, closing, happy eyeballs, unread (on
TransportStream and on AnyioStream).

Every socket is on 127.0.0.1 (the happy-eyeballs tests also use ::1); nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from anyio import aclose_forcefully
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from nectoproxy.proxy import sockets, transport
from nectoproxy.proxy.sockets import _interleave, connect, connect_socket
from nectoproxy.proxy.streams import AnyioStream
from nectoproxy.proxy.transport import READ_HIGH, TransportStream

pytestmark = pytest.mark.anyio

LOCALHOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB
#: What a stream may hold unread: READ_HIGH plus what one socket read can add past it.
BUFFER_BOUND = READ_HIGH + 512 * KiB
#: A generous bound on every single wait in this module (the suite's own timeout is 120 s).
STEP = 15


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


# -- helpers -------------------------------------------------------------------------------------


class Loopback:
    """A TransportStream server on 127.0.0.1; every stream made through it is torn down at exit."""

    def __init__(self, port: int, accepted: asyncio.Queue[TransportStream]) -> None:
        self.port = port
        self._accepted = accepted
        self.streams: list[TransportStream] = []

    def track(self, stream: TransportStream) -> TransportStream:
        self.streams.append(stream)
        return stream

    async def accept(self) -> TransportStream:
        with anyio.fail_after(STEP):
            return self.track(await self._accepted.get())

    async def connect(self) -> TransportStream:
        with anyio.fail_after(STEP):
            return self.track(await connect(LOCALHOST, self.port))

    async def pair(self) -> tuple[TransportStream, TransportStream]:
        """(a client stream, the server side of the same connection)."""
        client = await self.connect()
        return client, await self.accept()


@asynccontextmanager
async def raw_peer() -> AsyncIterator[tuple[TransportStream, socket.socket]]:
    """A TransportStream connected to a plain blocking socket on the other end."""
    listener = socket.socket()
    raw: socket.socket | None = None
    client: TransportStream | None = None
    try:
        listener.bind((LOCALHOST, 0))
        listener.listen()
        listener.settimeout(STEP)
        with anyio.fail_after(STEP):
            client = await connect(LOCALHOST, listener.getsockname()[1])
        raw, _ = listener.accept()  # already connected: does not block
        yield client, raw
    finally:
        if client is not None:
            await _tear_down([client])
        if raw is not None:
            raw.close()
        listener.close()


async def _tear_down(stream_list: list[TransportStream]) -> None:
    for stream in stream_list:
        if not stream._closed:
            stream.abort()
    # Let every transport finish (a gracefully closed one may still be flushing to its peer).
    with anyio.move_on_after(STEP):
        while not all(s._lost for s in stream_list if s._transport is not None):
            await anyio.sleep(0.01)
    for stream in stream_list:
        if stream._transport is not None and not stream._lost:
            stream._transport.abort()
    await anyio.sleep(0.01)


@asynccontextmanager
async def loopback() -> AsyncIterator[Loopback]:
    sock = socket.socket()
    try:
        sock.bind((LOCALHOST, 0))
        sock.listen()
        accepted: asyncio.Queue[TransportStream] = asyncio.Queue()
        server = await TransportStream.serve(sock, accepted.put_nowait)
    except BaseException:
        sock.close()
        raise
    box = Loopback(sock.getsockname()[1], accepted)
    try:
        yield box
    finally:
        server.close()
        while not accepted.empty():
            box.track(accepted.get_nowait())
        await _tear_down(box.streams)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def send_randomly(stream: anyio.abc.ByteSendStream, data: bytes, seed: int,
                        largest: int = 200 * KiB) -> None:
    """Send ``data`` in pieces of random sizes, alternating bytes and memoryview items."""
    rng = random.Random(seed)
    view = memoryview(data)
    position = count = 0
    while position < len(data):
        size = rng.randint(1, largest)
        piece = view[position:position + size]
        await stream.send(piece if count % 2 else bytes(piece))
        position += len(piece)
        count += 1


async def receive_randomly(stream: anyio.abc.ByteReceiveStream, seed: int,
                           expected: int | None = None) -> tuple[int, str]:
    """Receive until end of stream (or ``expected`` bytes): (byte count, sha256 hex).

    Every receive asks for a random max_bytes and must never get more than that.
    """
    rng = random.Random(seed)
    digest = hashlib.sha256()
    total = 0
    while expected is None or total < expected:
        max_bytes = rng.choice([1, 3, 100, 4096, 65536, 65536, 200000, 1 << 20])
        try:
            chunk = await stream.receive(max_bytes)
        except anyio.EndOfStream:
            break
        assert 0 < len(chunk) <= max_bytes, (len(chunk), max_bytes)
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


async def receive_exactly(stream: anyio.abc.ByteReceiveStream, size: int) -> bytes:
    data = b""
    with anyio.fail_after(STEP):
        while len(data) < size:
            data += await stream.receive(size - len(data))
    return data


async def receive_until_eof(stream: anyio.abc.ByteReceiveStream, limit: int = 64 * MiB) -> bytes:
    data = bytearray()
    with anyio.fail_after(STEP):
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                return bytes(data)
            assert len(data) <= limit


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    """Poll ``predicate`` (bounded in time) until it holds."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
    assert predicate(), f"timed out waiting for {what}"


async def in_parallel(*calls: Callable[[], Awaitable[Any]], timeout: float = STEP * 4) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(run, index)
    return results


def bound_refused_port(family: int = socket.AF_INET, host: str = LOCALHOST) -> socket.socket:
    """A socket bound to a port but not listening: connecting to it is refused."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def hard_close(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- TLS fixtures ----------------------------------------------------------------------------------

SERVER_NAMES = ("127.0.0.1", "localhost", "example.test")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(*SERVER_NAMES)


@pytest.fixture(scope="module")
def server_context(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def make_client_context(ca: trustme.CA, *, alpn: list[str] | None = None,
                        version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    return make_client_context(ca)


async def peek_and_start_server_tls(server: TransportStream, context: ssl.SSLContext) -> None:
    """Peek at the ClientHello in two pieces, push both back, then run the handshake on them."""
    head = await receive_exactly(server, 5)
    assert head[0] == 0x16 and head[1] == 3, head  # a TLS handshake record
    rest = await server.receive(100)
    server.unread(rest)
    server.unread(head)
    await server.start_tls(context, server_side=True)


async def tls_pair(box: Loopback, client_context: ssl.SSLContext, server_context: ssl.SSLContext,
                   hostname: str = "example.test") -> tuple[TransportStream, TransportStream]:
    client, server = await box.pair()
    await in_parallel(
        lambda: client.start_tls(client_context, server_side=False, server_hostname=hostname),
        lambda: peek_and_start_server_tls(server, server_context),
        timeout=STEP)
    return client, server


# -- plain streams ---------------------------------------------------------------------------------


async def test_both_ends_send_without_nagle() -> None:
    """TCP_NODELAY on accepted and connected sockets (asyncio does not set it on accepted ones):
    a small write must not wait for the peer's delayed ACK."""
    async with loopback() as box:
        client, server = await box.pair()
        for stream in (client, server):
            raw = stream.extra(SocketAttribute.raw_socket)
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_echo_random_sizes() -> None:
    data = payload(6 * MiB + 12345, seed=1)
    async with loopback() as box:
        client, server = await box.pair()

        async def echo() -> None:
            rng = random.Random(2)
            while True:
                max_bytes = rng.choice([1, 1000, 65536, 300000])
                try:
                    chunk = await server.receive(max_bytes)
                except anyio.EndOfStream:
                    break
                assert 0 < len(chunk) <= max_bytes
                await server.send(chunk)
            await server.aclose()

        async def send() -> None:
            await send_randomly(client, data, seed=3)
            await client.send_eof()

        _, _, (count, digest) = await in_parallel(
            echo, send, lambda: receive_randomly(client, seed=4))
        assert count == len(data)
        assert digest == sha(data)
        assert client._size == 0 and server._size == 0
        with pytest.raises(anyio.EndOfStream):  # the end stays the end
            await client.receive()


async def test_receive_respects_max_bytes_across_queued_chunks() -> None:
    async with loopback() as box:
        _client, server = await box.pair()
        for piece in (b"abc", b"defgh", b"ij"):
            server.unread(piece)  # queued as separate chunks, in front: ij, defgh, abc
        assert server._size == 10
        assert await server.receive(1) == b"i"
        assert await server.receive(6) == b"jdefgh"  # joins whole chunks that fit
        assert await server.receive(2) == b"ab"
        assert await server.receive(100) == b"c"
        assert server._size == 0


async def test_unread_bytes_come_back_first() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        await client.send(b"hello world")
        assert await receive_exactly(server, 11) == b"hello world"
        server.unread(b"world")
        server.unread(b"hello ")
        assert await server.receive(3) == b"hel"
        assert await server.receive() == b"lo world"
        # Pushed back in front of bytes that already arrived from the socket, too.
        await client.send(b"ABC")
        with anyio.fail_after(STEP):
            await server.wait_readable()
        server.unread(b"xyz")
        server.unread(b"")  # nothing: no empty chunk
        assert await receive_exactly(server, 6) == b"xyzABC"
        assert server._size == 0


async def test_wait_readable_returns_on_data_and_on_end() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        with anyio.move_on_after(0.2) as scope:
            await server.wait_readable()
        assert scope.cancelled_caught  # nothing there yet
        await client.send(b"x")
        with anyio.fail_after(STEP):
            await server.wait_readable()
        assert await server.receive() == b"x"
        await client.send_eof()
        with anyio.fail_after(STEP):
            await server.wait_readable()
        with pytest.raises(anyio.EndOfStream):
            await server.receive()


async def test_receive_timeout() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        with anyio.fail_after(STEP):
            with pytest.raises(TimeoutError):
                await server.receive(timeout=0.05)
        assert server._waiter is None
        # The stream goes on working after a time-out, with or without one.
        await client.send(b"late")
        with anyio.fail_after(STEP):
            assert await server.receive(timeout=STEP) == b"late"
        await client.send(b"later")
        assert await receive_exactly(server, 5) == b"later"
        await client.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await server.receive(timeout=STEP)


async def test_send_eof_half_close() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        await client.send(b"request")
        await client.send_eof()
        assert await receive_until_eof(server) == b"request"
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        # The other direction still works.
        reply = payload(3 * MiB, seed=5)
        await in_parallel(lambda: send_randomly(server, reply, seed=6),
                          lambda: receive_exactly(client, len(reply)))
        await server.send(b"last words")
        await server.aclose()
        assert await receive_until_eof(client) == b"last words"
        with pytest.raises(anyio.EndOfStream):
            await client.receive()


async def test_plain_extra_attributes() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        client_address = client.extra(SocketAttribute.local_address)
        assert client.extra(SocketAttribute.remote_address) == (LOCALHOST, box.port)
        assert server.extra(SocketAttribute.local_address) == (LOCALHOST, box.port)
        assert server.extra(SocketAttribute.remote_address) == client_address
        assert client_address[0] == LOCALHOST and client_address[1] != box.port
        raw = client.extra(SocketAttribute.raw_socket)
        assert raw.family == socket.AF_INET
        assert client.ssl_object is None
        with pytest.raises(anyio.TypedAttributeLookupError):
            client.extra(TLSAttribute.ssl_object)


# -- back-pressure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_back_pressure_bounds_the_read_buffer(tls: bool, client_context: ssl.SSLContext,
                                                    server_context: ssl.SSLContext) -> None:
    data = payload(16 * MiB, seed=7)
    chunk = 64 * KiB
    async with loopback() as box:
        if tls:
            sender, receiver = await tls_pair(box, client_context, server_context)
        else:
            sender, receiver = await box.pair()
        sent = 0
        done = anyio.Event()

        async def push() -> None:
            nonlocal sent
            view = memoryview(data)
            for start in range(0, len(data), chunk):
                await sender.send(view[start:start + chunk])
                sent = start + chunk
            done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(push)
            # The receiver reads nothing: its buffer fills to READ_HIGH, then the socket
            # buffers, then the sender's transport buffer, and then the sender's send waits.
            await wait_for(lambda: receiver._reading_paused, "the receiver to stop reading")
            stalled_at = -1
            with anyio.fail_after(STEP * 2):
                while stalled_at != sent:
                    stalled_at = sent
                    with anyio.move_on_after(1.0):
                        await done.wait()
                    assert not done.is_set(), "16 MiB went out though nobody read them"
                    assert receiver._size <= BUFFER_BOUND, receiver._size
            assert 0 < sent < len(data)
            assert sender._writing_paused
            assert receiver._size <= BUFFER_BOUND

            # Now drain: every byte arrives, in order, and the buffer stays bounded throughout.
            digest = hashlib.sha256()
            total = 0
            with anyio.fail_after(STEP * 3):
                while total < len(data):
                    piece = await receiver.receive(100_000)
                    assert len(piece) <= 100_000
                    assert receiver._size <= BUFFER_BOUND, receiver._size
                    digest.update(piece)
                    total += len(piece)
            with anyio.fail_after(STEP):
                await done.wait()
        assert total == len(data)
        assert digest.hexdigest() == sha(data)
        assert receiver._size == 0
        assert not receiver._reading_paused


# -- TLS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
async def test_tls_transfer_both_ways(version: ssl.TLSVersion, ca: trustme.CA,
                                      server_context: ssl.SSLContext) -> None:
    up = payload(5 * MiB + 77, seed=8)
    down = payload(4 * MiB + 1, seed=9)
    context = make_client_context(ca, version=version)
    async with loopback() as box:
        client, server = await tls_pair(box, context, server_context)
        assert client.extra(TLSAttribute.tls_version) == \
            ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")

        async def serve() -> tuple[int, str]:
            async with anyio.create_task_group() as group:
                group.start_soon(send_randomly, server, down, 10)
                result = await receive_randomly(server, seed=11, expected=len(up))
            await server.aclose()  # after its sends: close_notify follows the data
            return result

        async def talk() -> tuple[int, str]:
            async with anyio.create_task_group() as group:
                group.start_soon(send_randomly, client, up, 12)
                result = await receive_randomly(client, seed=13)  # up to close_notify
            return result

        received_up, received_down = await in_parallel(serve, talk)
        assert received_up == (len(up), sha(up))
        assert received_down == (len(down), sha(down))
        with pytest.raises(anyio.EndOfStream):
            await client.receive()


@pytest.mark.parametrize("hostname", SERVER_NAMES)
async def test_tls_server_hostnames(hostname: str, client_context: ssl.SSLContext,
                                    server_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        client, server = await tls_pair(box, client_context, server_context, hostname)
        # Application data sent right after the handshake, both ways.
        await client.send(b"ping")
        assert await receive_exactly(server, 4) == b"ping"
        await server.send(b"pong")
        assert await receive_exactly(client, 4) == b"pong"


async def test_tls_attributes(ca: trustme.CA, server_cert: trustme.LeafCert,
                              server_context: ssl.SSLContext) -> None:
    context = make_client_context(ca, alpn=["http/1.1"])
    async with loopback() as box:
        client, server = await tls_pair(box, context, server_context)
        for stream, server_side in ((client, False), (server, True)):
            sslobj = stream.extra(TLSAttribute.ssl_object)
            assert isinstance(sslobj, ssl.SSLObject)
            assert sslobj is stream.ssl_object
            assert stream.extra(TLSAttribute.server_side) is server_side
            assert stream.extra(TLSAttribute.tls_version) == sslobj.version()
            assert stream.extra(TLSAttribute.tls_version) in ("TLSv1.2", "TLSv1.3")
            cipher = stream.extra(TLSAttribute.cipher)
            assert isinstance(cipher, tuple) and cipher == sslobj.cipher()
            assert stream.extra(TLSAttribute.alpn_protocol) == "http/1.1"
            assert stream.extra(SocketAttribute.remote_address)[0] == LOCALHOST
        assert client.extra(TLSAttribute.cipher)[0] == server.extra(TLSAttribute.cipher)[0]
        leaf_der = ssl.PEM_cert_to_DER_cert(server_cert.cert_chain_pems[0].bytes().decode())
        assert client.extra(TLSAttribute.peer_certificate_binary) == leaf_der
        assert server.extra(TLSAttribute.peer_certificate_binary) is None  # no client cert
        with pytest.raises(NotImplementedError):
            await client.send_eof()
        with pytest.raises(RuntimeError):
            await client.start_tls(context, server_side=False, server_hostname="example.test")


async def test_tls_without_alpn(client_context: ssl.SSLContext,
                                server_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        client, server = await tls_pair(box, client_context, server_context)
        assert client.extra(TLSAttribute.alpn_protocol) is None
        assert server.extra(TLSAttribute.alpn_protocol) is None


async def test_tls_close_notify_after_all_data(client_context: ssl.SSLContext,
                                               server_context: ssl.SSLContext) -> None:
    data = payload(3 * MiB, seed=14)
    async with loopback() as box:
        client, server = await tls_pair(box, client_context, server_context)
        # Send everything and close at once: the close_notify goes after the last unsent bytes.
        async def send_and_close() -> None:
            await send_randomly(client, data, seed=18)
            await client.aclose()

        async def read() -> bytes:
            return await receive_until_eof(server)

        _, received = await in_parallel(send_and_close, read)
        assert len(received) == len(data)
        assert received == data
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        # aclose() sent a real close_notify, not just the TCP FIN: OpenSSL saw the TLS shutdown
        # (after a bare FIN a read would raise SSLWantReadError instead of returning b"").
        assert server.ssl_object is not None
        assert server.ssl_object.read(1) == b""
        # The closed side refuses further use.
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"x")


async def test_tls_interoperates_with_anyio_tls_stream(client_context: ssl.SSLContext,
                                                       server_context: ssl.SSLContext) -> None:
    """anyio's TLSStream (standard_compatible: a ragged EOF would be BrokenResourceError) as the
    client: data both ways, and each side's close_notify is seen by the other."""
    up = payload(2 * MiB + 3, seed=19)
    down = payload(3 * MiB + 5, seed=20)
    async with loopback() as box:
        with anyio.fail_after(STEP * 2):
            tcp = await anyio.connect_tcp(LOCALHOST, box.port)
            server = await box.accept()

            async def client_side() -> tuple[int, str]:
                tls = await TLSStream.wrap(tcp, hostname="localhost", ssl_context=client_context)
                async with tls:
                    async with anyio.create_task_group() as group:
                        group.start_soon(send_randomly, tls, up, 21)
                        result = await receive_randomly(tls, seed=22)  # EndOfStream: notify
                    return result  # aclose: sends close_notify, waits for the server's

            async def server_side() -> tuple[int, str]:
                got = bytearray()
                await peek_and_start_server_tls(server, server_context)
                async with anyio.create_task_group() as group:
                    group.start_soon(send_randomly, server, down, 24)
                    got += await receive_exactly(server, len(up))
                await server.aclose()  # our close_notify: the client's receive ends cleanly
                return len(got), sha(bytes(got))

            (received_down, received_up) = await in_parallel(client_side, server_side)
        assert received_down == (len(down), sha(down))
        assert received_up == (len(up), sha(up))


async def test_tls_peer_close_notify_ends_the_stream(client_context: ssl.SSLContext,
                                                     server_context: ssl.SSLContext) -> None:
    """A peer that sends close_notify and keeps TCP open until it gets ours (a bidirectional
    TLS shutdown, as anyio's TLSStream.unwrap() does it): our receive must end."""
    async with loopback() as box:
        with anyio.fail_after(STEP):
            tcp = await anyio.connect_tcp(LOCALHOST, box.port)
            server = await box.accept()
        outcome: list[str] = []

        async def client_side() -> None:
            tls = await TLSStream.wrap(tcp, hostname="localhost", ssl_context=client_context)
            await tls.send(b"bye")
            with anyio.move_on_after(5):
                plain, _ = await tls.unwrap()  # sends close_notify, waits for the server's
                outcome.append("unwrapped")
                await plain.aclose()
                return
            await aclose_forcefully(tls)

        async def server_side() -> None:
            await peek_and_start_server_tls(server, server_context)
            assert await receive_exactly(server, 3) == b"bye"
            with anyio.move_on_after(5):
                try:
                    await server.receive()
                except anyio.EndOfStream:
                    outcome.append("end of stream")
            await server.aclose()

        try:
            await in_parallel(client_side, server_side)
        finally:
            await tcp.aclose()
        assert "end of stream" in outcome, "close_notify received, but receive() kept waiting"
        assert "unwrapped" in outcome


async def raw_tls(sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                  first_data: bytes) -> ssl.SSLObject:
    """Handshake on a plain non-blocking socket through an SSLObject of our own, then send the
    last handshake flight and ``first_data`` in one single write."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_side=server_side,
                              server_hostname=None if server_side else "example.test")
    with anyio.fail_after(STEP):
        for _ in range(100):
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    await loop.sock_sendall(sock, outgoing.read())
                received = await loop.sock_recv(sock, 65536)
                assert received, "the peer closed during the handshake"
                incoming.write(received)
        else:
            pytest.fail("no end to the handshake")
        sslobj.write(first_data)
        await loop.sock_sendall(sock, outgoing.read())
    return sslobj


async def test_tls_server_gets_data_with_the_clients_finished(
        ca: trustme.CA, server_context: ssl.SSLContext) -> None:
    # TLS 1.3: the client's Finished ends the server's handshake; data right behind it in the
    # same segment must be decrypted by start_tls' last step, not wait for more bytes.
    context = make_client_context(ca, version=ssl.TLSVersion.TLSv1_3)
    async with loopback() as box:
        raw = socket.create_connection((LOCALHOST, box.port), timeout=STEP)
        try:
            raw.setblocking(False)
            server = await box.accept()
            await in_parallel(
                lambda: raw_tls(raw, context, server_side=False, first_data=b"right behind"),
                lambda: peek_and_start_server_tls(server, server_context))
            assert await receive_exactly(server, 12) == b"right behind"
        finally:
            raw.close()


async def test_tls_client_gets_data_with_the_servers_finished(
        server_cert: trustme.LeafCert, client_context: ssl.SSLContext) -> None:
    # TLS 1.2: the server's Finished ends the client's handshake (same as above, other side).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with raw_peer() as (client, raw):
        raw.setblocking(False)
        stream = client
        await in_parallel(
            lambda: raw_tls(raw, context, server_side=True, first_data=b"hello client"),
            lambda: stream.start_tls(client_context, server_side=False,
                                     server_hostname="example.test"))
        assert client.extra(TLSAttribute.tls_version) == "TLSv1.2"
        assert await receive_exactly(client, 12) == b"hello client"


# -- TLS failures ----------------------------------------------------------------------------------

SERVER_SIDE_FAILURE = (ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError)


async def test_tls_client_trusting_another_ca(server_context: ssl.SSLContext) -> None:
    context = make_client_context(trustme.CA())
    async with loopback() as box:
        client, server = await box.pair()

        async def client_side() -> None:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await client.start_tls(context, server_side=False, server_hostname="example.test")
            assert "certificate verify failed" in str(caught.value)

        async def server_side() -> None:
            with pytest.raises(SERVER_SIDE_FAILURE):
                await peek_and_start_server_tls(server, server_context)

        await in_parallel(client_side, server_side)


async def test_tls_hostname_mismatch(client_context: ssl.SSLContext,
                                     server_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        client, server = await box.pair()

        async def client_side() -> None:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await client.start_tls(client_context, server_side=False,
                                       server_hostname="other.test")
            assert "other.test" in str(caught.value)

        async def server_side() -> None:
            with pytest.raises(SERVER_SIDE_FAILURE):
                await peek_and_start_server_tls(server, server_context)

        await in_parallel(client_side, server_side)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_tls_server_goes_away_mid_handshake(how: str, client_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        client, server = await box.pair()

        async def server_side() -> None:
            hello = await server.receive()
            assert hello[0] == 0x16
            if how == "reset":
                server.extra(SocketAttribute.raw_socket).setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                server.abort()
            else:
                await server.aclose()

        async def client_side() -> None:
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.start_tls(client_context, server_side=False,
                                       server_hostname="example.test")

        await in_parallel(server_side, client_side)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_tls_client_goes_away_mid_handshake(how: str,
                                                  server_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        raw = socket.create_connection((LOCALHOST, box.port), timeout=STEP)
        try:
            server = await box.accept()
            # The start of a ClientHello record, and then nothing.
            raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20))
            head = await receive_exactly(server, 5)
            server.unread(head)
            if how == "reset":
                hard_close(raw)
            else:
                raw.shutdown(socket.SHUT_WR)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                with anyio.fail_after(STEP):
                    await server.start_tls(server_context, server_side=True)
        finally:
            raw.close()


async def test_tls_server_gets_plain_http(server_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        raw = socket.create_connection((LOCALHOST, box.port), timeout=STEP)
        try:
            server = await box.accept()
            raw.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
            head = await server.receive()
            server.unread(head)
            with pytest.raises(ssl.SSLError):
                with anyio.fail_after(STEP):
                    await server.start_tls(server_context, server_side=True)
        finally:
            raw.close()


async def test_tls_client_gets_plain_http(client_context: ssl.SSLContext) -> None:
    async with loopback() as box:
        client, server = await box.pair()

        async def server_side() -> None:
            hello = await server.receive()
            assert hello[0] == 0x16
            await server.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        async def client_side() -> None:
            with pytest.raises(ssl.SSLError):
                await client.start_tls(client_context, server_side=False,
                                       server_hostname="example.test")

        await in_parallel(server_side, client_side)


# -- closing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_aclose_flushes_a_large_write_buffer(tls: bool, client_context: ssl.SSLContext,
                                                   server_context: ssl.SSLContext) -> None:
    data = payload(16 * MiB, seed=15)
    async with loopback() as box:
        if tls:
            sender, receiver = await tls_pair(box, client_context, server_context)
        else:
            sender, receiver = await box.pair()
        assert sender._transport is not None
        outcome: list[BaseException] = []

        async def send() -> None:
            try:
                await sender.send(data)
            except anyio.ClosedResourceError as exc:  # closed while waiting for the drain
                outcome.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await wait_for(lambda: sender._transport.get_write_buffer_size() > 4 * MiB,
                           "the transport's write buffer to fill")
            await sender.aclose()
        assert len(outcome) == 1
        assert sender._transport.get_write_buffer_size() > 1 * MiB  # still to go out

        # A slow reader: small reads with pauses, bounded in count.
        received = bytearray()
        with anyio.fail_after(STEP * 2):
            for _ in range(len(data) + 1):  # each read returns at least one byte
                try:
                    received += await receiver.receive(128 * KiB)
                except anyio.EndOfStream:
                    break
                await anyio.sleep(0.001)
            else:
                pytest.fail("no end of stream after all the data")
        assert len(received) == len(data)
        assert sha(bytes(received)) == sha(data)


async def test_aclose_flush_timer_does_not_fire_on_a_finished_close(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """aclose() with unsent bytes schedules transport.abort() for CLOSE_FLUSH_TIMEOUT later;
    once the flush has finished and the transport is gone, that must not blow up in the loop."""
    monkeypatch.setattr(transport, "CLOSE_FLUSH_TIMEOUT", 1.0)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        data = payload(8 * MiB, seed=16)
        async with loopback() as box:
            sender, receiver = await box.pair()
            with anyio.move_on_after(0.2):
                await sender.send(data)
            assert sender._transport is not None
            assert sender._transport.get_write_buffer_size() > 0
            await sender.aclose()
            assert await receive_until_eof(receiver) == data  # the flush is complete
            await wait_for(lambda: sender._lost, "the closed transport to go")
            await anyio.sleep(1.5)  # past the (patched) flush timeout
            assert errors == [], [(c.get("message"), c.get("exception")) for c in errors]
    finally:
        loop.set_exception_handler(previous)


async def test_abort_after_a_flushed_aclose() -> None:
    data = payload(8 * MiB, seed=17)
    async with loopback() as box:
        sender, receiver = await box.pair()
        with anyio.move_on_after(0.2):
            await sender.send(data)
        assert sender._transport is not None
        assert sender._transport.get_write_buffer_size() > 0
        await sender.aclose()
        assert await receive_until_eof(receiver) == data
        await wait_for(lambda: sender._lost, "the closed transport to go")
        sender.abort()  # closing what is closed is a no-op
        with pytest.raises(anyio.ClosedResourceError):
            await sender.send(b"x")


async def test_closed_stream_raises_closed_resource_error() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        await client.aclose()
        await client.aclose()  # twice is fine
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"x")
        assert await receive_until_eof(server) == b""
        server.abort()
        with pytest.raises(anyio.ClosedResourceError):
            await server.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await server.send(b"y")


async def test_aclose_wakes_a_waiting_receiver() -> None:
    async with loopback() as box:
        _client, server = await box.pair()
        failures: list[BaseException] = []

        async def wait_receive() -> None:
            try:
                await server.receive()
            except anyio.ClosedResourceError as exc:
                failures.append(exc)

        with anyio.fail_after(STEP):
            async with anyio.create_task_group() as group:
                group.start_soon(wait_receive)
                await anyio.sleep(0.05)
                await server.aclose()
        assert len(failures) == 1


async def test_peer_reset_breaks_send_and_receive() -> None:
    async with raw_peer() as (client, raw):
        raw.sendall(b"before")
        assert await receive_exactly(client, 6) == b"before"
        hard_close(raw)
        broken = False
        with anyio.fail_after(STEP):
            for _ in range(500):
                try:
                    await client.send(b"x" * 4096)
                except anyio.BrokenResourceError:
                    broken = True
                    break
                await anyio.sleep(0.01)
        assert broken, "send never noticed the reset"
        with pytest.raises(anyio.BrokenResourceError):
            await client.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await client.send(b"again")


# -- connecting ------------------------------------------------------------------------------------


async def test_connect_socket_refused() -> None:
    closed = bound_refused_port()
    try:
        port = closed.getsockname()[1]
        with pytest.raises(OSError) as caught:
            with anyio.fail_after(STEP):
                await connect_socket(LOCALHOST, port)
        group = caught.value.__cause__
        assert isinstance(group, ExceptionGroup)
        assert group.subgroup(ConnectionRefusedError) is not None
        assert f"{LOCALHOST}:{port}" in str(caught.value)
        with pytest.raises(OSError):
            with anyio.fail_after(STEP):
                await connect(LOCALHOST, port)
    finally:
        closed.close()


async def test_connect_socket_literal_needs_no_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_resolver(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an address literal must not be resolved")

    monkeypatch.setattr(sockets.anyio, "getaddrinfo", no_resolver)
    async with loopback() as box:
        with anyio.fail_after(STEP):
            sock = await connect_socket(LOCALHOST, box.port)
        try:
            assert sock.getpeername() == (LOCALHOST, box.port)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert not sock.getblocking()
        finally:
            sock.close()
        await box.accept()


def fake_resolver(monkeypatch: pytest.MonkeyPatch,
                  entries: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        calls.append((host, port, kwargs))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
                for family, address in entries]

    monkeypatch.setattr(sockets.anyio, "getaddrinfo", getaddrinfo)
    return calls


async def test_happy_eyeballs_falls_back_past_a_refused_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A refused attempt starts the next one at once (the delay would exceed the time limit).
    monkeypatch.setattr(sockets, "HAPPY_EYEBALLS_DELAY", STEP * 4)
    closed6 = bound_refused_port(socket.AF_INET6, "::1")
    try:
        async with loopback() as box:
            calls = fake_resolver(monkeypatch, [
                (socket.AF_INET6, ("::1", closed6.getsockname()[1], 0, 0)),
                (socket.AF_INET, (LOCALHOST, box.port)),
            ])
            with anyio.fail_after(STEP):
                sock = await connect_socket("dual.test", 4443)
            try:
                assert sock.family == socket.AF_INET
                assert sock.getpeername() == (LOCALHOST, box.port)
            finally:
                sock.close()
            assert [call[:2] for call in calls] == [("dual.test", 4443)]
            await box.accept()
    finally:
        closed6.close()


async def test_happy_eyeballs_all_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    closed6 = bound_refused_port(socket.AF_INET6, "::1")
    closed4 = bound_refused_port()
    try:
        fake_resolver(monkeypatch, [
            (socket.AF_INET6, ("::1", closed6.getsockname()[1], 0, 0)),
            (socket.AF_INET, (LOCALHOST, closed4.getsockname()[1])),
        ])
        with pytest.raises(OSError) as caught:
            with anyio.fail_after(STEP):
                await connect_socket("dual.test", 4443)
        group = caught.value.__cause__
        assert isinstance(group, ExceptionGroup)
        assert len(group.exceptions) == 2
        assert all(isinstance(e, ConnectionRefusedError) for e in group.exceptions)
    finally:
        closed6.close()
        closed4.close()


async def test_happy_eyeballs_no_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, [])
    with pytest.raises(OSError) as caught:
        with anyio.fail_after(STEP):
            await connect_socket("nowhere.test", 80)
    assert isinstance(caught.value.__cause__, ExceptionGroup)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: a connect to it hangs (SYNs are dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((LOCALHOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect((LOCALHOST, port))
            except TimeoutError:
                break
        else:
            pytest.fail("could not fill the listen backlog: no way to make a connect hang")
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def test_happy_eyeballs_races_past_a_hanging_address(
        monkeypatch: pytest.MonkeyPatch, unanswered_port: int) -> None:
    async with loopback() as box:
        fake_resolver(monkeypatch, [
            (socket.AF_INET, (LOCALHOST, unanswered_port)),
            (socket.AF_INET, (LOCALHOST, box.port)),
        ])
        with anyio.fail_after(STEP):
            sock = await connect_socket("slow.test", 80)
        try:
            assert sock.getpeername() == (LOCALHOST, box.port)
        finally:
            sock.close()
        await box.accept()


def test_interleave_alternates_families() -> None:
    v6a = (socket.AF_INET6, ("2001:db8::1", 443, 0, 0))
    v6b = (socket.AF_INET6, ("2001:db8::2", 443, 0, 0))
    v4a = (socket.AF_INET, ("192.0.2.1", 443))
    v4b = (socket.AF_INET, ("192.0.2.2", 443))
    assert _interleave([v6a, v6b, v4a]) == [v6a, v4a, v6b]
    assert _interleave([v4a, v6a, v6b, v4b]) == [v4a, v6a, v4b, v6b]
    assert _interleave([v6a, v6a, v4a, v6a, v4a, v6b]) == [v6a, v4a, v6b]  # duplicates go
    assert _interleave([v4a, v4b]) == [v4a, v4b]
    assert _interleave([]) == []


def test_interleave_takes_lists_as_addresses() -> None:
    # Resolvers may hand out addresses as lists: they are compared (and returned) as tuples.
    v4 = (socket.AF_INET, ("192.0.2.1", 80))
    assert _interleave([(socket.AF_INET, ["192.0.2.1", 80]), v4]) == [v4]


# -- unread --------------------------------------------------------------------------------------


async def test_unread_on_a_transport_stream() -> None:
    async with loopback() as box:
        client, server = await box.pair()
        await client.send(b"def")
        server.unread(b"abc")
        server.unread(b"")
        assert await receive_exactly(server, 6) == b"abcdef"


async def test_unread_on_an_anyio_stream() -> None:
    async with loopback() as box:
        with anyio.fail_after(STEP):
            async with AnyioStream(await anyio.connect_tcp(LOCALHOST, box.port)) as plain:
                server = await box.accept()
                plain.unread(b"")
                plain.unread(bytearray(b"prefix"))
                await server.send(b"-then-the-socket")
                assert await plain.receive(2) == b"pr"
                assert await plain.receive() == b"efix"
                assert await receive_exactly(plain, 16) == b"-then-the-socket"
                await plain.send(b"back")
                assert await receive_exactly(server, 4) == b"back"
                assert plain.extra(SocketAttribute.remote_address) == (LOCALHOST, box.port)
