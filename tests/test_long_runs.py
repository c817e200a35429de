"""What a proxy that runs for days must not do: keep something for every connection an origin
closes, hold on to clients that went away, or let a crowd of clients take more sockets than
``max_connections`` allows.

The figures behind these tests (RSS over minutes, storms of thousands of clients) come from
``benchmarks/soak.py``; these tests check the mechanisms, without timing anything.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from wire import wait_until

from nectoproxy.flow import Flow
from nectoproxy.proxy.exchange import Exchange
from nectoproxy.proxy.session import ClientSession
from nectoproxy.proxy.transport import TransportStream
from nectoproxy.proxy.upstream import Upstream
from nectoproxy.testing.origin import RawServer, free_port

#: Types whose instances live as long as a connection or a flow.
ENGINE_TYPES = (TransportStream, Upstream, ClientSession, Exchange, Flow, ssl.SSLObject,
                ssl.MemoryBIO)


def live_engine_objects() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects()
                               if isinstance(o, ENGINE_TYPES))


class ErrorLog:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_error(self, flow: Flow, error: str) -> None:
        self.errors.append(error)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port where a TCP connect hangs: its listen queue is full and nothing accepts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=5)
    try:
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashed or lost its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- what stays behind ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/bytes/100000?close=1", "/close"])
def test_origin_closed_exchanges_leave_no_engine_objects_behind(make_proxy, tls_origin, path):
    """HTTPS through one keep-alive client, the origin closing its connection every time
    (close-delimited bodies; closing without an answer, a 502): afterwards the same engine
    objects are alive as before (none more of any kind)."""
    url = f"https://localhost:{tls_origin.port}{path}"
    with make_proxy() as proxy, proxy.client() as client:
        for _ in range(3):
            client.get(url)
        before = live_engine_objects()
        for _ in range(60):
            response = client.get(url)
            assert response.status_code in (200, 502)
        tls_origin.requests.clear()
        assert wait_until(lambda: not live_engine_objects() - before), \
            live_engine_objects() - before
        assert len(proxy.proxy.services.pool) == 0  # (an origin-closed connection is not kept)


# -- clients that go away -----------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET {url}/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST {url}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 5000,
], ids=["get", "post-mid-body"])
def test_client_reset_while_the_origin_is_being_connected(start_proxy, blackhole, request_bytes):
    log = ErrorLog()
    config = {"proxy": {"connect_timeout": 60.0}}
    with start_proxy(plugins=[log], config=config) as proxy:
        baseline = open_fds()
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(request_bytes.replace(b"{url}", f"http://127.0.0.1:{blackhole}".encode()))
        # Our socket, the proxy's end of it, and the proxy's socket connecting to the origin.
        assert wait_until(lambda: open_fds() >= baseline + 3)
        reset(sock)
        assert wait_until(lambda: log.errors), "the flow did not end"
        assert wait_until(lambda: open_fds() <= baseline), "the origin socket stayed open"
        assert proxy.proxy.services.sessions == set()
    assert log.errors == ["client reset the connection"]


def test_client_reset_inside_tls_while_the_origin_is_being_connected(make_proxy, blackhole):
    """Intercepted HTTPS: the eager origin connect, and the request waiting for it."""
    log = ErrorLog()
    with make_proxy(plugins=[log], config={"proxy": {"connect_timeout": 60.0}}) as proxy:
        baseline = open_fds()
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        raw.sendall(f"CONNECT localhost:{blackhole} HTTP/1.1\r\nHost: localhost:{blackhole}\r\n\r\n"
                    .encode())
        answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        context = ssl.create_default_context(cafile=str(proxy.ca_path))
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert wait_until(lambda: proxy.proxy.services.sessions
                          and any(s.exchange for s in proxy.proxy.services.sessions))
        reset(tls)
        assert wait_until(lambda: log.errors), "the flow did not end"
        assert wait_until(lambda: open_fds() <= baseline), "the origin socket stayed open"
    assert log.errors == ["client reset the connection"]


def test_client_reset_while_the_origin_thinks(start_proxy):
    """The origin has the request and has not answered yet: its connection is closed as soon
    as the client resets, not when the origin answers or read_timeout passes."""
    log = ErrorLog()
    got_request, origin_saw_eof = threading.Event(), threading.Event()

    def never_answers(sock: socket.socket) -> None:
        sock.settimeout(30)
        sock.recv(65536)
        got_request.set()
        try:
            if sock.recv(65536) == b"":
                origin_saw_eof.set()
        except OSError:
            origin_saw_eof.set()

    with RawServer(never_answers) as origin, start_proxy(plugins=[log]) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert got_request.wait(10)
        reset(sock)
        assert origin_saw_eof.wait(10), "the origin connection was not closed"
        assert wait_until(lambda: log.errors)
    assert log.errors == ["client reset the connection"]


def test_client_half_closed_after_its_request_still_gets_the_answer(start_proxy, origin):
    """A FIN after a whole request is a half-close, not a departure: the origin's late answer
    still reaches the client."""
    with start_proxy() as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with sock:
            sock.sendall(f"GET {origin.url}/slow?delay=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
                         .encode())
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"slow"), reply


def test_client_closing_mid_body_while_the_origin_is_connected_ends_the_flow(make_proxy,
                                                                           blackhole):
    """A FIN with most of a Content-Length body missing: the client cannot finish, so the
    origin attempt is dropped at once."""
    log = ErrorLog()
    with make_proxy(plugins=[log], config={"proxy": {"connect_timeout": 60.0}}) as proxy:
        baseline = open_fds()
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(f"POST http://127.0.0.1:{blackhole}/ HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b"x" * 100)
        assert wait_until(lambda: open_fds() >= baseline + 3)  # (the origin connect is on)
        sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: log.errors), "the flow did not end"
        assert wait_until(lambda: open_fds() <= baseline + 1)  # (our end of the client socket)
        sock.close()
    assert log.errors == ["client closed the connection mid-body"]


# -- a crowd of clients -------------------------------------------------------------------------


def proxy_process(tmp_path: Path, env: dict[str, str], preexec: Callable[[], None] | None = None
                  ) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nectoproxy", "--no-config", "--no-entry-points", "-q",
         "--listen-host", "127.0.0.1", "--listen-port", str(port)],
        env={"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(tmp_path),
             "NECTOPROXY_WEB_PORT": "0", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=preexec)  # noqa: PLW1509 - sets a resource limit, nothing a thread holds
    if not wait_until(lambda: _listening(port) or process.poll() is not None, 30):
        process.kill()
    if process.poll() is not None:
        raise AssertionError(process.communicate()[1])
    return process, port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _open_files(fd_dir: str) -> list[str]:
    """What each of a process's file descriptors is (socket:[inode], pipe:[...], a path)."""
    files = []
    for name in sorted(os.listdir(fd_dir), key=int):
        with contextlib.suppress(OSError):
            files.append(f"{name}->{os.readlink(os.path.join(fd_dir, name))}")
    return files


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


