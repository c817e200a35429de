"""Issue 4, streaming: the switch from buffering to streaming, back-pressure, 1 GiB bodies.

The memory tests run NectoProxy as a separate process (``python -m nectoproxy``) so that
``/proc/PID/status`` measures the proxy alone; clients and origins stay in this process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

from nectoproxy.testing.origin import (
    Origin,
    RawServer,
    free_port,
    pattern_bytes,
    pattern_sha256,
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
LIMIT = 64 * KIB  # body_buffer_limit for the switch tests
SIZES = [1000, LIMIT, LIMIT + 1, 3 * MIB + 5]


class Watcher:
    """Implements on_request/on_response, so the proxy tries to buffer every body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bool, int | None]] = []
        self.responses: list[tuple[str, bool, int | None]] = []

    def on_request(self, flow):
        body = flow.request.raw_content
        self.requests.append((flow.request.path, flow.request.streamed,
                              None if body is None else len(body)))

    def on_response(self, flow):
        body = flow.response.raw_content
        self.responses.append((flow.request.path, flow.response.streamed,
                               None if body is None else len(body)))


@pytest.fixture
def watched(make_proxy):
    watcher = Watcher()
    with make_proxy(plugins=[watcher], config={"proxy": {"body_buffer_limit": LIMIT}}) as proxy:
        yield proxy, watcher


# -- buffering switches to streaming mid-way -------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_download_switches_to_streaming(watched, origin, tls_origin, scheme, framing, size):
    proxy, watcher = watched
    base = origin.url if scheme == "http" else f"https://localhost:{tls_origin.port}"
    query = {"length": "", "chunked": "?chunked=1", "close": "?close=1"}[framing]
    path = f"/bytes/{size}{query}"
    digest, length = hashlib.sha256(), 0
    with proxy.client() as client, client.stream("GET", base + path) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            length += len(chunk)
    assert (length, digest.hexdigest()) == (size, pattern_sha256(size))
    streamed = size > LIMIT
    assert watcher.responses == [(path, streamed, None if streamed else size)]
    assert watcher.requests == [(path, False, 0)]


def _pieces(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_upload_switches_to_streaming(watched, origin, tls_origin, scheme, framing, size):
    proxy, watcher = watched
    server = origin if scheme == "http" else tls_origin
    url = (origin.url if scheme == "http" else f"https://localhost:{tls_origin.port}") + "/upload"
    body = pattern_bytes(size, seed=7)
    # Odd-sized pieces: the limit is crossed in the middle of a chunk.
    content = _pieces(body, 1000) if framing == "chunked" else body
    with proxy.client() as client:
        response = client.post(url, content=content)
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": size}
    streamed = size > LIMIT
    assert watcher.requests == [("/upload", streamed, None if streamed else size)]
    seen = server.requests[-1]
    if streamed:  # streamed bodies keep their framing
        assert (seen.header("transfer-encoding") == "chunked") == (framing == "chunked")


def test_raw_chunked_upload_with_tiny_chunks_and_extensions(watched, origin):
    """Hundreds of small chunks (with chunk extensions) crossing the limit on a raw socket."""
    proxy, watcher = watched
    body = pattern_bytes(LIMIT * 3 + 17, seed=3)
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in _pieces(body, 777))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"POST {origin.url}/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + framed + b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(f'{{"sha256": "{hashlib.sha256(body).hexdigest()}", '
                          f'"length": {len(body)}}}'.encode())
    assert watcher.requests == [("/upload", True, None)]


# -- the proxy as a separate process, for memory figures -------------------------------------


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    ca_path: Path

    def status_mib(self, field: str) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise KeyError(field)

    def rss(self) -> float:
        return self.status_mib("VmRSS")

    def hwm(self) -> float:
        return self.status_mib("VmHWM")

    def reset_hwm(self) -> bool:
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def big_origins(origin_ca) -> Iterator[tuple[Origin, Origin]]:
    with Origin() as plain, Origin(tls=True, ca=origin_ca) as tls:
        yield plain, tls


