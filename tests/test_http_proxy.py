"""The core engine over real sockets: plain HTTP forwarding, bodies, framing, errors."""

from __future__ import annotations

import hashlib
import logging
import socket
import time

import pytest

from nectoproxy.testing.origin import RawServer, free_port, pattern_sha256

MIB = 1024 * 1024


def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True,
                 timeout: float = 10) -> bytes:
    """Send raw bytes to the proxy and read what comes back until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_get_through_proxy(proxy, origin):
    with proxy.client() as client:
        response = client.get(origin.url + "/json")
    assert response.status_code == 200
    assert response.json() == {"hello": "world", "n": 1}
    assert response.headers["x-origin"] == "nectoproxy-test"


def test_keep_alive_on_both_sides(proxy, origin):
    request = (f"GET {origin.url}/ HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        replies = []
        for _ in range(3):
            sock.sendall(request)
            data = b""
            while not data.endswith(b"hello from origin\n"):
                data += sock.recv(65536)
            replies.append(data)
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies)
    # The proxy reused one upstream connection for the three requests.
    paths = [r.path for r in origin.requests]
    assert paths == ["/", "/", "/"]


@pytest.mark.parametrize("chunked", [False, True])
def test_download_byte_exact(proxy, origin, chunked):
    size = 5 * MIB + 123
    query = "?chunked=1" if chunked else ""
    with proxy.client() as client, client.stream("GET", f"{origin.url}/bytes/{size}{query}") as r:
        digest = hashlib.sha256()
        for chunk in r.iter_raw():
            digest.update(chunk)
        assert r.status_code == 200
        assert ("transfer-encoding" in r.headers) == chunked
    assert digest.hexdigest() == pattern_sha256(size)


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_byte_exact(proxy, origin, chunked):
    body = hashlib.sha256(b"seed").digest() * (4 * MIB // 32) + b"tail"

    def pieces():
        for start in range(0, len(body), 300_000):
            yield body[start:start + 300_000]

    content = pieces() if chunked else body
    with proxy.client() as client:
        response = client.post(origin.url + "/upload", content=content)
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    seen = origin.requests[-1]
    assert (seen.header("transfer-encoding") == "chunked") == chunked


def test_close_delimited_response(proxy, origin):
    with proxy.client() as client:
        response = client.get(origin.url + "/bytes/100000?close=1")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(100000)


def test_http10_client(proxy, origin):
    reply = raw_exchange(proxy.port, f"GET {origin.url}/ HTTP/1.0\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"hello from origin\n"  # and the proxy closed the connection


def test_head_204_304_have_no_body(proxy, origin):
    with proxy.client() as client:
        head = client.head(origin.url + "/bytes/5000")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "5000"
        for status in (204, 304):
            r = client.get(f"{origin.url}/status/{status}")
            assert r.status_code == status and r.content == b""
        # The connection is still usable after bodiless responses.
        assert client.get(origin.url + "/").text == "hello from origin\n"


def test_hop_by_hop_headers_not_forwarded(proxy, origin):
    request = (
        f"GET {origin.url}/echo HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n"
        "Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n"
        "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        "TE: trailers\r\nX-Kept: yes\r\nConnection: close\r\n\r\n"
    ).encode()
    reply = raw_exchange(proxy.port, request)
    assert reply.startswith(b"HTTP/1.1 200")
    names = {name.lower() for name, _ in origin.requests[-1].headers}
    assert "x-kept" in names
    assert not names & {"x-private", "keep-alive", "proxy-connection", "proxy-authorization",
                        "te"}


def test_refused_upstream_is_502_and_proxy_keeps_serving(proxy, origin):
    port = free_port()
    with proxy.client() as client:
        response = client.get(f"http://127.0.0.1:{port}/")
        assert response.status_code == 502
        assert "refused" in response.text and str(port) in response.text
        assert client.get(origin.url + "/").status_code == 200


def test_upstream_timeout_is_504(make_proxy, origin):
    with make_proxy(config={"proxy": {"read_timeout": 0.5}}) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/slow?delay=3")
    assert response.status_code == 504
    assert "did not answer" in response.text


def test_origin_closing_without_answer_is_502(proxy, origin):
    with proxy.client() as client:
        response = client.get(origin.url + "/close")
    assert response.status_code == 502
    assert "closed the connection" in response.text


def test_garbage_response_is_502(proxy):
    def handler(sock: socket.socket) -> None:
        sock.recv(65536)
        sock.sendall(b"this is not HTTP\r\n\r\n")

    with RawServer(handler) as server, proxy.client() as client:
        response = client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 502
    assert "invalid response" in response.text


def test_malformed_request_is_400_and_next_client_is_served(proxy, origin):
    reply = raw_exchange(proxy.port, b"GARBAGE\x00 NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"malformed request" in reply
    reply = raw_exchange(proxy.port, b"GET /relative HTTP/1.1\r\nHost: example.test\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"configure your client" in reply
    with proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200


def test_oversized_header_is_431(make_proxy, origin):
    with make_proxy(config={"proxy": {"max_header_size": 4096}}) as proxy:
        reply = raw_exchange(proxy.port, (f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n"
                                          f"X-Big: {'a' * 8000}\r\n\r\n").encode())
    assert reply.startswith(b"HTTP/1.1 431")


def test_clients_outside_allow_list_are_refused(make_proxy, origin, caplog):
    with make_proxy(config={"proxy": {"allow_clients": ["10.0.0.0/8"]}}) as proxy:
        reply = raw_exchange(proxy.port, f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403")
    assert b"allow_clients" in reply
    assert origin.requests == []
    assert "refused client 127.0.0.1" in caplog.text


def test_public_clients_refused_by_default(proxy):
    assert proxy.proxy.client_allowed("127.0.0.1")
    assert proxy.proxy.client_allowed("192.168.1.20")
    assert proxy.proxy.client_allowed("::ffff:10.1.2.3")
    assert not proxy.proxy.client_allowed("8.8.8.8")
    assert not proxy.proxy.client_allowed("2001:4860::1")


def test_origin_connections_are_pooled_across_clients(proxy, origin):
    for _ in range(3):  # three clients, one after the other, each on a new connection
        reply = raw_exchange(proxy.port, (f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n"
                                          "Connection: close\r\n\r\n").encode())
        assert reply.startswith(b"HTTP/1.1 200")
    assert len(origin.requests) == 3
    assert proxy.proxy.services.pool is not None and len(proxy.proxy.services.pool) == 1


def test_pooled_connection_closed_by_origin_is_not_used(proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="nectoproxy.http")
    served = []

    def one_shot(sock: socket.socket) -> None:
        # Answers one request with keep-alive headers, then closes anyway after a moment.
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        served.append(1)
        time.sleep(0.2)

    with RawServer(one_shot) as server:
        for _ in range(3):
            reply = raw_exchange(proxy.port, (f"GET http://127.0.0.1:{server.port}/ HTTP/1.1\r\n"
                                              "Host: x\r\nConnection: close\r\n\r\n").encode())
            assert reply.startswith(b"HTTP/1.1 200"), reply
            time.sleep(1.3)  # past the pool's trust-without-checking second
    assert len(served) == 3
    assert "retrying" not in caplog.text  # the dead connection was noticed before use
