"""Issue 4, protocol edges and bad input, over real sockets (raw bytes where it matters).

Every loop here is bounded in count and time. Timeouts under test are set to 1 s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Self

import pytest
from wire import wait_until

from nectoproxy.testing.origin import Origin, RawServer, pattern_sha256

MIB = 1024 * 1024


# -- a tiny HTTP/1.1 client over raw sockets -------------------------------------------------


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Incomplete(Exception):
    """The connection closed (or stalled) before a complete response arrived."""


class Conn:
    """A socket plus a read buffer; parses responses one at a time (for pipelining)."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def open(cls, port: int, timeout: float = 10) -> Conn:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ConnectionResetError) as exc:
            raise Incomplete(f"{type(exc).__name__} after {self.buf[:200]!r}") from None
        if not data:
            raise Incomplete(f"closed after {self.buf[:200]!r}")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _fields(self) -> list[tuple[str, str]]:
        fields = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            fields.append((name, value.strip()))
        return fields

    def head(self) -> Reply:
        """Read one status line and header section (1xx included)."""
        version, status, reason = self._line().decode("latin-1").split(" ", 2)
        assert version.startswith("HTTP/1."), version
        return Reply(int(status), reason, self._fields(), b"")

    def response(self, method: str = "GET") -> Reply:
        """Read one complete final response (1xx responses are skipped)."""
        reply = self.head()
        while 100 <= reply.status < 200:
            reply = self.head()
        te = (reply.header("transfer-encoding") or "").lower()
        if method == "HEAD" or reply.status in (204, 304):
            return reply
        if te == "chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    break
                body += self._exact(size)
                assert self._exact(2) == b"\r\n"
            reply.body = bytes(body)
            reply.trailers = self._fields()
        elif (length := reply.header("content-length")) is not None:
            reply.body = self._exact(int(length))
        else:
            reply.body = self.read_to_close()
        return reply

    def read_to_close(self, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._fill()
            except Incomplete:
                break
        data, self.buf = self.buf, b""
        return data

    def closed_within(self, seconds: float) -> bool:
        """True if the peer closes (EOF or reset) within ``seconds``; unread data is dropped."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True
        return False


def head_of(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection; everything the proxy answers until it closes."""
    with Conn.open(port, timeout) as conn:
        conn.send(data)
        return conn.read_to_close(timeout)


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply[9:12])


def tunnel(port: int, target: str, timeout: float = 10) -> Conn:
    conn = Conn.open(port, timeout)
    conn.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    reply = conn.head()
    assert reply.status == 200, reply
    return conn


def tls_tunnel(proxy, target: str, server_hostname: str = "localhost",
               cafile: str | None = None) -> Conn:
    conn = tunnel(proxy.port, target)
    assert not conn.buf
    context = ssl.create_default_context(cafile=cafile or str(proxy.ca_path))
    conn.sock = context.wrap_socket(conn.sock, server_hostname=server_hostname)
    return conn


class ErrorLog:
    """A plugin that records on_error."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def on_error(self, flow, error):
        self.errors.append((flow.request.url, error))


class Buffering(ErrorLog):
    """Implements on_request/on_response, so the proxy buffers bodies for it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, object]] = []

    def on_request(self, flow):
        self.seen.append(("request", flow.request.trailers))

    def on_response(self, flow):
        self.seen.append(("response", flow.response.trailers))


