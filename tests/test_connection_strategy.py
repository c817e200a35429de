"""``proxy.connection_strategy``: an intercepted CONNECT connects to its origin at once
("eager", the default) or only when a request needs it ("lazy")."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nectoproxy.testing.origin import RawServer, free_port


class Counting:
    """What the TLS origin saw: connections closed, requests answered."""

    def __init__(self) -> None:
        self.closed = 0
        self.requests = 0
        self.lock = threading.Lock()

    def handler(self, conn: socket.socket) -> None:
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                _, _, data = data.partition(b"\r\n\r\n")
                with self.lock:
                    self.requests += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\norigin")
        finally:
            with self.lock:
                self.closed += 1


@pytest.fixture
def counting_origin(origin_ca: Any) -> Iterator[tuple[RawServer, Counting]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_ca.issue_cert("127.0.0.1", "strategy.test").configure_cert(context)
    counting = Counting()
    server = RawServer(counting.handler, ssl_context=context)
    server.start()
    try:
        yield server, counting
    finally:
        server.stop()


def connect_tunnel(proxy: Any, port: int) -> socket.socket:
    """A socket on which the proxy answered ``CONNECT 127.0.0.1:port`` with 200."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "proxy closed the connection after CONNECT"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
    except BaseException:
        sock.close()
        raise
    return sock


def tunnel(proxy: Any, port: int) -> ssl.SSLSocket:
    """CONNECT to 127.0.0.1:port through the proxy and finish TLS with it (SNI strategy.test)."""
    sock = connect_tunnel(proxy, port)
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    try:
        return context.wrap_socket(sock, server_hostname="strategy.test")
    except BaseException:
        sock.close()
        raise


def get(tls: ssl.SSLSocket) -> bytes:
    tls.sendall(b"GET / HTTP/1.1\r\nHost: strategy.test\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply or not _complete(reply):
        chunk = tls.recv(65536)
        assert chunk, f"connection closed mid-response: {reply!r}"
        reply += chunk
    return reply


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def wait_until(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_eager_connects_during_the_handshake_and_the_first_request_uses_it(
        make_proxy, counting_origin):
    server, counting = counting_origin
    with make_proxy() as proxy:
        assert proxy.config.proxy.connection_strategy == "eager"
        with tunnel(proxy, server.port) as tls:
            # No request sent yet: the origin already has its connection.
            assert wait_until(lambda: server.connections == 1)
            assert counting.requests == 0
            for _ in range(3):
                reply = get(tls)
                assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"origin")
    assert server.connections == 1  # the eager connection carried every request
    assert counting.requests == 3


def test_lazy_connects_only_for_a_request(make_proxy, counting_origin):
    server, _ = counting_origin
    with make_proxy(config={"proxy": {"connection_strategy": "lazy"}}) as proxy, \
            tunnel(proxy, server.port) as tls:
        time.sleep(0.3)  # an eager proxy would have connected by now (see the test above)
        assert server.connections == 0
        reply = get(tls)
        assert reply.endswith(b"origin")
        assert server.connections == 1


def test_eager_connection_is_closed_when_the_client_handshake_fails(make_proxy):
    """The origin here never answers the proxy's TLS handshake, so the eager connect is still
    running when the client gives up; it must be cancelled and its socket closed."""
    closed = threading.Event()

    def silent(conn: socket.socket) -> None:
        while conn.recv(65536):  # the proxy's ClientHello, then nothing until it closes
            pass
        closed.set()

    server = RawServer(silent)
    server.start()
    try:
        with make_proxy() as proxy, connect_tunnel(proxy, server.port) as sock:
            # The client's handshake, step by step: the eager connection is made while the
            # proxy waits for the client, then the client rejects the proxy's certificate.
            client = ssl.create_default_context().wrap_bio(  # does not trust our CA
                incoming := ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                server_hostname="strategy.test")
            with pytest.raises(ssl.SSLWantReadError):
                client.do_handshake()
            sock.sendall(outgoing.read())  # ClientHello
            assert wait_until(lambda: server.connections == 1)
            with pytest.raises(ssl.SSLCertVerificationError):
                for _ in range(100):
                    data = sock.recv(65536)
                    assert data, "proxy closed the connection mid-handshake"
                    incoming.write(data)
                    with contextlib.suppress(ssl.SSLWantReadError):
                        client.do_handshake()
            sock.sendall(outgoing.read())  # the alert
            assert closed.wait(10)  # not left open in the background
    finally:
        server.stop()


def test_eager_failure_is_reported_on_the_first_request(make_proxy):
    port = free_port()  # nothing listens there
    with make_proxy() as proxy, tunnel(proxy, port) as tls:
        reply = get(tls)
    assert reply.startswith(b"HTTP/1.1 502")
    assert b"connection refused" in reply


class SendElsewhere:
    """Sends every request to a plain-HTTP origin instead of the CONNECT target."""

    def __init__(self, port: int) -> None:
        self.port = port

    def on_request_headers(self, flow: Any) -> None:
        flow.request.scheme = "http"
        flow.request.host = "127.0.0.1"
        flow.request.port = self.port


def test_eager_connection_unused_when_a_plugin_redirects(make_proxy, counting_origin, origin):
    server, counting = counting_origin
    with make_proxy(plugins=[SendElsewhere(origin.port)]) as proxy, \
            tunnel(proxy, server.port) as tls:
        reply = get(tls)
        assert reply.startswith(b"HTTP/1.1 200")
        assert wait_until(lambda: counting.closed == 1)  # dropped, not kept for nothing
    assert len(origin.requests) == 1
    assert counting.requests == 0
