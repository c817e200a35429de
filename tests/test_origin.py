"""Tests for the fake origin server used by the proxy's tests (no proxy involved here)."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import BinaryIO

import httpx
import pytest
import trustme

from nectoproxy.testing.origin import (
    BLOCK_SIZE,
    GZIP_TEXT,
    HTML_BODY,
    JSON_BODY,
    Origin,
    RawServer,
    free_port,
    gzip_bytes,
    iter_pattern,
    pattern_bytes,
    pattern_sha256,
)

Headers = list[tuple[str, str]]


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as o:
        yield o
    assert o.errors == []


@pytest.fixture
def tls_origin() -> Iterator[Origin]:
    with Origin(tls=True) as o:
        yield o
    assert o.errors == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def connect(o: Origin | RawServer) -> socket.socket:
    return socket.create_connection((o.host, o.port), timeout=10)


def read_response(f: BinaryIO, head: bool = False) -> tuple[int, Headers, bytes]:
    """Parse one HTTP/1.1 response from a binary file object (bounded reads only)."""
    status_line = f.readline(65536)
    assert status_line.startswith(b"HTTP/1."), status_line
    status = int(status_line.split()[1])
    headers: Headers = []
    for _ in range(200):
        line = f.readline(65536).decode("latin-1")
        if line in ("\r\n", ""):
            break
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    h = {k.lower(): v for k, v in headers}
    if head or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if h.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        for _ in range(1_000_000):
            size = int(f.readline(1024).split(b";")[0], 16)
            if size == 0:
                assert f.readline(1024) == b"\r\n"
                return status, headers, bytes(body)
            body += f.read(size)
            assert f.read(2) == b"\r\n"
        raise AssertionError("too many chunks")
    if "content-length" in h:
        return status, headers, f.read(int(h["content-length"]))
    return status, headers, f.read()


def exchange(o: Origin, raw: bytes, head: bool = False) -> tuple[int, Headers, bytes]:
    with connect(o) as sock, sock.makefile("rb") as f:
        sock.sendall(raw)
        return read_response(f, head=head)


def names(headers: Headers) -> list[str]:
    return [k.lower() for k, _ in headers]


def get(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


# -- the byte pattern ----------------------------------------------------------------------


def test_pattern_is_deterministic_and_seeded() -> None:
    assert pattern_bytes(0) == b""
    assert len(pattern_bytes(200_000)) == 200_000
    assert pattern_bytes(200_000) == pattern_bytes(200_000)
    assert pattern_bytes(1000, seed=1) != pattern_bytes(1000)
    assert pattern_bytes(10) == hashlib.sha256(b"nectoproxy-pattern:0:0").digest()[:10]
    assert pattern_bytes(BLOCK_SIZE + 5)[BLOCK_SIZE:] == pattern_bytes(5)  # 64 KiB period
    assert pattern_sha256(300_000, 3) == hashlib.sha256(pattern_bytes(300_000, 3)).hexdigest()


def test_iter_pattern_matches_and_is_bounded() -> None:
    for n, size in [(0, 10), (1, 1), (200_001, 1000), (200_001, 10**9)]:
        chunks = list(iter_pattern(n, 2, size))
        assert b"".join(chunks) == pattern_bytes(n, 2)
        assert all(0 < len(c) <= min(size, BLOCK_SIZE) for c in chunks)
    huge = iter_pattern(1 << 30)  # lazy: 1 GiB is never built
    first = list(itertools.islice(huge, 20))
    assert all(len(c) == BLOCK_SIZE for c in first)
    assert b"".join(first[:2]) == pattern_bytes(2 * BLOCK_SIZE)


def test_large_download_streams_with_flat_memory(origin: Origin) -> None:
    n = 64 * 1024 * 1024
    buf = bytearray(BLOCK_SIZE)
    digest, received = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        with connect(origin) as sock:
            sock.sendall(f"GET /bytes/{n}?close=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            header = b""
            while b"\r\n\r\n" not in header and len(header) < 65536:
                header += sock.recv(1)
            for _ in range(n):  # bounded: each iteration receives at least one byte
                got = sock.recv_into(buf)
                if not got:
                    break
                digest.update(memoryview(buf)[:got])
                received += got
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == n
    assert digest.hexdigest() == pattern_sha256(n)
    assert peak < 8 * 1024 * 1024, peak


# -- endpoints over httpx ------------------------------------------------------------------


def test_root_json_html_and_404(origin: Origin, client: httpx.Client) -> None:
    r = client.get(origin.url + "/")
    assert (r.status_code, r.content) == (200, b"hello from origin\n")
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-origin"] == "nectoproxy-test"
    r = client.get(origin.url + "/json")
    assert r.headers["content-type"] == "application/json"
    assert r.content == JSON_BODY and r.json() == {"hello": "world", "n": 1}
    r = client.get(origin.url + "/html")
    assert r.headers["content-type"].startswith("text/html")
    assert r.content == HTML_BODY and b"<title>Origin</title>" in r.content
    for method in ("GET", "POST", "DELETE"):
        r = client.request(method, origin.url + "/no/such/path")
        assert (r.status_code, r.content) == (404, b"not found\n")
        assert r.headers["x-origin"] == "nectoproxy-test"
    r = client.post(origin.url + "/", content=b"x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_echo(origin: Origin, client: httpx.Client) -> None:
    r = client.request("PATCH", origin.url + "/echo?a=1&b=2", content=b"\x00\xffhi")
    data = r.json()
    assert data["method"] == "PATCH" and data["path"] == "/echo?a=1&b=2"
    assert data["body"] == "\x00\xffhi" and data["body_length"] == 4
    assert data["body_sha256"] == hashlib.sha256(b"\x00\xffhi").hexdigest()
    assert data["http_version"] == "HTTP/1.1"
    assert ["Content-Length", "4"] in data["headers"]
    big = pattern_bytes(64 * 1024 + 1)
    data = client.post(origin.url + "/echo", content=big).json()
    assert data["body"] is None and data["body_length"] == len(big)
    assert data["body_sha256"] == hashlib.sha256(big).hexdigest()


def test_echo_keeps_header_case_and_order(origin: Origin) -> None:
    raw = (
        b"OPTIONS /echo HTTP/1.1\r\nHost: x\r\nX-MiXeD: 1\r\nx-lower: two\r\n"
        b"X-Dup: a\r\nX-Dup: b\r\nConnection: close\r\n\r\n"
    )
    status, _, body = exchange(origin, raw)
    assert status == 200
    assert json.loads(body)["headers"] == [
        ["Host", "x"], ["X-MiXeD", "1"], ["x-lower", "two"],
        ["X-Dup", "a"], ["X-Dup", "b"], ["Connection", "close"],
    ]  # fmt: skip


@pytest.mark.parametrize("n", [0, 1, 1000, 3 * BLOCK_SIZE + 7])
def test_bytes_content_length(origin: Origin, client: httpx.Client, n: int) -> None:
    r = client.get(f"{origin.url}/bytes/{n}")
    assert r.status_code == 200 and r.headers["content-length"] == str(n)
    assert "transfer-encoding" not in r.headers
    assert r.content == pattern_bytes(n)


def test_bytes_chunked_seed_and_gzip(origin: Origin, client: httpx.Client) -> None:
    r = client.get(f"{origin.url}/bytes/200000?chunked=1")
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    assert r.content == pattern_bytes(200_000)
    assert client.get(f"{origin.url}/bytes/1000?seed=7").content == pattern_bytes(1000, 7)
    for query in ("gzip=1", "gzip=1&chunked=1"):
        r = client.get(f"{origin.url}/bytes/300000?{query}")
        assert r.headers["content-encoding"] == "gzip"
        assert r.content == pattern_bytes(300_000)  # httpx decoded it
    r = client.get(f"{origin.url}/bytes/1000?gzip=1")
    assert r.headers["content-length"] == str(len(gzip_bytes(pattern_bytes(1000))))
    assert client.get(f"{origin.url}/bytes/-1").status_code == 400
    assert client.get(f"{origin.url}/bytes/abc").status_code == 400


def test_gzip_text(origin: Origin, client: httpx.Client) -> None:
    r = client.get(origin.url + "/gzip-text")
    assert r.headers["content-encoding"] == "gzip" and r.content == GZIP_TEXT
    _, headers, body = exchange(origin, b"GET /gzip-text HTTP/1.1\r\nHost: x\r\n\r\n")
    assert body == gzip_bytes(GZIP_TEXT) and gzip.decompress(body) == GZIP_TEXT
    assert get(headers, "content-length") == str(len(body))


def test_upload_content_length_and_streamed(origin: Origin, client: httpx.Client) -> None:
    data = pattern_bytes(300_000, 5)
    for method in ("POST", "PUT"):
        r = client.request(method, origin.url + "/upload", content=data)
        assert r.json() == {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
    n = 3 * 1024 * 1024 + 5
    r = client.post(origin.url + "/upload", content=iter_pattern(n))  # chunked by httpx
    assert r.json() == {"sha256": pattern_sha256(n), "length": n}
    rec = origin.requests[-1]
    assert rec.header("transfer-encoding") == "chunked"
    assert rec.body_length == n and len(rec.body) == 1024 * 1024  # recorded body is capped
    assert rec.body == pattern_bytes(1024 * 1024)
    r = client.get(origin.url + "/upload")
    assert r.status_code == 405 and r.headers["allow"] == "POST, PUT"


def test_upload_raw_chunked_with_extensions_trailers_and_expect(origin: Origin) -> None:
    with connect(origin) as sock, sock.makefile("rb") as f:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, _, _ = read_response(f)
        assert status == 100
        sock.sendall(b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n")
        status, _, body = read_response(f)
        expected = b"hello 0123456789"
        assert json.loads(body) == {"sha256": hashlib.sha256(expected).hexdigest(), "length": 16}
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection is still usable
        assert read_response(f)[2] == b"hello from origin\n"


def test_bad_chunked_body_is_400_and_closes(origin: Origin) -> None:
    raw = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    status, headers, _ = exchange(origin, raw)
    assert status == 400 and get(headers, "connection") == "close"


@pytest.mark.parametrize("code", [200, 201, 204, 304, 404, 418, 500, 503, 599])
def test_status(origin: Origin, code: int) -> None:
    status, headers, body = exchange(
        origin, f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert status == code and body == b""
    assert get(headers, "x-origin") == "nectoproxy-test"
    assert get(headers, "content-length") == (None if code in (204, 304) else "0")


def test_status_rejects_nonsense(origin: Origin, client: httpx.Client) -> None:
    for path in ("/status/99", "/status/600", "/status/x"):
        assert client.get(origin.url + path).status_code == 400


def test_head_sends_headers_only_and_keeps_alive(origin: Origin) -> None:
    with connect(origin) as sock, sock.makefile("rb") as f:
        for path, length in [("/bytes/5000", 5000), ("/", 18), ("/bytes/9?chunked=1", None)]:
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, _ = read_response(f, head=True)
            assert status == 200
            if length is not None:
                assert get(headers, "content-length") == str(length)
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")  # no body bytes were sent above
        assert read_response(f)[2] == JSON_BODY


def test_close_delimited_response(origin: Origin) -> None:
    status, headers, body = exchange(
        origin, b"GET /bytes/70000?close=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 200 and body == pattern_bytes(70_000)
    assert "content-length" not in names(headers) and "transfer-encoding" not in names(headers)


def test_keep_alive_and_connection_close(origin: Origin) -> None:
    with connect(origin) as sock, sock.makefile("rb") as f:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f)[2] == b"hello from origin\n"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, headers, _ = read_response(f)
        assert get(headers, "connection") == "close"
        assert f.read() == b""  # the origin closed the connection


def test_headers_endpoint(origin: Origin, client: httpx.Client) -> None:
    r = client.get(origin.url + "/headers?X-A=1&X-A=2&X-B=hello%20world&Content-Type=text/x-t")
    assert r.content == b"ok" and r.headers.get_list("x-a") == ["1", "2"]
    assert r.headers["x-b"] == "hello world" and r.headers.get_list("content-type") == ["text/x-t"]
    assert client.get(origin.url + "/headers?X-Bad=a%0d%0aX-Injected:%201").status_code == 400


def test_slow_and_drip(origin: Origin, client: httpx.Client) -> None:
    t0 = time.monotonic()
    assert client.get(origin.url + "/slow?delay=0.2").content == b"slow"
    assert time.monotonic() - t0 >= 0.2
    t0 = time.monotonic()
    r = client.get(origin.url + "/drip?n=5&delay=0.05")
    assert r.content == pattern_bytes(5) and time.monotonic() - t0 >= 0.25
    assert client.get(origin.url + "/drip?n=6&delay=0&chunk=4&chunked=1").content == pattern_bytes(
        6
    )
    with pytest.raises(httpx.ReadTimeout):
        client.get(origin.url + "/drip?n=3&delay=5", timeout=0.3)


def test_close_endpoint(origin: Origin, client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.url + "/close")
    with connect(origin) as sock:
        sock.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024) == b""
    with connect(origin) as sock:
        sock.sendall(b"GET /close?reset=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass


def test_requests_are_recorded(origin: Origin, client: httpx.Client) -> None:
    client.post(origin.url + "/echo?q=1", content=b"body", headers={"X-Test": "yes"})
    client.get(origin.url + "/")
    first, second = origin.requests
    assert (first.method, first.path, first.version) == ("POST", "/echo?q=1", "HTTP/1.1")
    assert ("X-Test", "yes") in first.headers and first.header("x-test") == "yes"
    assert (first.body, first.body_length) == (b"body", 4)
    assert first.body_sha256 == hashlib.sha256(b"body").hexdigest() and not first.tls
    assert (second.method, second.path, second.body) == ("GET", "/", b"")


# -- TLS -----------------------------------------------------------------------------------


def test_tls_origin(tls_origin: Origin) -> None:
    assert tls_origin.url == f"https://127.0.0.1:{tls_origin.port}"
    assert tls_origin.ca is not None and tls_origin.ca_pem_path is not None
    ctx = ssl.create_default_context(cafile=tls_origin.ca_pem_path)
    with httpx.Client(trust_env=False, verify=ctx, timeout=10) as c:
        r = c.get(tls_origin.url + "/bytes/100000?chunked=1")
        assert r.content == pattern_bytes(100_000)
        r = c.post(tls_origin.url + "/upload", content=iter_pattern(200_000))
        assert r.json() == {"sha256": pattern_sha256(200_000), "length": 200_000}
    assert tls_origin.requests[-1].tls
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with connect(tls_origin) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        with tls.makefile("rb") as f:
            assert read_response(f)[2] == b"hello from origin\n"


def test_tls_with_given_ca_and_untrusted_client() -> None:
    ca = trustme.CA()
    with Origin(tls=True, ca=ca, cert_hosts=("localhost",)) as o:
        assert o.ca is ca and o.ca_pem_path is not None
        with open(o.ca_pem_path, "rb") as f:
            assert f.read() == ca.cert_pem.bytes()
        system_ctx = ssl.create_default_context()  # does not trust our CA: handshake fails
        with (
            httpx.Client(trust_env=False, verify=system_ctx, timeout=10) as c,
            pytest.raises(httpx.ConnectError),
        ):
            c.get(o.url + "/")
        pem_path = o.ca_pem_path
    assert o.errors == [] and o.ca_pem_path is None
    with pytest.raises(FileNotFoundError):
        open(pem_path, "rb").close()


# -- lifecycle -----------------------------------------------------------------------------


def _threads_named(name: str) -> int:
    return sum(t.name == name and t.is_alive() for t in threading.enumerate())


def test_stop_frees_port_and_joins_threads() -> None:
    o = Origin()
    o.start()
    port = o.port
    assert o.url == f"http://127.0.0.1:{port}" and _threads_named(f"nectoproxy-origin-{port}")
    idle = connect(o)  # an idle keep-alive connection
    slow = connect(o)  # a request sleeping in the server
    try:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.sendall(b"GET /slow?delay=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(200):
            if any(r.path.startswith("/slow") for r in o.requests):
                break
            time.sleep(0.01)
        assert _threads_named(f"nectoproxy-origin-{port}-conn") == 2
        t0 = time.monotonic()
        o.stop()
        assert time.monotonic() - t0 < 3
        assert slow.recv(100) == b""  # the sleeping request was abandoned
    finally:
        idle.close()
        slow.close()
    assert _threads_named(f"nectoproxy-origin-{port}") == 0  # the server thread
    assert _threads_named(f"nectoproxy-origin-{port}-conn") == 0  # the connection threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nobody listens there any more
    o.stop()  # idempotent


def test_ipv6_origin(client: httpx.Client) -> None:
    # The proxy's IPv6 CONNECT tests need ::1 as well; like them, this one requires it.
    with Origin(host="::1") as o:
        assert o.url == f"http://[::1]:{o.port}"
        assert client.get(o.url + "/").content == b"hello from origin\n"


def test_free_port() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- RawServer -----------------------------------------------------------------------------


def test_raw_server_garbage_and_errors() -> None:
    def handler(sock: socket.socket) -> None:
        request = sock.recv(1024)
        if request.startswith(b"boom"):
            raise ValueError("boom")
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    with RawServer(handler) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        with connect(srv) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            data = b""
            for _ in range(100):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
        assert data == b"NOT HTTP AT ALL\r\n\r\n"
        with connect(srv) as sock:
            sock.sendall(b"boom")
            assert sock.recv(10) == b""
        idle = connect(srv)  # a handler blocked in recv() must not block stop()
        t0 = time.monotonic()
    idle.close()
    assert time.monotonic() - t0 < 3
    assert srv.connections == 3
    assert len(srv.errors) == 1 and isinstance(srv.errors[0], ValueError)


def test_raw_server_tls_with_untrusted_cert() -> None:
    untrusted = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    untrusted.issue_cert("localhost").configure_cert(server_ctx)

    def handler(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    with RawServer(handler, ssl_context=server_ctx) as srv:
        assert srv.url.startswith("https://")
        trusted = trustme.CA()
        client_ctx = ssl.create_default_context()
        trusted.configure_trust(client_ctx)
        with connect(srv) as raw, pytest.raises(ssl.SSLCertVerificationError):
            client_ctx.wrap_socket(raw, server_hostname="localhost").close()
        untrusted.configure_trust(client_ctx)
        with connect(srv) as raw, client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(100).endswith(b"hi")
    assert srv.errors == []
