"""Issue 18: malformed SOCKS5 greetings, authentication, commands and addresses (hypothesis)
against one running socks5 listener, over raw sockets, as test_fuzz.py does for HTTP.

The proxy must answer or close every connection, never log a traceback, never leak a file
descriptor or a session, and serve a good client afterwards. Bounded: 200 examples with and 200
without authentication, each on its own connection with a short deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire import wait_until

EXAMPLE_DEADLINE = 0.3  # seconds an example waits for the proxy to answer or close
JSON = b'{"hello": "world", "n": 1}'
_SUCCESS = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # the reply that opens a tunnel


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _pick(draw, choices: list, binary_size: int | None = None, *, min_size: int = 0):
    """One of ``choices`` (the first, the good one, three times in four), or one time in
    eight random bytes."""
    if binary_size is not None and draw(st.integers(0, 7)) == 0:
        return draw(st.binary(min_size=min_size, max_size=binary_size))
    if draw(st.integers(0, 3)) > 0:
        return choices[0]
    return draw(st.sampled_from(choices))


@st.composite
def socks_bytes(draw, origin_port: int, tls_port: int, closed_port: int, auth: bool) -> bytes:
    """A SOCKS5 exchange, good or broken at each step (mostly good, so that most examples
    reach the next step), then whatever follows it; one time in four a whole good handshake
    with only what follows it drawn."""
    after = _pick(draw, [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", b"\x16\x03\x01\x00\x05hello",
        b"\x16\x03\x01\xff\xff" + b"\x00" * 50, b"\x16", b"GARBAGE\r\n\r\n",
    ], 60)
    if draw(st.integers(0, 3)) == 0:
        good = b"\x05\x01\x02\x01\x04user\x06s3cret" if auth else b"\x05\x01\x00"
        target = _pick(draw, [b"\x03\x09localhost", b"\x01\x7f\x00\x00\x01",
                              b"\x04" + socket.inet_pton(socket.AF_INET6, "::1")])
        port = _pick(draw, [origin_port, tls_port, closed_port])
        return good + b"\x05\x01\x00" + target + struct.pack("!H", port) + after
    version = _pick(draw, [5, 4, 0, 0xFF])
    methods = _pick(draw, [b"\x00\x02", b"\x00", b"\x02", b"", b"\x01\x03\x80"], 5)
    count = _pick(draw, [len(methods), 0, 255])
    data = bytes([version, count]) + methods
    if draw(st.integers(0, 9)) < (8 if auth else 2):  # RFC 1929, right or wrong
        user = _pick(draw, [b"user", b"", b"u" * 255], 8)
        password = _pick(draw, [b"s3cret", b"wrong", b""], 8)
        data += bytes([_pick(draw, [1, 5, 0])])
        data += bytes([len(user)]) + user + bytes([len(password)]) + password
    command = _pick(draw, [1, 2, 3, 0, 0xFF])
    kind = _pick(draw, [3, 1, 4, 0, 2, 9])
    if kind == 1:
        address = _pick(draw, [b"\x7f\x00\x00\x01", b"\x00\x00\x00\x00",
                               b"\xff\xff\xff\xff"], 4, min_size=4)
    elif kind == 4:
        address = _pick(draw, [socket.inet_pton(socket.AF_INET6, "::1"), b"\x00" * 16], 16,
                        min_size=16)
    else:
        name = _pick(draw, [b"localhost", b"127.0.0.1", b"", b"a" * 255, b"bad name", b"\x00",
                            b"\xff\xfe", b"[::1]"], 20)
        address = bytes([_pick(draw, [len(name), 0, 255])]) + name
    port = _pick(draw, [origin_port, tls_port, closed_port, 0, 65535])
    data += bytes([_pick(draw, [5, 4]), command, _pick(draw, [0, 1])])
    data += bytes([kind]) + address + struct.pack("!H", port) + after
    if draw(st.integers(0, 3)) == 0:
        data = data[:draw(st.integers(0, len(data)))]  # cut anywhere
    return data


def _throw(port: int, data: bytes, half_close: bool) -> bytes:
    """Send ``data`` on a fresh connection; what came back until the proxy closed or the
    deadline."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=EXAMPLE_DEADLINE) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + EXAMPLE_DEADLINE
            while time.monotonic() < deadline and (chunk := sock.recv(65536)):
                received += chunk
        except OSError:  # timeouts, resets, broken pipes: the proxy may close at any time
            pass
    return received


@pytest.mark.parametrize("auth", [False, True])
def test_fuzzed_socks_input_never_hurts_the_proxy(make_proxy, origin, tls_origin, caplog,
                                                  monkeypatch, auth):
    """``auth``: username/password required (without, more examples reach the request)."""
    monkeypatch.setattr(logging.getLogger("nectoproxy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="nectoproxy")
    config = {"proxy": {"listen": ["socks5@0"], "proxy_auth": "user:s3cret" if auth else "",
                        "header_timeout": 0.5, "idle_timeout": 0.5, "read_timeout": 2.0,
                        "connect_timeout": 1.0, "tls_handshake_timeout": 0.5}}
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]  # nothing listens there
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def good_client() -> bytes:
        return subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--socks5-hostname",
             f"{'user:s3cret@' if auth else ''}127.0.0.1:{proxy.port}", "--cacert", str(proxy.ca_path),
             f"https://localhost:{tls_origin.port}/json"],
            env=env, capture_output=True, timeout=30, check=False).stdout

    with make_proxy(config=config) as proxy:
        assert good_client() == JSON  # warm up: leaf certificate, thread pools, imports
        start_fds = _open_fds()
        examples = {"count": 0, "tunnels": 0}

        @settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(data=st.one_of(socks_bytes(origin.port, tls_origin.port, closed_port, auth),
                              st.binary(max_size=100)),
               half_close=st.booleans())
        def fuzz(data: bytes, half_close: bool) -> None:
            examples["count"] += 1
            received = _throw(proxy.port, data, half_close)
            examples["tunnels"] += _SUCCESS in received

        fuzz()
        assert good_client() == JSON  # still serving
        sessions = proxy.proxy.services.sessions
        assert wait_until(lambda: not sessions, 10), f"{len(sessions)} sessions left"
        assert wait_until(lambda: _open_fds() <= start_fds + 3, 10), (start_fds, _open_fds())
    assert examples["count"] >= 100
    assert origin.errors == [] and tls_origin.errors == []
    assert "Traceback" not in caplog.text
    assert "unexpected error" not in caplog.text
    assert "SOCKS5 client 127.0.0.1" in caplog.text  # bad input was logged
    assert examples["tunnels"] >= 20  # and many examples got as far as a tunnel