@pytest.fixture(scope="module")
def proxy_process(shared_certs_dir, origin_ca_path, big_origins) -> Iterator[ProxyProcess]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nectoproxy", "--no-config", "--no-entry-points",
             "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--certs-dir", str(shared_certs_dir), "--upstream-ca", origin_ca_path, "-q"],
            stdout=log, stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, "the proxy exited at start-up"
                assert time.monotonic() < deadline, "the proxy does not listen"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            running = ProxyProcess(process, port, shared_certs_dir / "ca.pem")
            plain, tls = big_origins
            for url, target in ((plain.url + "/bytes/300000", None),  # warm up both paths
                                ("/bytes/300000", f"localhost:{tls.port}")):
                assert fetch(running, url, target).sha256 == pattern_sha256(300000)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            log.seek(0)
            output = log.read().decode(errors="replace")
        assert "Traceback" not in output, output


@dataclass
class Fetched:
    status: int
    length: int
    sha256: str
    body: bytes


def _connect(proxy: ProxyProcess, target: str | None, rcvbuf: int = 0) -> socket.socket:
    """A socket to the proxy; with ``target``, a TLS socket through CONNECT to it."""
    sock = socket.socket()
    if rcvbuf:  # before connecting, so that the TCP window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", proxy.port))
    except OSError:
        sock.close()
        raise
    if target is None:
        return sock
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 200"), head
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    return context.wrap_socket(sock, server_hostname="localhost")


def fetch(proxy: ProxyProcess, url: str, target: str | None = None, *, upload: int = 0,
          slow: float = 0.0, time_limit: float = 60, rcvbuf: int = 0,
          busy: bool = False, settle: float = 0.0) -> Fetched:
    """One request on a raw (TLS) socket; the response body is hashed as it is read, never
    kept whole. ``upload`` sends that many pattern bytes; ``slow`` sleeps after each 64 KiB
    read (bounded by ``time_limit``). ``busy``: the proxy is stopped (SIGSTOP) while the
    client connects and fills the socket buffers with its head and first bytes, as when the
    proxy's event loop lags behind a fast client. ``settle``: wait that long between
    connecting and sending (the proxy is then already waiting for the first bytes)."""
    block = pattern_bytes(MIB)
    sent = min(upload, MIB)
    pending = memoryview((f"{'POST' if upload else 'GET'} {url} HTTP/1.1\r\nHost: localhost"
                          f"\r\nConnection: close\r\nContent-Length: {upload}\r\n\r\n"
                          ).encode() + block[:sent])  # like real clients: head and body at once
    if busy:
        assert target is None
        os.kill(proxy.process.pid, signal.SIGSTOP)
    try:
        sock = _connect(proxy, target, rcvbuf)
        try:
            if busy:
                sock.setblocking(False)
                while sent <= 16 * MIB:  # as much as the kernel takes without the proxy
                    try:
                        pending = pending[sock.send(pending):]
                    except BlockingIOError:
                        break
                    if not pending:
                        if sent >= upload:
                            break
                        pending = memoryview(block[: min(MIB, upload - sent)])
                        sent += len(pending)
                sock.settimeout(30)
        except BaseException:
            sock.close()
            raise
    finally:
        if busy:
            os.kill(proxy.process.pid, signal.SIGCONT)
    with sock:
        time.sleep(settle)
        sock.sendall(pending)
        while sent < upload:
            piece = block[: min(MIB, upload - sent)]
            sock.sendall(piece)
            sent += len(piece)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        expected = int(fields[b"Content-Length"])
        digest, length, kept = hashlib.sha256(rest), len(rest), bytearray(rest[:4096])
        buffer = bytearray(64 * KIB)
        view = memoryview(buffer)
        deadline = time.monotonic() + time_limit
        while length < expected:
            assert time.monotonic() < deadline, f"only {length} of {expected} bytes in time"
            n = sock.recv_into(buffer)
            if not n:
                break
            digest.update(view[:n])
            if len(kept) < 4096:
                kept += view[: min(n, 4096 - len(kept))]
            length += n
            if slow:
                time.sleep(slow)
        return Fetched(int(head[9:12]), length, digest.hexdigest(), bytes(kept))


