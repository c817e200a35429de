"""The proxy's three I/O set-ups, each through the paths where the stream layer matters.

* ``asyncio``: asyncio's own event loop with NectoProxy's native streams
  (:class:`nectoproxy.proxy.transport.TransportStream`), the default elsewhere in the tests;
* ``uvloop``: the same native streams on uvloop (what the ``nectoproxy`` command runs);
* ``anyio-streams``: anyio's SocketStream / TLSStream behind
  :class:`nectoproxy.proxy.streams.AnyioStream`, the fallback on non-asyncio backends, forced
  with ``Proxy(anyio_streams=True)``.

Every test runs once per mode, against real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.abc
import pytest
from anyio.streams.tls import TLSStream
from wire import UPGRADE_REQUEST, read_head, recv_exactly, upgrade_echo

from nectoproxy.proxy.streams import AnyioStream
from nectoproxy.proxy.transport import TransportStream
from nectoproxy.testing import RunningProxy
from nectoproxy.testing.origin import RawServer, free_port, pattern_sha256

KIB = 1024
MIB = 1024 * KIB
TIMEOUT = 30.0  # per socket operation


@pytest.fixture(autouse=True)
def no_tracebacks(request: pytest.FixtureRequest,
                  caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The proxy logged no unexpected exception (``log.exception``) during the test."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed != failed_before:
        return  # the test itself failed (its log is in its report): do not report it twice
    failures = [r for r in caplog.get_records("call") if r.exc_info]
    assert not failures, "\n".join(caplog.text.splitlines()[-60:])


# -- helpers ---------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def head_fields(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)}


def read_response(sock: socket.socket, initial: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, bytes read past the body) of one Content-Length framed response."""
    head, rest = read_head(sock, initial)
    length = int(head_fields(head)["content-length"])
    data = recv_exactly(sock, length, rest[:length]) if len(rest) < length else rest
    return head, data[:length], data[length:]


def read_to_eof(sock: socket.socket, limit: int = 16 * MIB) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
        assert len(data) <= limit
    return bytes(data)


