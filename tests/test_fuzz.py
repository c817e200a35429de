"""Issue 4: malformed requests (hypothesis) against one running proxy, over raw sockets.

The proxy must answer or close every connection, never log a traceback, never leak a file
descriptor or a session, and serve a good request afterwards. Bounded: 300 examples, each on
its own connection with a short deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLE_DEADLINE = 0.3  # seconds an example waits for the proxy to answer or close


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- strategies: valid requests, then broken on purpose --------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"TRACE",
           b"CONNECT", b"get", b"G\x00T", b"GET GET", b"", b"\xff\xfe", b"X" * 300]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b"HTTP/",
            b"http/1.1", b"HTTP/1.1 ", b"", b"HTTP/1.01", b"HTTP/11"]
EOLS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]
HEADER_NAMES = [b"X-Test", b"Accept", b"Content-Length", b"Transfer-Encoding", b"Connection",
                b"Expect", b"Upgrade", b"Host", b"Proxy-Connection", b"TE", b"Trailer",
                b"X Test", b"X-Test ", b" X-Test", b"", b"X\x00", b"\xff", b"X:Y", b"(x)"]
HEADER_VALUES = [b"1", b"0", b"-1", b"1e3", b"0x10", b"99999999999999999999999", b"5, 6",
                 b"chunked", b"gzip", b"chunked, identity", b"identity, chunked", b"Chunked",
                 b" chunked", b"close", b"keep-alive", b"upgrade", b"100-continue",
                 b"a\rb", b"a\nInjected: yes", b"a\r\nInjected: yes", b"\x00", b"\x7f",
                 b"v" * 5000, b"", b" ", b"\t"]
CHUNK_SIZES = [b"0", b"1", b"5", b"a", b"A", b"ff", b"zz", b"-1", b"0x5", b" 5", b"5 ",
               b"5;ext=1", b"5;", b"ffffffffffffffffffff", b"1" * 40, b""]


@st.composite
def request_bytes(draw, origin_url: str, tls_port: int, closed_port: int) -> bytes:
    targets = [f"{origin_url}/".encode(), f"{origin_url}/echo".encode(),
               f"{origin_url}/bytes/100?chunked=1".encode(), f"{origin_url}/status/204".encode(),
               f"{origin_url}/upload".encode(), f"http://127.0.0.1:{closed_port}/".encode(),
               b"/", b"*", b"/\x00", b"http://", b"http://[::1", b"http://127.0.0.1:0/",
               b"ftp://127.0.0.1/", b"http://127.0.0.1:99999/", b"http://user@127.0.0.1:1/",
               f"localhost:{tls_port}".encode(), f"127.0.0.1:{closed_port}".encode(),
               b"localhost", b"localhost:0", b":443", b"[::1]:x", b"a" * 9000]
    method = draw(st.sampled_from(METHODS) | st.binary(max_size=10))
    target = draw(st.sampled_from(targets) | st.binary(max_size=40))
    version = draw(st.sampled_from(VERSIONS))
    eol = draw(st.sampled_from(EOLS))
    fields = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES) | st.binary(max_size=12),
                                     st.sampled_from(HEADER_VALUES) | st.binary(max_size=20)),
                           max_size=6))
    if draw(st.booleans()):
        fields.insert(0, (b"Host", b"127.0.0.1"))
    separator = draw(st.sampled_from([b": ", b":", b" : ", b":\t", b"\r\n :"]))
    head = method + b" " + target + b" " + version + eol
    head += b"".join(name + separator + value + eol for name, value in fields)
    if draw(st.booleans()):
        head += b" folded continuation" + eol  # obs-fold
    head += eol
    body_kind = draw(st.sampled_from(["none", "raw", "chunked"]))
    if body_kind == "raw":
        body = draw(st.binary(max_size=300))
    elif body_kind == "chunked":
        chunks = draw(st.lists(st.tuples(st.sampled_from(CHUNK_SIZES), st.binary(max_size=20)),
                               max_size=4))
        body = b"".join(size + eol + data + eol for size, data in chunks)
        if draw(st.booleans()):
            body += b"0" + eol + draw(st.sampled_from([b"", b"X-Trailer: 1" + eol,
                                                       b"Bad Trailer" + eol])) + eol
    else:
        body = b""
    data = head + body
    for _ in range(draw(st.integers(0, 3))):  # byte-level mutations
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
        elif action == "insert":
            data = data[:position] + draw(st.binary(min_size=1, max_size=8)) + data[position:]
        elif action == "delete":
            data = data[:position] + data[position + 1:]
        else:
            data = data[:position]
    return data


@st.composite
def connect_junk(draw, tls_port: int) -> bytes:
    """A CONNECT (good or bad target), then whatever follows it on the same connection."""
    target = draw(st.sampled_from([f"localhost:{tls_port}".encode(),
                                   f"127.0.0.1:{tls_port}".encode(), b"localhost:0",
                                   b"[::1", b"\x00:443", b"localhost:-1"])
                  | st.binary(max_size=30))
    after = draw(st.sampled_from([
        b"",
        b"\x16\x03\x01\x00\x05hello",  # a TLS record that is no ClientHello
        b"\x16\x03\x01\xff\xff" + b"\x00" * 50,  # a record that claims 64 KiB and stops
        b"\x16",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP inside the tunnel
        b"CONNECT localhost:1 HTTP/1.1\r\n\r\n",  # CONNECT inside the tunnel
        b"GARBAGE\r\n\r\n",
    ]) | st.binary(max_size=100))
    return b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n" + after


# -- the test --------------------------------------------------------------------------------


def _throw(port: int, data: bytes, half_close: bool, reset: bool) -> None:
    """Send ``data`` on a fresh connection, read until the proxy closes or the deadline.

    ``reset`` closes with RST instead of FIN, after the read: by then the proxy is serving
    the connection. (A reset before the proxy has looked at the connection is
    test_hardening.py::test_connect_and_reset_at_once.)
    """
    with socket.create_connection(("127.0.0.1", port), timeout=EXAMPLE_DEADLINE) as sock:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + EXAMPLE_DEADLINE
            while time.monotonic() < deadline and sock.recv(65536):
                pass
        except OSError:  # timeouts, resets, broken pipes: the proxy may close at any time
            pass



@pytest.mark.parametrize("resets", [
    False, True,
])
def test_fuzzed_requests_never_hurt_the_proxy(make_proxy, origin, tls_origin, caplog,
                                              monkeypatch, resets):
    """``resets``: clients may close with RST instead of FIN."""
    monkeypatch.setattr(logging.getLogger("nectoproxy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="nectoproxy")
    config = {"proxy": {"header_timeout": 0.5, "idle_timeout": 0.5, "read_timeout": 2.0,
                        "connect_timeout": 1.0, "tls_handshake_timeout": 0.5}}
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]  # nothing listens there
    with make_proxy(config=config) as proxy:
        with proxy.client() as client:  # warm up: leaf certificate, thread pools, imports
            assert client.get(origin.url + "/").status_code == 200
            assert client.get(f"https://localhost:{tls_origin.port}/").status_code == 200
        start_fds = _open_fds()
        examples = {"count": 0}

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(data=st.one_of(request_bytes(origin.url, tls_origin.port, closed_port),
                              connect_junk(tls_origin.port),
                              st.binary(max_size=500)),
               pipelined=st.booleans(), half_close=st.booleans(), reset=st.booleans())
        def fuzz(data: bytes, pipelined: bool, half_close: bool, reset: bool) -> None:
            examples["count"] += 1
            if pipelined:  # a good request after the bad one, in the same send
                data += f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            _throw(proxy.port, data, half_close, reset and resets)

        if resets:  # always try the simplest reset: an incomplete head, then RST
            fuzz = example(data=f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n".encode(),
                           pipelined=False, half_close=False, reset=True)(fuzz)
        fuzz()

        with proxy.client() as client:  # still serving, both ways
            assert client.get(origin.url + "/json").json() == {"hello": "world", "n": 1}
            response = client.get(f"https://localhost:{tls_origin.port}/json")
            assert response.json() == {"hello": "world", "n": 1}
        sessions = proxy.proxy.services.sessions
        assert _wait_until(lambda: not sessions, 10), f"{len(sessions)} sessions left"
        assert _wait_until(lambda: _open_fds() <= start_fds + 3, 10), (start_fds, _open_fds())
    assert examples["count"] >= 100
    assert origin.errors == [] and tls_origin.errors == []
    assert "Traceback" not in caplog.text
    assert "unexpected error" not in caplog.text
