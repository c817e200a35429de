"""Raw-socket helpers shared by the tests that speak HTTP/1.1 bytes themselves."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

#: Per socket operation of a helper origin.
TIMEOUT = 30.0
#: A request head larger than this is a bug in the test, not a slow peer.
MAX_HEAD = 1024 * 1024

UPGRADE_REQUEST = ("GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")


def read_head(sock: socket.socket, initial: bytes = b"") -> tuple[bytes, bytes]:
    """(the message head without its blank line, the bytes read after it)."""
    data = initial
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
        assert len(data) < MAX_HEAD, data[:200]
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def recv_exactly(sock: socket.socket, n: int, initial: bytes = b"") -> bytes:
    """Exactly ``n`` bytes (``initial`` counts): fails on EOF before, or on bytes beyond."""
    data = bytearray(initial)
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    assert len(data) == n, f"{len(data) - n} bytes too many"
    return bytes(data)


def upgrade_echo(sock: socket.socket) -> None:
    """An origin (a RawServer handler) that accepts an Upgrade, says "hello", echoes every
    byte upper-cased until the client half-closes, then sends "BYE"."""
    sock.settimeout(TIMEOUT)
    head, rest = read_head(sock)
    assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: dummy\r\n\r\nhello")
    if rest:
        sock.sendall(rest.upper())
    while chunk := sock.recv(65536):
        sock.sendall(chunk.upper())
    sock.sendall(b"BYE")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