def _reads_forever(sock: socket.socket) -> None:
    sock.settimeout(60)
    while sock.recv(65536):
        pass


@pytest.fixture
def silent_origin() -> Iterator[RawServer]:
    """An origin that reads requests and never answers."""
    with RawServer(_reads_forever) as server:
        yield server


def test_a_storm_of_vanishing_clients_stays_within_max_connections(tmp_path, silent_origin):
    """64 clients held while 2,000 more come and vanish mid-body (reset), all bound for an
    origin that reads and never answers: the proxy's open files never exceed what
    max_connections
    allows (3 per connection: client, origin, a pooled origin connection; plus the refusals
    being answered, at most max(8, max_connections / 8), and a margin of 64), and every one
    is released afterwards."""
    max_connections = 64
    bound = 3 * max_connections + 8 + 64
    origin = silent_origin
    process, port = proxy_process(tmp_path, {"NECTOPROXY_PROXY_MAX_CONNECTIONS": "64"})
    fd_dir = f"/proc/{process.pid}/fd"
    peak = baseline = len(os.listdir(fd_dir))
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, len(os.listdir(fd_dir)))
            except OSError:
                return
            time.sleep(0.002)

    request = (f"POST {origin.url}/upload HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 1000000\r\n\r\n").encode() + b"x" * 5000
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    held = []
    try:
        for _ in range(100):  # more than may be served: 64 held, the rest refused
            assert process.poll() is None
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            held.append(sock)
        remaining = [2000]
        lock = threading.Lock()

        def storm() -> None:
            while True:
                with lock:
                    if not remaining[0]:
                        return
                    remaining[0] -= 1
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    sock.sendall(request)
                    reset(sock)
                except OSError:
                    pass  # refused and closed at once: that is what a storm may get

        threads = [threading.Thread(target=storm) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert remaining == [0]
    finally:
        for sock in held:
            reset(sock)
    released = wait_until(lambda: len(os.listdir(fd_dir)) <= baseline, 30)
    left = [] if released else _open_files(fd_dir)  # (read before the process is gone)
    done.set()
    sampler.join(5)
    stderr = stop(process)
    assert peak <= baseline + bound, f"{peak} open files (baseline {baseline}): {stderr[-2000:]}"
    assert released, (f"{len(left)} fds after the storm (baseline {baseline}): {left}; "
                      f"{stderr[-2000:]}")
    assert "Traceback" not in stderr
    assert stderr.count("refused") < 50  # refusals are logged once per 10 s, not each


def _limit_open_files(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit")


def test_open_file_limit_is_raised_to_the_hard_limit(tmp_path):
    process, _ = proxy_process(tmp_path, {}, _limit_open_files(256, 8192))
    try:
        assert _soft_limit(process.pid) == 8192
    finally:
        stderr = stop(process)
    assert "open files" not in stderr


def test_max_connections_beyond_the_open_file_limit_warns(tmp_path):
    process, _ = proxy_process(tmp_path, {}, _limit_open_files(512, 512))
    stderr = stop(process)
    assert "proxy.max_connections needs up to" in stderr and "the limit is 512" in stderr



def test_memory_is_handed_back_once_a_crowd_has_gone():
    from nectoproxy.proxy.memory import RELEASE_AFTER_DROP, PeakTracker, release_free_memory

    peaks = PeakTracker()
    assert not peaks.should_release(10)
    assert not peaks.should_release(10 + RELEASE_AFTER_DROP)
    assert peaks.should_release(9)  # fell by RELEASE_AFTER_DROP + 1 from the peak
    assert not peaks.should_release(9)  # once per fall
    release_free_memory()  # (glibc's malloc_trim here; nothing where there is none)