def get(url: str, host: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {url} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


# -- Expect, pipelining, HTTP/1.0 ------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True])
def test_expect_100_continue(proxy, origin, tls_origin, tls):
    body = b"x" * 5000
    if tls:
        conn, url = tls_tunnel(proxy, f"localhost:{tls_origin.port}"), "/upload"
    else:
        conn, url = Conn.open(proxy.port), f"{origin.url}/upload"
    with conn:
        conn.send(f"POST {url} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
                  "Expect: 100-continue\r\n\r\n".encode())
        interim = conn.head()  # the body has not been sent yet
        assert interim.status == 100
        conn.send(body)
        final = conn.response()
    assert final.status == 200
    assert final.body.decode() == (f'{{"sha256": "{hashlib.sha256(body).hexdigest()}", '
                                   f'"length": {len(body)}}}')
    seen = (tls_origin if tls else origin).requests[-1]
    assert seen.header("expect") is None  # answered by the proxy, not forwarded


@pytest.mark.parametrize("tls", [False, True])
def test_pipelined_requests_answered_in_order(proxy, origin, tls_origin, tls):
    server = tls_origin if tls else origin
    base = "" if tls else origin.url
    requests = (
        get(f"{base}/bytes/100", "localhost")
        + f"POST {base}/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc".encode()
        + get(f"{base}/json", "localhost")
    )
    conn = tls_tunnel(proxy, f"localhost:{tls_origin.port}") if tls else Conn.open(proxy.port)
    with conn:
        conn.send(requests)  # one send: all three are in the proxy's buffer at once
        first, second, third = conn.response(), conn.response(), conn.response()
    assert hashlib.sha256(first.body).hexdigest() == pattern_sha256(100)
    assert b'"length": 3' in second.body
    assert third.body == b'{"hello": "world", "n": 1}'
    assert [r.path for r in server.requests] == ["/bytes/100", "/upload", "/json"]


def test_http10_without_keep_alive_closes(proxy, origin):
    with Conn.open(proxy.port) as conn:
        conn.send(get(f"{origin.url}/bytes/3000?chunked=1", "x", version="1.0"))
        reply = conn.response()
        assert conn.closed_within(5)
    assert reply.header("transfer-encoding") is None  # no chunked framing for HTTP/1.0
    assert hashlib.sha256(reply.body).hexdigest() == pattern_sha256(3000)


def test_http10_keep_alive(proxy, origin):
    """HTTP/1.0 + keep-alive: either kept (and then a second request works) or the proxy
    says ``Connection: close`` and closes: never a hang or a misframed body."""
    body = b"0123456789"
    with Conn.open(proxy.port) as conn:
        conn.send(f"POST {origin.url}/upload HTTP/1.0\r\nConnection: keep-alive\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        first = conn.response()
        assert b'"length": 10' in first.body
        if "close" in (first.header("connection") or "").lower():
            assert first.header("content-length") or conn.closed_within(5)
            assert conn.closed_within(5)
        else:
            conn.send(get(f"{origin.url}/json", "x", "Connection: keep-alive\r\n", "1.0"))
            assert conn.response().body == b'{"hello": "world", "n": 1}'
    assert origin.requests[0].body == body


# -- trailers --------------------------------------------------------------------------------


def _trailer_origin(received: list[bytes]) -> RawServer:
    """Answers every request with a chunked body and trailers; records what it received."""

    def handler(sock: socket.socket) -> None:
        sock.settimeout(5)
        data = b""
        while not data.endswith(b"0\r\nX-Req-Sum: 42\r\n\r\n") and b"Content-Length" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        received.append(data)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc123\r\n\r\n")
        sock.recv(1)  # wait for the proxy to close

    return RawServer(handler)


def _chunked_upload_with_trailer(url: str) -> bytes:
    return (f"POST {url} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: X-Req-Sum\r\n\r\n4\r\ndata\r\n0\r\nX-Req-Sum: 42\r\n\r\n").encode()


def test_chunked_trailers_relayed_both_ways(proxy):
    received: list[bytes] = []
    with _trailer_origin(received) as server, Conn.open(proxy.port) as conn:
        conn.send(_chunked_upload_with_trailer(f"{server.url}/"))
        reply = conn.response()
    assert reply.body == b"hello world"
    assert ("X-Sum", "abc123") in reply.trailers
    assert b"\r\nX-Req-Sum: 42\r\n" in received[0].title()  # h11 lower-cases trailer names


def test_chunked_trailers_survive_buffering(make_proxy):
    received: list[bytes] = []
    plugin = Buffering()
    with _trailer_origin(received) as server, make_proxy(plugins=[plugin]) as proxy, \
            Conn.open(proxy.port) as conn:
        conn.send(_chunked_upload_with_trailer(f"{server.url}/"))
        reply = conn.response()
    assert reply.body == b"hello world"
    assert b"\r\nX-Req-Sum: 42\r\n" in received[0].title()
    assert ("X-Sum", "abc123") in reply.trailers


# -- long URLs -------------------------------------------------------------------------------


def test_8k_url_is_forwarded(proxy, origin, tls_origin):
    query = "q=" + "a" * 8192
    with proxy.client() as client:
        assert client.get(f"{origin.url}/echo?{query}").json()["path"] == f"/echo?{query}"
        assert client.get(f"{tls_origin.url}/echo?{query}").json()["path"] == f"/echo?{query}"


@pytest.mark.parametrize("in_pieces", [False, True])
def test_url_beyond_max_header_size_is_refused(make_proxy, origin, in_pieces):
    request = get(f"{origin.url}/echo?q={'a' * 20000}", "x")
    with make_proxy(config={"proxy": {"max_header_size": 16384}}) as proxy, \
            Conn.open(proxy.port) as conn:
        if in_pieces:
            for start in range(0, len(request), 4096):
                try:
                    conn.send(request[start:start + 4096])
                except (BrokenPipeError, ConnectionResetError):
                    break  # already refused and closed
                time.sleep(0.01)
        else:
            conn.send(request)
        reply = conn.read_to_close()
    assert status_of(reply) in (400, 414, 431)
    assert origin.requests == []


# -- request smuggling patterns from clients: 400, nothing forwarded --------------------------

REQUEST_HEAD = "POST {url} HTTP/1.1\r\nHost: localhost\r\n"
BAD_REQUESTS = {
    "cl-and-te": "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-and-cl": "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "duplicate-cl": "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": "Content-Length: 3, 4\r\n\r\nabcd",
    "non-numeric-cl": "Content-Length: 3a\r\n\r\nabc",
    "negative-cl": "Content-Length: -3\r\n\r\nabc",
    "hex-cl": "Content-Length: 0x3\r\n\r\nabc",
    "te-gzip": "Transfer-Encoding: gzip\r\n\r\nabc",
    "te-chunked-identity": "Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te-twice": "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n3\r\nabc\r\n"
                "0\r\n\r\n",
    "chunk-size-not-hex": "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-negative": "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-empty": "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
    "chunk-without-crlf": "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    "chunk-size-overflow": "Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n"
                           "0\r\n\r\n",
    "obs-fold": "X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "bare-cr": "X-A: a\rX-B: b\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": "X-A: a\nX-Smuggled: b\r\nContent-Length: 0\r\n\r\n",
    "space-before-colon": "Content-Length : 3\r\n\r\nabc",
    "space-in-name": "X Bad: a\r\nContent-Length: 0\r\n\r\n",
    "nul-in-value": "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "no-colon": "X-A a\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_smuggling_request_is_400(proxy, origin, case):
    request = (REQUEST_HEAD.format(url=origin.url + "/echo") + BAD_REQUESTS[case]).encode()
    with Conn.open(proxy.port, timeout=5) as conn:
        conn.send(request)
        try:
            reply = conn.response()
        except Incomplete as exc:
            pytest.fail(f"no answer: {exc}")
        assert reply.status == 400, (reply.status, reply.body)
        assert conn.closed_within(5)
    assert origin.requests == []


# -- the same malformed responses from an origin: 502, connection not reused ------------------

GOOD_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BAD_RESPONSE_HEADS = {
    "cl-and-te": "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "duplicate-cl": "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "non-numeric-cl": "Content-Length: 3a\r\n\r\nabc",
    "negative-cl": "Content-Length: -3\r\n\r\nabc",
    "te-gzip": "Transfer-Encoding: gzip\r\n\r\nabc",
    "te-chunked-identity": "Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "obs-fold": "X-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "bare-cr": "X-A: a\rX-B: b\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": "X-A: a\nX-Smuggled: b\r\nContent-Length: 2\r\n\r\nok",
    "space-before-colon": "Content-Length : 2\r\n\r\nok",
    "nul-in-name": "X\x00A: a\r\nContent-Length: 2\r\n\r\nok",
    "bad-status-line": None,
}


def _misbehaving_origin(bad: bytes) -> RawServer:
    """First request on each connection to /bad gets ``bad``; everything else is ok."""

    def handler(sock: socket.socket) -> None:
        sock.settimeout(5)
        buffer = b""
        for _ in range(10):
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            sock.sendall(bad if head.startswith(b"GET /bad ") else GOOD_RESPONSE)

    return RawServer(handler)


@pytest.mark.parametrize("case", list(BAD_RESPONSE_HEADS))
def test_malformed_response_is_502_and_not_reused(proxy, case):
    rest = BAD_RESPONSE_HEADS[case]
    bad = (b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok" if rest is None
           else b"HTTP/1.1 200 OK\r\n" + rest.encode())
    with _misbehaving_origin(bad) as server, Conn.open(proxy.port, timeout=5) as conn:
        conn.send(get(f"{server.url}/bad", "localhost"))
        reply = conn.response()
        assert reply.status == 502, (reply.status, reply.headers, reply.body)
        assert b"invalid response" in reply.body
        assert conn.closed_within(5)
        with Conn.open(proxy.port, timeout=5) as again:
            again.send(get(f"{server.url}/good", "localhost"))
            assert again.response().body == b"ok"
        assert server.connections == 2


@pytest.mark.parametrize("body", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n"])
@pytest.mark.parametrize("buffering", [
    False,
    True,
])
def test_malformed_chunked_response_body(make_proxy, buffering, body):
    """A bad chunk in the body: 502 when the body is buffered (or was wholly received before
    the head went out); once the head is gone, the client connection is closed without a
    complete response. Never a complete 200."""
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    plugin = Buffering() if buffering else ErrorLog()
    with _misbehaving_origin(bad) as server, make_proxy(plugins=[plugin]) as proxy, \
            Conn.open(proxy.port, timeout=5) as conn:
        conn.send(get(f"{server.url}/bad", "localhost"))
        try:
            reply: Reply | None = conn.response()
        except Incomplete:
            reply = None  # the head was relayed, then the connection closed
        if buffering:
            assert reply is not None
        if reply is not None:
            assert reply.status == 502 and b"invalid response" in reply.body, reply
        assert conn.closed_within(5)
    assert wait_until(lambda: plugin.errors)
    assert "invalid response" in plugin.errors[0][1]


# -- peers that vanish mid-body --------------------------------------------------------------


def test_client_disconnect_mid_upload(make_proxy):
    got = {"bytes": 0}
    eof = threading.Event()

    def handler(sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            while data := sock.recv(65536):
                got["bytes"] += len(data)
        except (TimeoutError, ConnectionResetError):
            return
        eof.set()

    plugin = ErrorLog()
    with RawServer(handler) as server, make_proxy(plugins=[plugin]) as proxy:
        with Conn.open(proxy.port) as conn:
            conn.send(f"POST {server.url}/upload HTTP/1.1\r\nHost: localhost\r\n"
                      f"Content-Length: {10 * MIB}\r\n\r\n".encode() + b"x" * 300_000)
            assert wait_until(lambda: got["bytes"] > 300_000)
        assert eof.wait(5), "the origin side was not closed"
        assert wait_until(lambda: plugin.errors)
        assert proxy.proxy.services.sessions == set()
    url, error = plugin.errors[0]
    assert url == f"{server.url}/upload"
    assert "client closed the connection mid-body" in error


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_origin_disconnect_mid_download(make_proxy, framing):
    def handler(sock: socket.socket) -> None:
        sock.settimeout(5)
        sock.recv(65536)
        if framing == "length":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 100_000)
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"186a0\r\n" + b"y" * 100_000 + b"\r\n")

    plugin = ErrorLog()
    with RawServer(handler) as server, make_proxy(plugins=[plugin]) as proxy, \
            Conn.open(proxy.port) as conn:
        conn.send(get(f"{server.url}/big", "localhost"))
        head = conn.head()
        assert head.status == 200
        started = time.monotonic()
        data = conn.read_to_close(timeout=5)
        assert time.monotonic() - started < 4, "the client connection was left hanging"
        assert len(data) < 1_000_000
        assert wait_until(lambda: plugin.errors)
    assert "closed the connection mid-response" in plugin.errors[0][1]


# -- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("dribble", [False, True])
def test_slowloris_cut_off_others_served(make_proxy, origin, dribble):
    with make_proxy(config={"proxy": {"header_timeout": 1.0}}) as proxy, \
            Conn.open(proxy.port) as slow, proxy.client() as client:
        partial = get(f"{origin.url}/", "x")[:-2]  # never the final CRLF
        slow.send(partial[:20])
        started = time.monotonic()
        sent = 20
        served = 0
        cut_off = False
        slow.sock.settimeout(0.05)
        while time.monotonic() - started < 5:
            assert client.get(origin.url + "/").status_code == 200  # others are unaffected
            served += 1
            if dribble and sent < len(partial):
                try:
                    slow.send(partial[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    cut_off = True
                    break
                sent += 1
            try:
                data = slow.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            assert not data or data.startswith(b"HTTP/1.1 408"), data
            cut_off = True
            break
        elapsed = time.monotonic() - started
    assert cut_off and 0.8 < elapsed < 4, elapsed
    assert served >= 2


def test_idle_keep_alive_connection_closed(make_proxy, origin):
    with make_proxy(config={"proxy": {"idle_timeout": 1.0}}) as proxy, \
            Conn.open(proxy.port) as conn, Conn.open(proxy.port) as silent:
        conn.send(get(f"{origin.url}/", "x"))
        assert conn.response().status == 200
        started = time.monotonic()
        assert not conn.closed_within(0.5)  # kept alive for a while...
        assert conn.closed_within(3.5)  # ...then closed
        assert 0.8 < time.monotonic() - started < 4
        assert silent.closed_within(1.0)  # a client that never sent anything, too


def test_upstream_connect_timeout_is_504(make_proxy):
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):  # fill the accept queue: further SYNs are dropped
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:  # Linux drops SYNs once a listen(0) queue is full; this test relies on that
            pytest.fail("could not fill the listen backlog: no way to make a connect time out")
        with make_proxy(config={"proxy": {"connect_timeout": 1.0}}) as proxy, \
                proxy.client() as client:
            started = time.monotonic()
            response = client.get(f"http://127.0.0.1:{port}/")
            elapsed = time.monotonic() - started
    finally:
        for sock in (*fillers, listener):
            sock.close()
    assert response.status_code == 504
    assert "timed out after 1s connecting" in response.text
    assert elapsed < 4


def test_upstream_tls_handshake_timeout_is_504(make_proxy):
    def handler(sock: socket.socket) -> None:  # accepts TCP, never answers the ClientHello
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            pass

    with RawServer(handler) as server, \
            make_proxy(config={"proxy": {"tls_handshake_timeout": 1.0}}) as proxy, \
            proxy.client() as client:
        started = time.monotonic()
        response = client.get(f"https://127.0.0.1:{server.port}/")
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert "TLS handshake with 127.0.0.1 timed out" in response.text
    assert elapsed < 5


def _client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("send", ["nothing", "partial-record", "client-hello-only"])
def test_client_tls_handshake_timeout(make_proxy, tls_origin, send, caplog):
    with make_proxy(config={"proxy": {"tls_handshake_timeout": 1.0}}) as proxy:
        with tunnel(proxy.port, f"localhost:{tls_origin.port}") as conn:
            hello = _client_hello()
            if send == "partial-record":
                conn.send(hello[:20])
            elif send == "client-hello-only":
                conn.send(hello)  # the proxy answers, then waits for the client's next flight
            started = time.monotonic()
            assert conn.closed_within(4)
            assert 0.8 < time.monotonic() - started < 4.5
        assert proxy.curl(f"https://localhost:{tls_origin.port}/").returncode == 0
    assert "Traceback" not in caplog.text
    assert tls_origin.requests[-1].path == "/"


# -- limits and access -----------------------------------------------------------------------


def test_max_connections(make_proxy, origin):
    with make_proxy(config={"proxy": {"max_connections": 3}}) as proxy:
        conns = [Conn.open(proxy.port) for _ in range(3)]
        try:
            for conn in conns:  # each is being served: the proxy counts it
                conn.send(get(f"{origin.url}/", "x"))
                assert conn.response().status == 200
            with Conn.open(proxy.port) as fourth:
                fourth.send(get(f"{origin.url}/", "x"))
                reply = fourth.response()
                assert reply.status == 503
                assert fourth.closed_within(5)
            for conn in conns:  # the others still work
                conn.send(get(f"{origin.url}/json", "x"))
                assert conn.response().status == 200
            conns.pop().sock.close()

            def slot_free() -> bool:
                with Conn.open(proxy.port) as conn:
                    conn.send(get(f"{origin.url}/", "x"))
                    return conn.response().status == 200

            assert wait_until(slot_free, 5)
        finally:
            for conn in conns:
                conn.sock.close()


@pytest.mark.parametrize("target", ["\x00\xff:443", "localhost:443x", "localhost:-1",
                                    "http://localhost:443", "1.2.3.4:65536", "[::1]x:443",
                                    "local host:443"])
def test_bad_connect_targets(proxy, target):
    reply = head_of(proxy.port, f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n"
                    .encode("latin-1"), timeout=5)
    assert status_of(reply) == 400


@pytest.mark.parametrize("target", ["http://[::1/", "http://[zz]:80/", "http://a]b/"])
def test_bad_absolute_targets_are_400_not_a_traceback(proxy, target, caplog):
    reply = head_of(proxy.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                    timeout=5)
    assert status_of(reply) == 400
    assert "Traceback" not in caplog.text


def test_connect_after_garbage_is_400(proxy, tls_origin, caplog):
    reply = head_of(proxy.port, b"\x16\x03\x01garbage\r\n"
                    + f"CONNECT localhost:{tls_origin.port} HTTP/1.1\r\n\r\n".encode(), timeout=5)
    assert status_of(reply) == 400
    assert reply.count(b"HTTP/1.1") == 1  # the CONNECT after the garbage is not served
    assert "Traceback" not in caplog.text


def test_opaque_bytes_after_connect_are_relayed(proxy):
    received: list[bytes] = []

    def handler(sock: socket.socket) -> None:
        sock.settimeout(5)
        data = sock.recv(65536)
        received.append(data)
        sock.sendall(b"\x00\x01echo:" + data)

    with RawServer(handler) as server, tunnel(proxy.port, f"127.0.0.1:{server.port}") as conn:
        conn.send(b"\x00\x01\x02 not TLS, not HTTP \xff")
        assert conn.read_to_close(5) == b"\x00\x01echo:\x00\x01\x02 not TLS, not HTTP \xff"
    assert received == [b"\x00\x01\x02 not TLS, not HTTP \xff"]


@pytest.fixture
def wildcard_origin(origin_ca):
    with Origin(tls=True, ca=origin_ca, cert_hosts=("sub.example.test", "localhost")) as server:
        yield server


@pytest.mark.parametrize("passthrough", [["localhost"], ["*.example.test"]])
def test_passthrough_relays_tls_untouched(make_proxy, wildcard_origin, passthrough):
    origin_ca = wildcard_origin.ca_pem_path
    name = "localhost" if passthrough == ["localhost"] else "sub.example.test"
    with make_proxy(config={"proxy": {"passthrough": passthrough}}) as proxy:
        if name == "localhost":  # the CONNECT target matches
            result = proxy.curl("--cacert", origin_ca, f"https://localhost:{wildcard_origin.port}"
                                "/json")  # the last --cacert wins: only the origin's CA
            assert result.returncode == 0, result.stderr
            assert result.stdout == b'{"hello": "world", "n": 1}'
        # the SNI matches (CONNECT by IP address)
        with tls_tunnel(proxy, f"127.0.0.1:{wildcard_origin.port}", name, origin_ca) as conn:
            conn.send(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.response().body == b'{"hello": "world", "n": 1}'
        with pytest.raises(ssl.SSLCertVerificationError):  # other names are intercepted
            tls_tunnel(proxy, f"127.0.0.1:{wildcard_origin.port}", "other.test", origin_ca)


# -- no descriptor leak after a burst of bad input -------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_after_bad_request_burst(make_proxy, origin, tls_origin, caplog):
    config = {"proxy": {"header_timeout": 1.0, "idle_timeout": 1.0,
                        "tls_handshake_timeout": 1.0}}
    with make_proxy(config=config) as proxy:
        with proxy.client() as client:
            assert client.get(origin.url + "/").status_code == 200
        before = _open_fds()
        patterns: list[bytes] = [
            b"GARBAGE\r\n\r\n",
            b"\x00" * 100,
            (REQUEST_HEAD.format(url=origin.url) + BAD_REQUESTS["duplicate-cl"]).encode(),
            (REQUEST_HEAD.format(url=origin.url) + BAD_REQUESTS["chunk-size-not-hex"]).encode(),
            (REQUEST_HEAD.format(url=origin.url) + BAD_REQUESTS["space-before-colon"]).encode(),
            f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\nX: {'a' * 70000}\r\n\r\n".encode(),
            b"CONNECT nope HTTP/1.1\r\n\r\n",
            f"CONNECT localhost:{tls_origin.port} HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x02ab".encode(),
            f"CONNECT localhost:{tls_origin.port} HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n".encode(),
            f"POST {origin.url}/upload HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc".encode(),
            f"GET {origin.url}/".encode(),
            b"",
        ]
        for i in range(200):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
                data = patterns[i % len(patterns)]
                try:
                    sock.sendall(data)
                    if i % 3 == 0:
                        sock.recv(1)  # sometimes wait for the answer, sometimes vanish at once
                except OSError:
                    pass
        assert wait_until(lambda: not proxy.proxy.services.sessions, 10)
        assert wait_until(lambda: _open_fds() <= before + 2, 5), (before, _open_fds())
        with proxy.client() as client:
            assert client.get(origin.url + "/").status_code == 200
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text


def test_connect_and_reset_at_once(make_proxy, origin):
    with make_proxy() as proxy:  # inside the test: a crash on exit fails the test itself
        for _ in range(50):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                try:
                    sock.connect(("127.0.0.1", proxy.port))
                except ConnectionRefusedError:
                    pytest.fail("the proxy stopped listening")
            # closed with RST, possibly before the proxy has looked at the connection
        time.sleep(0.2)
        with proxy.client() as client:
            assert client.get(origin.url + "/").status_code == 200


def test_client_reset_mid_head_is_quiet(make_proxy, origin, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("nectoproxy"), "propagate", True)
    with make_proxy() as proxy:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(get(f"{origin.url}/", "x")[:-2])  # no final CRLF
            time.sleep(0.2)  # the proxy is waiting for the rest of the head
        time.sleep(0.3)
        assert proxy.proxy.services.sessions == set()
        with proxy.client() as client:
            assert client.get(origin.url + "/").status_code == 200
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