class Sampler:
    """Samples the proxy's VmRSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.peak = proxy.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proxy.rss())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@functools.cache
def expected_sha256(n: int) -> str:
    return pattern_sha256(n)


# -- back-pressure ---------------------------------------------------------------------------


def test_slow_reader_applies_back_pressure(proxy_process, big_origins):
    plain, _ = big_origins
    size = 256 * MIB
    start = proxy_process.rss()
    started = time.monotonic()
    with Sampler(proxy_process) as sampler:
        # 64 KiB, then a 1 ms nap: several times slower than the origin can send.
        got = fetch(proxy_process, f"{plain.url}/bytes/{size}", slow=0.001, time_limit=90,
                    rcvbuf=64 * KIB)
    elapsed = time.monotonic() - started
    growth = sampler.peak - start
    print(f"\n[slow reader] 256 MiB in {elapsed:.1f}s ({size / MIB / elapsed:.0f} MiB/s): "
          f"proxy RSS {start:.1f} -> peak {sampler.peak:.1f} MiB (growth {growth:.1f} MiB)")
    assert (got.status, got.length, got.sha256) == (200, size, expected_sha256(size))
    assert growth < 64, f"the proxy's RSS grew by {growth:.1f} MiB behind a slow reader"


def test_slow_origin_reader_applies_back_pressure(proxy_process):
    """The other direction: a fast client uploads to an origin that reads slowly."""
    size = 256 * MIB
    received = {"bytes": 0}
    digest = hashlib.sha256()

    def handler(sock: socket.socket) -> None:
        sock.settimeout(30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        body = data.partition(b"\r\n\r\n")[2]
        digest.update(body)
        received["bytes"] = len(body)
        deadline = time.monotonic() + 90
        while received["bytes"] < size and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            digest.update(chunk)
            received["bytes"] += len(chunk)
            time.sleep(0.001)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    start = proxy_process.rss()
    started = time.monotonic()
    with RawServer(handler) as server, Sampler(proxy_process) as sampler:
        got = fetch(proxy_process, f"{server.url}/upload", upload=size, busy=True)
    elapsed = time.monotonic() - started
    growth = sampler.peak - start
    print(f"\n[slow origin] 256 MiB upload in {elapsed:.1f}s: proxy RSS {start:.1f} -> peak "
          f"{sampler.peak:.1f} MiB (growth {growth:.1f} MiB)")
    assert (got.status, got.body) == (200, b"ok")
    assert received["bytes"] == size and digest.hexdigest() == expected_sha256(size)
    assert growth < 64, f"the proxy's RSS grew by {growth:.1f} MiB behind a slow origin"


# -- 1 GiB each way, HTTP and HTTPS ----------------------------------------------------------


@pytest.mark.parametrize("direction", ["download", "upload"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_one_gib_byte_exact_with_flat_memory(proxy_process, big_origins, scheme, direction):
    plain, tls = big_origins
    target = None if scheme == "http" else f"localhost:{tls.port}"
    base = plain.url if scheme == "http" else ""
    start = proxy_process.rss()
    reset = proxy_process.reset_hwm()
    started = time.monotonic()
    if direction == "download":
        got = fetch(proxy_process, f"{base}/bytes/{GIB}", target, time_limit=120)
        assert (got.status, got.length, got.sha256) == (200, GIB, expected_sha256(GIB))
    else:
        # Head and body sent at once: the proxy must still read only as fast as it forwards.
        got = fetch(proxy_process, f"{base}/upload", target, upload=GIB)
        assert got.status == 200
        assert got.body.decode() == f'{{"sha256": "{expected_sha256(GIB)}", "length": {GIB}}}'
    elapsed = time.monotonic() - started
    peak = proxy_process.hwm()
    growth = peak - start
    print(f"\n[1 GiB {scheme} {direction}] {elapsed:.1f}s ({GIB / MIB / elapsed:.0f} MiB/s): "
          f"proxy RSS {start:.1f} MiB, peak (VmHWM{'' if reset else ', not reset'}) "
          f"{peak:.1f} MiB, growth {growth:.1f} MiB")
    assert growth < 100, f"the proxy's peak RSS grew by {growth:.1f} MiB"