def connect(port: int, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connecting, so that the TCP window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def tunnel(proxy: RunningProxy, target: str, rcvbuf: int = 0) -> socket.socket:
    """A raw socket on which ``CONNECT target`` was answered 200."""
    sock = connect(proxy.port, rcvbuf)
    try:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert rest == b""
    except BaseException:
        sock.close()
        raise
    return sock


def intercepted(proxy: RunningProxy, target: str, rcvbuf: int = 0) -> ssl.SSLSocket:
    """A TLS socket through ``CONNECT target``, terminated by the proxy (trusting its CA)."""
    sock = tunnel(proxy, target, rcvbuf)
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    try:
        return context.wrap_socket(sock, server_hostname="localhost")
    except BaseException:
        sock.close()
        raise


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def idle_connections(proxy: RunningProxy) -> bool:
    return proxy.proxy._active == 0


class BioTLS:
    """A TLS client driven by hand over a socket (ssl.SSLObject), so that its first flight
    can go out in the same write as the CONNECT request before it."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, hostname: str) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)

    def client_hello(self) -> bytes:
        with pytest.raises(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def finish_handshake(self, received: bytes) -> None:
        self.incoming.write(received)
        for _ in range(1000):
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                assert self._fill(), "EOF during the TLS handshake"
        else:
            raise AssertionError("TLS handshake does not end")
        self._flush()

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.obj.write(view[: 256 * KIB])
            view = view[written:]
            self._flush()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def peer_certificate(self) -> Any:
        return self.obj.getpeercert()


def connect_and_hello(proxy: RunningProxy, target: str, context: ssl.SSLContext
                      ) -> tuple[socket.socket, BioTLS]:
    """CONNECT and the TLS ClientHello in one write (the client does not wait for the 200)."""
    sock = connect(proxy.port)
    try:
        tls = BioTLS(sock, context, "localhost")
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
                     + tls.client_hello())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        tls.finish_handshake(rest)
    except BaseException:
        sock.close()
        raise
    return sock, tls


class ConnectionIds:
    """Records the client connection id of every request (one id: one kept-alive connection)."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def on_request_headers(self, flow: Any) -> None:
        self.ids.append(flow.connection.id)


# -- the mode is really in effect ------------------------------------------------------------


def test_mode_is_in_effect(start_proxy, mode, origin):
    with start_proxy() as proxy:
        loop = proxy.portal.call(asyncio.get_running_loop)
        assert type(loop).__module__.startswith("uvloop") == (mode == "uvloop")
        with proxy.client() as client:
            assert client.get(origin.url + "/").text == "hello from origin\n"
            sessions = proxy.portal.call(lambda: list(proxy.proxy.services.sessions))
            assert len(sessions) == 1  # the kept-alive client connection
            client_stream = sessions[0].client.stream
            upstreams = [sessions[0].origin.upstream] if sessions[0].origin.upstream else [
                upstream for entries in proxy.proxy.services.pool._idle.values()
                for _, upstream in entries]  # (an idle client's origin connection is pooled)
            assert len(upstreams) == 1
            upstream_stream = upstreams[0].stream
    native = mode != "anyio-streams"
    assert isinstance(client_stream, TransportStream) == native
    assert isinstance(upstream_stream, TransportStream) == native
    assert isinstance(client_stream, AnyioStream) != native
    assert isinstance(upstream_stream, AnyioStream) != native
    assert isinstance(client_stream, anyio.abc.ByteStream)


def test_mode_is_in_effect_for_tls(start_proxy, mode, tls_origin):
    with start_proxy() as proxy, intercepted(proxy, f"localhost:{tls_origin.port}") as tls:
        tls.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        _, data, _ = read_response(tls)
        assert data == b'{"hello": "world", "n": 1}'
        sessions = proxy.portal.call(lambda: list(proxy.proxy.services.sessions))
        inner = [session for session in sessions if session.scheme == "https"]
        assert len(inner) == 1
        client_stream = inner[0].client.stream
        upstreams = [inner[0].origin.upstream] if inner[0].origin.upstream else [
            upstream for entries in proxy.proxy.services.pool._idle.values()
            for _, upstream in entries]
        assert len(upstreams) == 1
        upstream_stream = upstreams[0].stream
    if mode == "anyio-streams":
        assert isinstance(client_stream, AnyioStream)
        assert isinstance(client_stream.wrapped, TLSStream)
        assert isinstance(upstream_stream, AnyioStream)
        assert isinstance(upstream_stream.wrapped, TLSStream)
    else:
        assert isinstance(client_stream, TransportStream) and client_stream.ssl_object
        assert isinstance(upstream_stream, TransportStream) and upstream_stream.ssl_object


# -- 1. plain HTTP ---------------------------------------------------------------------------


def test_plain_get_and_big_post_echo(start_proxy, origin):
    body = os.urandom(3 * MIB)
    with start_proxy() as proxy, proxy.client() as client:
        got = client.get(origin.url + "/json")
        assert got.status_code == 200 and got.json() == {"hello": "world", "n": 1}
        assert got.headers["x-origin"] == "nectoproxy-test"
        echoed = client.post(origin.url + "/echo?big=1", content=body)
        assert echoed.status_code == 200
        data = echoed.json()
        assert (data["method"], data["body_length"]) == ("POST", len(body))
        assert data["body_sha256"] == sha(body)
        down = client.get(f"{origin.url}/bytes/{3 * MIB + 11}")
        assert sha(down.content) == pattern_sha256(3 * MIB + 11)


def test_plain_keep_alive_reuses_one_client_connection(start_proxy, origin):
    ids = ConnectionIds()
    bodies = [os.urandom(size) for size in (0, 10, 70 * KIB, 300 * KIB, 1)]
    with start_proxy(plugins=[ids]) as proxy, connect(proxy.port) as sock:
        for number, body in enumerate(bodies):
            sock.sendall(f"POST {origin.url}/upload HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}"
                         f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            head, data, extra = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200"), (number, head)
            assert json.loads(data) == {"sha256": sha(body), "length": len(body)}
            assert extra == b""
            sock.sendall(f"GET {origin.url}/bytes/{1000 + number} HTTP/1.1\r\n"
                         f"Host: 127.0.0.1:{origin.port}\r\n\r\n".encode())
            head, data, extra = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and extra == b""
            assert sha(data) == pattern_sha256(1000 + number)
    assert len(ids.ids) == 2 * len(bodies)
    assert len(set(ids.ids)) == 1


def test_plain_pipelined_requests_answered_in_order(start_proxy, origin):
    """Several requests in one write: the bytes past the first request wait their turn."""
    ids = ConnectionIds()
    sizes = [5, 100 * KIB, 7, 1 * MIB + 3]
    requests = b"".join(f"GET {origin.url}/bytes/{n}?seed={i} HTTP/1.1\r\nHost: x\r\n\r\n"
                        .encode() for i, n in enumerate(sizes))
    with start_proxy(plugins=[ids]) as proxy, connect(proxy.port) as sock:
        sock.sendall(requests)
        extra = b""
        for i, n in enumerate(sizes):
            head, data, extra = read_response(sock, extra)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert sha(data) == pattern_sha256(n, seed=i), i
        assert extra == b""
    assert len(ids.ids) == len(sizes) and len(set(ids.ids)) == 1


def test_plain_request_then_half_close_is_answered(start_proxy, origin):
    size = 300 * KIB + 1
    with start_proxy() as proxy, connect(proxy.port) as sock:
        sock.sendall(f"GET {origin.url}/bytes/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_eof(sock)
    head, _, data = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:300]
    assert sha(data) == pattern_sha256(size)


def test_pooled_origin_connection_reset_while_idle(start_proxy):
    """The origin resets a kept-alive connection while it sits in the pool: the next client's
    request must go out on a new connection, not fail."""
    served: list[int] = []

    def answer_then_reset(sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive
        served.append(1)
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with RawServer(answer_then_reset) as server, start_proxy() as proxy:
        for number in range(3):  # one client after the other, each on a new connection
            with connect(proxy.port) as sock:
                sock.sendall(f"GET http://127.0.0.1:{server.port}/ HTTP/1.1\r\nHost: x\r\n"
                             "Connection: close\r\n\r\n".encode())
                reply = read_to_eof(sock)
            assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok"), (number, reply)
            time.sleep(1.3)  # past the pool's trust-without-checking second
    assert len(served) == 3


# -- 2. HTTPS, intercepted -------------------------------------------------------------------


def test_https_intercepted_get_upload_download(start_proxy, tls_origin):
    base = f"https://localhost:{tls_origin.port}"
    body = os.urandom(3 * MIB)
    size = 3 * MIB + 5
    with start_proxy() as proxy, proxy.client() as client:
        got = client.get(base + "/json")
        assert got.status_code == 200 and got.json() == {"hello": "world", "n": 1}
        upload = client.post(base + "/upload", content=body)
        assert upload.json() == {"sha256": sha(body), "length": len(body)}
        chunked = client.put(base + "/upload",
                             content=iter([body[:MIB + 1], body[MIB + 1:]]))
        assert chunked.json() == {"sha256": sha(body), "length": len(body)}
        down = client.get(f"{base}/bytes/{size}")
        assert sha(down.content) == pattern_sha256(size)
        down_chunked = client.get(f"{base}/bytes/{size}?chunked=1&seed=2")
        assert sha(down_chunked.content) == pattern_sha256(size, seed=2)
    recorded = [r for r in tls_origin.requests if r.path == "/upload"]
    assert [r.tls for r in recorded] == [True, True]
    assert recorded[1].header("transfer-encoding") == "chunked"


def test_https_keep_alive_on_one_tls_connection(start_proxy, tls_origin):
    ids = ConnectionIds()
    with start_proxy(plugins=[ids]) as proxy, \
            intercepted(proxy, f"localhost:{tls_origin.port}") as tls:
        for i in range(4):
            body = os.urandom(200 * KIB * i)
            tls.sendall(f"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head, data, extra = read_response(tls)
            assert head.startswith(b"HTTP/1.1 200") and extra == b""
            assert json.loads(data) == {"sha256": sha(body), "length": len(body)}
    assert len(ids.ids) == 4 and len(set(ids.ids)) == 1


def test_https_pipelined_requests_in_one_tls_write(start_proxy, tls_origin):
    sizes = [3, 200 * KIB, 1 * MIB + 1, 9]
    requests = b"".join(f"GET /bytes/{n}?seed={i} HTTP/1.1\r\nHost: localhost\r\n\r\n"
                        .encode() for i, n in enumerate(sizes))
    with start_proxy() as proxy, \
            intercepted(proxy, f"localhost:{tls_origin.port}") as tls:
        tls.sendall(requests)
        extra = b""
        for i, n in enumerate(sizes):
            head, data, extra = read_response(tls, extra)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert sha(data) == pattern_sha256(n, seed=i), i
        assert extra == b""


def test_https_client_hello_in_the_connect_write(start_proxy, tls_origin):
    """CONNECT head, then at once the ClientHello: the bytes after the head are the start of
    the handshake. Then a request and its body in the same record flight as well."""
    body = os.urandom(MIB)
    with start_proxy() as proxy:
        context = ssl.create_default_context(cafile=str(proxy.ca_path))
        sock, tls = connect_and_hello(proxy, f"localhost:{tls_origin.port}", context)
        with sock:
            assert tls.peer_certificate()["subjectAltName"][0] == ("DNS", "localhost")
            tls.sendall(f"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                        f"{len(body)}\r\n\r\n".encode() + body)
            head, data, extra = read_response(tls)
            assert head.startswith(b"HTTP/1.1 200") and extra == b""
            assert json.loads(data) == {"sha256": sha(body), "length": len(body)}


def test_https_big_upload_to_slow_reading_origin(start_proxy, origin_ca):
    size = 8 * MIB + 3
    body = os.urandom(size)
    seen: list[tuple[int, str]] = []

    def slow_reader(sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        head, rest = read_head(sock)
        length = int(head_fields(head)["content-length"])
        digest = hashlib.sha256()
        got = read_slowly(sock, rest, digest, limit=length)
        seen.append((got, digest.hexdigest()))
        answer = json.dumps({"length": got, "sha256": digest.hexdigest()}).encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(answer), answer))

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("localhost").configure_cert(server_context)
    with RawServer(slow_reader, ssl_context=server_context) as server, \
            start_proxy() as proxy, proxy.client() as client:
        response = client.post(f"https://localhost:{server.port}/upload", content=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"length": size, "sha256": sha(body)}
        assert server.errors == []
    assert seen == [(size, sha(body))]


def test_https_with_curl(start_proxy, tls_origin, tmp_path):
    size = 2 * MIB + 1
    upload = tmp_path / "upload.bin"
    body = os.urandom(3 * MIB)
    upload.write_bytes(body)
    with start_proxy() as proxy:
        down = proxy.curl(f"https://localhost:{tls_origin.port}/bytes/{size}")
        up = proxy.curl("--data-binary", f"@{upload}",
                        f"https://localhost:{tls_origin.port}/upload")
    assert down.returncode == 0, down.stderr
    assert sha(down.stdout) == pattern_sha256(size)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == {"sha256": sha(body), "length": len(body)}


# -- 3. a download bigger than the read-ahead, to a slow reader ------------------------------


def read_slowly(sock: socket.socket, first: bytes, digest: Any, limit: int | None = None) -> int:
    """Read to EOF (or ``limit`` bytes in all) in 8 KiB pieces with a short pause every 4,
    bounded to 90 s; hash all of it (``first`` included) into ``digest``; return the count."""
    digest.update(first)
    length = len(first)
    deadline = time.monotonic() + 90
    reads = 0
    while (limit is None or length < limit) and time.monotonic() < deadline:
        chunk = sock.recv(8 * KIB if limit is None else min(8 * KIB, limit - length))
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
        reads += 1
        if reads % 4 == 0:
            time.sleep(0.002)
    return length


def test_https_big_download_to_slow_reader(start_proxy, tls_origin):
    size = 8 * MIB + 13  # well above the 256 KiB read-ahead and write buffer
    digest, length = hashlib.sha256(), 0
    with start_proxy() as proxy, \
            intercepted(proxy, f"localhost:{tls_origin.port}", rcvbuf=32 * KIB) as tls:
        tls.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: localhost\r\n"
                    "Connection: close\r\n\r\n".encode())
        head, rest = read_head(tls)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert int(head_fields(head)["content-length"]) == size
        length = read_slowly(tls, rest, digest)
        assert length == size, f"{length} of {size} bytes"
    assert digest.hexdigest() == pattern_sha256(size)


def test_plain_big_download_to_slow_reader(start_proxy, origin):
    size = 8 * MIB + 13
    digest = hashlib.sha256()
    with start_proxy() as proxy, connect(proxy.port, rcvbuf=32 * KIB) as sock:
        sock.sendall(f"GET {origin.url}/bytes/{size} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = read_slowly(sock, rest, digest)
        assert length == size, f"{length} of {size} bytes"
    assert digest.hexdigest() == pattern_sha256(size)


# -- 4. CONNECT pass-through -----------------------------------------------------------------


def test_connect_passthrough_keeps_origin_certificate(start_proxy, tls_origin, origin_ca_path):
    size = 2 * MIB + 9
    config = {"proxy": {"passthrough": ["localhost"]}}
    with start_proxy(config=config) as proxy:
        sock = tunnel(proxy, f"localhost:{tls_origin.port}")
        # Trusts only the origins' CA: the proxy's leaf would fail verification.
        context = ssl.create_default_context(cafile=origin_ca_path)
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head, data, extra = read_response(tls)
            assert head.startswith(b"HTTP/1.1 200") and extra == b""
            assert data == b'{"hello": "world", "n": 1}'
            body = os.urandom(MIB + 3)
            tls.sendall(f"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                        f"{len(body)}\r\n\r\n".encode() + body)
            head, data, extra = read_response(tls)
            assert json.loads(data) == {"sha256": sha(body), "length": len(body)}
            tls.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n".encode())
            head, data, extra = read_response(tls)
            assert sha(data) == pattern_sha256(size)
        # The proxy's own CA does not verify what the client saw: it was not intercepted.
        sock = tunnel(proxy, f"localhost:{tls_origin.port}")
        proxy_only = ssl.create_default_context(cafile=str(proxy.ca_path))
        with pytest.raises(ssl.SSLCertVerificationError):
            proxy_only.wrap_socket(sock, server_hostname="localhost")
        sock.close()
        assert wait_until(lambda: idle_connections(proxy))
    assert [r.path for r in tls_origin.requests] == ["/json", "/upload", f"/bytes/{size}"]


def test_connect_passthrough_with_client_hello_in_the_connect_write(start_proxy, tls_origin,
                                                                   origin_ca_path):
    context = ssl.create_default_context(cafile=origin_ca_path)
    with start_proxy(config={"proxy": {"passthrough": ["localhost"]}}) as proxy:
        sock, tls = connect_and_hello(proxy, f"localhost:{tls_origin.port}", context)
        with sock:
            tls.sendall(b"GET /bytes/300000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head, data, extra = read_response(tls)
            assert head.startswith(b"HTTP/1.1 200") and extra == b""
            assert sha(data) == pattern_sha256(300000)
    assert [r.tls for r in tls_origin.requests] == [True]


def test_plain_http_in_the_connect_write(start_proxy, origin):
    """CONNECT to a plain-HTTP origin with the first request in the same write."""
    with start_proxy() as proxy, connect(proxy.port) as sock:
        target = f"127.0.0.1:{origin.port}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
                     f"GET /json HTTP/1.1\r\nHost: {target}\r\n\r\n"
                     f"GET /bytes/70000 HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        head, data, extra = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and data == b'{"hello": "world", "n": 1}'
        head, data, extra = read_response(sock, extra)
        assert sha(data) == pattern_sha256(70000) and extra == b""


def test_opaque_tunnel_passes_half_close(start_proxy):
    """Bytes that are neither TLS nor HTTP are relayed as they are, and so is a half-close."""
    received: list[bytes] = []

    def reverser(sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        data = read_to_eof(sock)  # until the client's half-close arrives through the proxy
        received.append(data)
        sock.sendall(data[::-1])

    payload = b"\x00opaque" + os.urandom(600 * KIB)
    with RawServer(reverser) as server, start_proxy() as proxy:
        with tunnel(proxy, f"127.0.0.1:{server.port}") as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            answer = read_to_eof(sock)
        assert server.errors == []
    assert received == [payload]
    assert answer == payload[::-1]


# -- 5. Upgrade relay -------------------------------------------------------------------------


def exchange_upgraded(sock: socket.socket) -> None:
    """Messages both ways, then a big one streamed with up to 256 KiB in flight.

    One thread does both sending and receiving: an ssl.SSLSocket must not be used from two
    threads at once (that alone breaks connections, proxy or not)."""
    head, rest = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-accept: dummy" in head.lower()
    # "early" was sent with the request head: it reaches the origin after the switch.
    assert recv_exactly(sock, 10, rest) == b"helloEARLY"
    for message in (b"ping", b"frame two" * 1000):
        sock.sendall(message)
        assert recv_exactly(sock, len(message)) == message.upper()
    big = os.urandom(3 * MIB // 2).hex().encode()  # lower case: the echo upper-cases it
    sent, echoed = 0, bytearray()
    for _ in range(100_000):
        if len(echoed) == len(big):
            break
        if sent < len(big) and sent - len(echoed) < 256 * KIB:
            piece = big[sent : sent + 64 * KIB]
            sock.sendall(piece)
            sent += len(piece)
        else:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(echoed)} echoed bytes"
            echoed += chunk
    assert echoed == big.upper()


def test_websocket_upgrade_relay_plain(start_proxy):
    with RawServer(upgrade_echo) as server, start_proxy() as proxy:
        url = f"http://127.0.0.1:{server.port}/chat"
        with connect(proxy.port) as sock:
            request = UPGRADE_REQUEST.format(target=url, host=f"127.0.0.1:{server.port}")
            sock.sendall(request.encode() + b"early")
            exchange_upgraded(sock)
            sock.shutdown(socket.SHUT_WR)  # the half-close reaches the origin, which ends
            assert read_to_eof(sock) == b"BYE"
        assert wait_until(lambda: idle_connections(proxy))
        assert server.errors == []


def test_websocket_upgrade_relay_inside_intercepted_tls(start_proxy, origin_ca):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("localhost").configure_cert(server_context)
    with RawServer(upgrade_echo, ssl_context=server_context) as server, \
            start_proxy() as proxy:
        with intercepted(proxy, f"localhost:{server.port}") as tls:
            request = UPGRADE_REQUEST.format(target="/chat", host="localhost")
            tls.sendall(request.encode() + b"early")
            exchange_upgraded(tls)
        assert wait_until(lambda: idle_connections(proxy))
        assert server.errors == []


# -- 6. upstream proxy chaining --------------------------------------------------------------


class ConnectTargets:
    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []

    def on_connect(self, connection: Any) -> None:
        if connection.target is not None:
            self.targets.append(tuple(connection.target))


def test_upstream_proxy_chaining(start_proxy, origin, tls_origin):
    seen = ConnectTargets()
    body = os.urandom(2 * MIB)
    size = 3 * MIB + 1
    # B relays TLS to localhost untouched, so A's own TLS reaches the origin.
    with start_proxy(plugins=[seen], config={"proxy": {"passthrough": ["localhost"]}}) as b:
        config = {"proxy": {"upstream_proxy": f"http://127.0.0.1:{b.port}"}}
        with start_proxy(config=config) as a, a.client() as client:
            base = f"https://localhost:{tls_origin.port}"
            got = client.get(base + "/json")
            assert got.status_code == 200 and got.json() == {"hello": "world", "n": 1}
            upload = client.post(base + "/upload", content=body)
            assert upload.json() == {"sha256": sha(body), "length": len(body)}
            down = client.get(f"{base}/bytes/{size}")
            assert sha(down.content) == pattern_sha256(size)
            plain = client.get(origin.url + "/json")
            assert plain.json() == {"hello": "world", "n": 1}
            curl = a.curl(f"https://localhost:{tls_origin.port}/bytes/{MIB}")
            assert curl.returncode == 0, curl.stderr
            assert sha(curl.stdout) == pattern_sha256(MIB)
    assert ("localhost", tls_origin.port) in seen.targets
    assert all(r.tls for r in tls_origin.requests)
    assert [r.path for r in origin.requests] == ["/json"]


def test_upstream_proxy_answer_and_first_bytes_in_one_write(start_proxy):
    """The upstream proxy's 200 and the far end's first bytes arrive together: those bytes
    must reach the client, before the rest of the stream."""
    connects: list[bytes] = []

    def fake_upstream_proxy(sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        head, rest = read_head(sock)
        connects.append(head.split(b"\r\n", 1)[0])
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\nBANNER:")
        data = rest + read_to_eof(sock)
        sock.sendall(data[::-1])

    payload = b"\x00opaque" + os.urandom(300 * KIB)
    with RawServer(fake_upstream_proxy) as upstream:
        config = {"proxy": {"upstream_proxy": f"http://127.0.0.1:{upstream.port}"}}
        with start_proxy(config=config) as proxy, tunnel(proxy, "opaque.test:7") as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            answer = read_to_eof(sock)
        assert upstream.errors == []
    assert connects == [b"CONNECT opaque.test:7 HTTP/1.1"]
    assert answer == b"BANNER:" + payload[::-1]


# -- 7. errors -------------------------------------------------------------------------------


def test_unreachable_upstream_is_502_connection_refused(start_proxy, origin):
    port = free_port()  # closed: nothing listens there
    with start_proxy() as proxy:
        with proxy.client() as client:
            response = client.get(f"http://127.0.0.1:{port}/")
            assert response.status_code == 502
            assert "connection refused" in response.text, response.text
            assert str(port) in response.text
            assert client.get(origin.url + "/").status_code == 200  # still serving
        # The same inside an intercepted tunnel: the answer comes over the client's TLS.
        with intercepted(proxy, f"localhost:{port}") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head, data, _ = read_response(tls)
        assert head.startswith(b"HTTP/1.1 502"), head
        assert b"connection refused" in data, data


def test_client_outside_allow_list_gets_whole_403(start_proxy, origin):
    body = os.urandom(512 * KIB)  # still arriving when the proxy answers: lingering close
    config = {"proxy": {"allow_clients": ["10.0.0.0/8"]}}
    with start_proxy(config=config) as proxy:
        for request in (f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                        f"POST {origin.url}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        f"{len(body)}\r\n\r\n".encode() + body):
            with connect(proxy.port) as sock:
                sock.sendall(request)
                reply = read_to_eof(sock)  # a reset would raise ConnectionResetError here
            head, _, data = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 403"), reply[:300]
            assert int(head_fields(head)["content-length"]) == len(data)
            assert b"allow_clients" in data
    assert origin.requests == []


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_leaving_mid_upload_does_not_hurt_the_next(start_proxy, origin, how):
    size = 3 * MIB
    with start_proxy() as proxy:
        sock = connect(proxy.port)
        sock.sendall(f"POST {origin.url}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}"
                     "\r\n\r\n".encode() + os.urandom(MIB))
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        body = os.urandom(size)
        with proxy.client() as client:
            response = client.post(origin.url + "/upload", content=body)
            assert response.json() == {"sha256": sha(body), "length": size}
            assert client.get(origin.url + "/").text == "hello from origin\n"
        assert wait_until(lambda: idle_connections(proxy)), proxy.proxy._active
    assert [r.body_length for r in origin.requests if r.path == "/upload"] == [size]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_tls_client_leaving_mid_upload_does_not_hurt_the_next(start_proxy, tls_origin, how):
    size = 3 * MIB
    with start_proxy() as proxy:
        tls = intercepted(proxy, f"localhost:{tls_origin.port}")
        tls.sendall(f"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}"
                    "\r\n\r\n".encode() + os.urandom(MIB))
        raw = socket.socket(fileno=tls.detach())  # gone without a close_notify
        if how == "reset":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        body = os.urandom(size)
        with proxy.client() as client:
            response = client.post(f"https://localhost:{tls_origin.port}/upload", content=body)
            assert response.json() == {"sha256": sha(body), "length": size}
        assert wait_until(lambda: idle_connections(proxy)), proxy.proxy._active
    assert [r.body_length for r in tls_origin.requests if r.path == "/upload"] == [size]
