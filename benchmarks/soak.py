"""A bounded soak test (issue 4): minutes of mixed traffic through NectoProxy on loopback.

    python benchmarks/soak.py [--duration 300] [--workers 8] [--report-every 15]
                              [--only SCENARIO[,SCENARIO...]]

Starts the fake origins of ``nectoproxy.testing.origin`` (plain and TLS) in this process and
NectoProxy as a separate process (``python -m nectoproxy``), then runs worker threads that mix
plain and HTTPS requests, uploads, downloads, expected errors (500, refused, origin closing),
malformed requests, clients that vanish mid-request, storms of clients that vanish at once,
keep-alive and new connections, WebSockets (plain and wss, to echo origins), requests through
its SOCKS5 listener and to its reverse-mode listener, HTTP/2 (httpx, streams at once) to
HTTP/1.1 and HTTP/2 origins. Every answer is checked (status, sha256
of bodies, echoed messages).

It judges what it prints (exit status 1 if any fails): no failed request, no traceback in the
proxy's log; the RSS slope after the first two minutes under 1 MiB per 10 minutes (judged on
runs of 5 minutes or more); and, after settling, no more open fds than at the start once
the origin connections the proxy keeps idle in its pool (for reuse) are told apart. Not a
test: CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import trustme

from nectoproxy.testing.h2origin import H2Origin
from nectoproxy.testing.origin import Origin, free_port, pattern_bytes, pattern_sha256

MIB = 1024 * 1024
#: RSS is sampled this often (seconds); the slope is fitted to the samples after WARM_UP.
SAMPLE_EVERY = 5.0
WARM_UP = 120.0
#: The goal: RSS grows by less than this many MiB per 10 minutes once warmed up.
SLOPE_GOAL = 1.0


# -- /proc -----------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connections_to(pid: int, ports: set[int]) -> int:
    """How many of the process's sockets are TCP connections to one of ``ports`` (the
    origins): the idle connections its pool keeps, when no request is running."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[9] in inodes and remote_port in ports and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


def slope_mib_per_10min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, RSS KiB) samples, in MiB per 10 minutes."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 600 / 1024


class Figures:
    """What /proc says about the proxy, sampled now and then."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kib = 0
        self.peak_fds = 0

    def sample(self) -> tuple[int, int, int]:
        rss = status_kib(self.pid, "VmRSS")
        fds = open_fds(self.pid)
        threads = status_kib(self.pid, "Threads")
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_fds = max(self.peak_fds, fds)
        return rss, fds, threads


# -- the traffic -----------------------------------------------------------------------------


class Failure(Exception):
    """An answer that is not what the scenario expects."""


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self.bytes_up = 0
        self.bytes_down = 0

    def ok(self, scenario: str, up: int = 0, down: int = 0) -> None:
        with self.lock:
            self.served[scenario] += 1
            self.bytes_up += up
            self.bytes_down += down

    def fail(self, scenario: str, kind: str, detail: str) -> None:
        key = f"{scenario}: {kind}"
        with self.lock:
            self.failures[key] += 1
            self.examples.setdefault(key, detail[:300])


class Worker:
    """One thread's share of the traffic: a keep-alive client per scheme, plus raw sockets."""

    def __init__(self, soak: Soak, seed: int) -> None:
        self.soak = soak
        self.random = random.Random(seed)
        self.keep_alive = soak.client()

    def close(self) -> None:
        self.keep_alive.close()

    def _client(self) -> tuple[httpx.Client, bool]:
        """The worker's keep-alive client, or (one time in three) a new one."""
        if self.random.random() < 0.33:
            return self.soak.client(), True
        return self.keep_alive, False

    def _url(self, path: str) -> str:
        if self.random.random() < 0.5:
            return self.soak.origin.url + path
        return f"https://localhost:{self.soak.tls_origin.port}{path}"

    # Scenarios return (bytes up, bytes down) or raise Failure.

    def get_small(self) -> tuple[int, int]:
        client, new = self._client()
        try:
            response = client.get(self._url("/json"))
        finally:
            if new:
                client.close()
        if response.status_code != 200 or response.json() != {"hello": "world", "n": 1}:
            raise Failure(f"status {response.status_code}", response.text[:200])
        return 0, len(response.content)

    def download(self) -> tuple[int, int]:
        size = self.random.choice([100_000, 1 * MIB, 4 * MIB + 3])
        framing = self.random.choice(["", "?chunked=1", "?close=1"])
        client, new = self._client()
        digest, length = hashlib.sha256(), 0
        try:
            with client.stream("GET", self._url(f"/bytes/{size}{framing}")) as response:
                for chunk in response.iter_raw():
                    digest.update(chunk)
                    length += len(chunk)
                status = response.status_code
        finally:
            if new:
                client.close()
        if status != 200 or digest.hexdigest() != self.soak.sha(size):
            raise Failure(f"status {status} / bad body", f"{length} of {size} bytes")
        return 0, length

    def upload(self) -> tuple[int, int]:
        size = self.random.choice([10_000, 1 * MIB, 3 * MIB + 1])
        body = pattern_bytes(size, seed=5)
        chunked = self.random.random() < 0.5
        content: Any = (body[i:i + 100_000] for i in range(0, size, 100_000)) if chunked \
            else body
        client, new = self._client()
        try:
            response = client.post(self._url("/upload"), content=content)
        finally:
            if new:
                client.close()
        expected = {"sha256": self.soak.sha(size, seed=5), "length": size}
        if response.status_code != 200 or response.json() != expected:
            raise Failure(f"status {response.status_code} / bad upload", response.text[:200])
        return size, 0

    def expected_error(self) -> tuple[int, int]:
        which = self.random.choice(["500", "refused", "origin-closes", "404"])
        path, want = {"500": ("/status/500", 500), "404": ("/nothing", 404),
                      "origin-closes": ("/close", 502), "refused": (None, 502)}[which]
        url = (f"http://127.0.0.1:{self.soak.closed_port}/" if path is None
               else self._url(path))
        client, new = self._client()
        try:
            response = client.get(url)
        finally:
            if new:
                client.close()
        if response.status_code != want:
            raise Failure(f"{which}: status {response.status_code}, wanted {want}",
                          response.text[:200])
        return 0, len(response.content)

    def bad_request(self) -> tuple[int, int]:
        origin = self.soak.origin.url
        data, want = self.random.choice([
            (b"GARBAGE\x00 NOT HTTP\r\n\r\n", b"HTTP/1.1 400"),
            (f"POST {origin}/echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
             "abcd".encode(), b"HTTP/1.1 400"),
            (f"GET {origin}/ HTTP/1.1\r\nBad Header : x\r\n\r\n".encode(), b"HTTP/1.1 400"),
            (f"POST {origin}/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
             .encode(), b"HTTP/1.1 400"),
            (b"CONNECT nowhere HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
            (b"GET /relative HTTP/1.1\r\nHost: example.test\r\n\r\n", b"HTTP/1.1 400"),
        ])
        with socket.create_connection(("127.0.0.1", self.soak.port), timeout=10) as sock:
            sock.sendall(data)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if not reply.startswith(want):
            raise Failure("wrong answer to a malformed request", reply[:200].decode("latin-1"))
        return len(data), len(reply)

    def vanish(self) -> tuple[int, int]:
        """Clients that go away: mid-head, mid-body, right after CONNECT, or with a reset."""
        origin = self.soak.origin.url
        data, answered = self.random.choice([
            (f"GET {origin}/ HTTP/1.1\r\nHost: x\r\n".encode(), False),  # mid-head
            (f"POST {origin}/upload HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n".encode()
             + b"x" * 50_000, False),  # mid-body
            (f"CONNECT localhost:{self.soak.tls_origin.port} HTTP/1.1\r\n\r\n".encode(),
             True),  # before the TLS handshake
            (f"GET {origin}/bytes/{8 * MIB} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
             True),  # mid-download
        ])
        with socket.create_connection(("127.0.0.1", self.soak.port), timeout=10) as sock:
            sock.sendall(data)
            if answered and self.random.random() < 0.7:
                sock.recv(1024)
            if self.soak.args.resets and self.random.random() < 0.3:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return len(data), 0

    def storm(self) -> tuple[int, int]:
        """A crowd that vanishes at once: 100 connections, each a POST that stops mid-body,
        all reset together (RSS must come back, and every socket be released)."""
        origin = self.soak.origin.url
        request = (f"POST {origin}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000"
                   "\r\n\r\n").encode() + b"x" * 5000
        socks = []
        try:
            for _ in range(100):
                sock = socket.create_connection(("127.0.0.1", self.soak.port), timeout=10)
                socks.append(sock)
                sock.sendall(request)
            time.sleep(self.random.random() * 0.2)
        finally:
            for sock in socks:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        return len(request) * len(socks), 0

    def pipelined(self) -> tuple[int, int]:
        origin = self.soak.origin.url
        request = f"GET {origin}/json HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.soak.port), timeout=10) as sock:
            sock.sendall(request * 3 + f"GET {origin}/ HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if reply.count(b"HTTP/1.1 200 OK") != 4 or not reply.endswith(b"hello from origin\n"):
            raise Failure("pipelined answers", reply[-200:].decode("latin-1"))
        return len(request) * 4, len(reply)

    def websocket(self) -> tuple[int, int]:
        """A WebSocket through a CONNECT tunnel (plain, or wss intercepted by the proxy) to an
        echo origin: messages of several sizes, text and binary, each echoed byte-exact.
        (``websockets``' asyncio client: its sync client once in a few hundred TLS
        connections waited for a handshake answer that had come, proxy or not.)"""
        tls = self.random.random() < 0.5
        echo = self.soak.ws_tls if tls else self.soak.ws_plain
        host = "localhost" if tls else "127.0.0.1"
        sock = socket.create_connection(("127.0.0.1", self.soak.port), timeout=10)
        try:
            sock.sendall(f"CONNECT {host}:{echo.port} HTTP/1.1\r\nHost: {host}:{echo.port}"
                         "\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise Failure("CONNECT for a WebSocket: connection closed", head)
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise Failure("CONNECT for a WebSocket refused", head[:200])
            scheme = "wss" if tls else "ws"
            sizes = [self.random.choice([0, 125, 126, 4096, 65536, 300_000])
                     for _ in range(self.random.randint(1, 8))]
            messages: list[str | bytes] = [
                "é" * (size // 2) if self.random.random() < 0.5 else self.random.randbytes(size)
                for size in sizes]
            compress = self.random.random() < 0.3  # permessage-deflate, as browsers offer
            sock.setblocking(False)
            with _named(f"{scheme}: "):
                return asyncio.run(asyncio.wait_for(self._echoes(
                    f"{scheme}://{host}:{echo.port}/", sock, tls, messages, compress), 60))
        finally:
            sock.close()

    async def _echoes(self, uri: str, sock: socket.socket, tls: bool,
                      messages: list[str | bytes], compress: bool) -> tuple[int, int]:
        from websockets.asyncio.client import connect

        up = down = 0
        async with connect(uri, sock=sock, ssl=self.soak.context if tls else None,
                           max_size=None, open_timeout=10, close_timeout=5,
                           compression="deflate" if compress else None) as ws:
            for message in messages:
                await ws.send(message)
                if await ws.recv() != message:
                    raise Failure("WebSocket echo differs", f"{len(message)} sent")
                length = len(message.encode() if isinstance(message, str) else message)
                up, down = up + length, down + length
        return up, down

    def socks(self) -> tuple[int, int]:
        """A request through the SOCKS5 listener (plain, or HTTPS intercepted)."""
        url = self._url("/json")
        with httpx.Client(proxy=f"socks5://127.0.0.1:{self.soak.socks_port}",
                          verify=self.soak.context or True, timeout=30) as client:
            response = client.get(url)
        if response.status_code != 200 or response.json() != {"hello": "world", "n": 1}:
            raise Failure(f"socks: status {response.status_code}", response.text[:200])
        return 0, len(response.content)

    def reverse(self) -> tuple[int, int]:
        """Requests to the reverse-mode listener, in front of the TLS origin."""
        size = self.random.choice([0, 1000, 200_000])
        with httpx.Client(base_url=f"http://127.0.0.1:{self.soak.reverse_port}",
                          timeout=30) as client:
            response = client.get(f"/bytes/{size}")
        if response.status_code != 200 or \
                hashlib.sha256(response.content).hexdigest() != self.soak.sha(size):
            raise Failure(f"reverse: status {response.status_code} / bad body",
                          f"{len(response.content)} of {size} bytes")
        return 0, len(response.content)

    def http2(self) -> tuple[int, int]:
        """HTTP/2 from the client (httpx, four streams at once on one connection) to the
        HTTP/1.1 TLS origin or to an HTTP/2 origin: downloads and uploads, each checked.
        (httpx's async client: its sync client shared by threads lost streams now and then,
        "Server disconnected", with no proxy in between.)"""
        h2_origin = self.random.random() < 0.5
        base = self.soak.h2_origin.url if h2_origin else \
            f"https://localhost:{self.soak.tls_origin.port}"
        sizes = [self.random.choice([0, 1000, 100_000, 1 * MIB]) for _ in range(4)]
        return asyncio.run(asyncio.wait_for(self._http2(base, h2_origin, sizes), 60))

    async def _http2(self, base: str, h2_origin: bool, sizes: list[int]) -> tuple[int, int]:
        async def one(client: httpx.AsyncClient, size: int) -> tuple[int, int]:
            if h2_origin:  # (it echoes a body back)
                body = pattern_bytes(size, seed=7)
                response = await client.post(f"{base}/echo", content=body)
                if response.status_code != 200 or response.content != body:
                    raise Failure(f"http2 echo: status {response.status_code}", f"{size} B")
                return size, size
            response = await client.get(f"{base}/bytes/{size}")
            if response.status_code != 200 or \
                    hashlib.sha256(response.content).hexdigest() != self.soak.sha(size):
                raise Failure(f"http2: status {response.status_code} / bad body", f"{size} B")
            return 0, size

        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{self.soak.port}", http2=True,
                                     verify=self.soak.h2_context or True,
                                     timeout=30) as client:
            done = await asyncio.gather(*(one(client, size) for size in sizes))
            if (await client.get(f"{base}/bytes/0")).http_version != "HTTP/2":
                raise Failure("http2: the proxy did not speak HTTP/2 to the client", base)
        return sum(up for up, _ in done), sum(down for _, down in done)

    SCENARIOS: ClassVar[list[tuple[str, int]]] = [
        ("get_small", 30), ("download", 12), ("upload", 12), ("expected_error", 10),
        ("bad_request", 10), ("vanish", 6), ("pipelined", 5), ("storm", 1),
        ("websocket", 4), ("socks", 4), ("reverse", 4), ("http2", 6),
    ]

    def run(self, deadline: float, stats: Stats) -> None:
        only = self.soak.args.only
        scenarios = [(n, w) for n, w in self.SCENARIOS if not only or n in only]
        names = [name for name, _ in scenarios]
        weights = [weight for _, weight in scenarios]
        while time.monotonic() < deadline and not self.soak.stopping.is_set():
            name = self.random.choices(names, weights)[0]
            scenario: Callable[[], tuple[int, int]] = getattr(self, name)
            try:
                up, down = scenario()
            except Failure as exc:
                stats.fail(name, str(exc.args[0]), str(exc.args[1:]))
            except Exception as exc:  # noqa: BLE001 - any error is a failure to count, and
                # the worker goes on (one that died would end the run early, unseen)
                stats.fail(name, type(exc).__name__, str(exc))
                self.keep_alive.close()
                self.keep_alive = self.soak.client()
            else:
                stats.ok(name, up, down)


# -- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _named(prefix: str) -> Any:
    """A timeout or a connection error inside, as a Failure that says where it happened."""
    try:
        yield
    except (OSError, TimeoutError) as exc:
        raise Failure(f"{prefix}{type(exc).__name__}", str(exc)) from exc


class _EchoOrigin:
    """A WebSocket echo server on 127.0.0.1 (``websockets``' asyncio server, on a loop in a
    thread of its own), TLS with a certificate for localhost from ``ca`` when given. (Its
    threaded sync server once in a few hundred TLS connections never answered a handshake,
    without any proxy in between.)"""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.ca = ca
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        async def echo(ws: ServerConnection) -> None:
            with contextlib.suppress(Exception):  # (a client that goes away mid-message)
                async for message in ws:
                    await ws.send(message)

        context = None
        if self.ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert("localhost").configure_cert(context)
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve(echo, "127.0.0.1", 0, ssl=context, max_size=None) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WebSocket echo origin did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.stopping = threading.Event()
        self.port = free_port()
        self._sha: dict[tuple[int, int], str] = {}
        self._sha_lock = threading.Lock()
        self.ca = trustme.CA()
        self.origin = Origin()
        self.tls_origin = Origin(tls=True, ca=self.ca)
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            self.closed_port = unused.getsockname()[1]
        self.h2_origin = H2Origin(ca=self.ca)
        self.ws_plain = _EchoOrigin()
        self.ws_tls = _EchoOrigin(self.ca)
        self.socks_port = free_port()
        self.reverse_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.origin_ports: set[int] = set()
        self.rss_samples: list[tuple[float, int]] = []
        self.start_pooled = self.end_pooled = 0
        self.log_path = workdir / "proxy.log"
        self.context: ssl.SSLContext | None = None
        self.h2_context: ssl.SSLContext | None = None

    def sha(self, size: int, seed: int = 0) -> str:
        with self._sha_lock:
            if (size, seed) not in self._sha:
                self._sha[(size, seed)] = pattern_sha256(size, seed)
            return self._sha[(size, seed)]

    def client(self) -> httpx.Client:
        return httpx.Client(proxy=f"http://127.0.0.1:{self.port}", verify=self.context or True,
                            timeout=30)

    def start(self) -> None:
        self.origin.start()
        self.tls_origin.start()
        self.ws_plain.start()
        self.ws_tls.start()
        self.h2_origin.__enter__()
        self.origin_ports = {self.origin.port, self.tls_origin.port, self.ws_plain.port,
                             self.ws_tls.port, self.h2_origin.port}
        ca_file = self.workdir / "origin-ca.pem"
        self.ca.cert_pem.write_to_path(str(ca_file))
        certs = self.workdir / "certs"
        capture = ["--web-port", "0"] if self.args.capture else ["--no-web"]
        env = {**os.environ, "NECTOPROXY_HOME": str(self.workdir / "home")}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nectoproxy", "--no-config", "--no-entry-points",
                 "--mode", f"regular@127.0.0.1:{self.port}",
                 "--mode", f"socks5@127.0.0.1:{self.socks_port}",
                 "--mode", (f"reverse:https://localhost:{self.tls_origin.port}"
                            f"@127.0.0.1:{self.reverse_port}"),
                 "--certs-dir", str(certs), "--upstream-ca", str(ca_file), "-q", *capture],
                stdout=log, stderr=log, env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy does not listen after 60 s")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        self.context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        # (Its own: httpx offers h2 in the ALPN of the context it is given, which would make
        # every other client that shares the context choose HTTP/2 too.)
        self.h2_context = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    def stop(self) -> int | None:
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            code = self.process.returncode
        self.tls_origin.stop()
        self.origin.stop()
        self.ws_plain.stop()
        self.ws_tls.stop()
        self.h2_origin.__exit__(None, None, None)
        return code

    def warm_up(self) -> None:
        with self.client() as client:
            for url in (self.origin.url + "/", f"https://localhost:{self.tls_origin.port}/"):
                client.get(url).raise_for_status()

    def run(self) -> int:
        args = self.args
        assert self.process is not None
        pid = self.process.pid
        figures = Figures(pid)
        self.warm_up()
        start_rss, start_fds, start_threads = figures.sample()
        self.start_pooled = connections_to(pid, self.origin_ports)
        print(f"proxy pid {pid} on 127.0.0.1:{self.port}; start: RSS {start_rss / 1024:.1f} "
              f"MiB, {start_fds} fds ({self.start_pooled} pooled origin connections), "
              f"{start_threads} threads; {args.workers} workers for {args.duration:g}s"
              + (f"; only {', '.join(sorted(args.only))}" if args.only else ""), flush=True)
        stats = Stats()
        started = time.monotonic()
        deadline = started + args.duration
        workers = [Worker(self, seed) for seed in range(args.workers)]
        threads = [threading.Thread(target=w.run, args=(deadline, stats), daemon=True)
                   for w in workers]
        for thread in threads:
            thread.start()
        try:
            next_report = started + args.report_every
            next_sample = started + SAMPLE_EVERY
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.1)
                now = time.monotonic()
                if now >= next_sample and self.process.poll() is None:
                    next_sample += SAMPLE_EVERY
                    self.rss_samples.append((now - started, figures.sample()[0]))
                    # The origins record every request (bodies' first bytes included): a long
                    # run would otherwise fill this process's memory (it once took 24 GiB).
                    self.origin.requests.clear()
                    self.tls_origin.requests.clear()
                    self.h2_origin.requests.clear()
                    self.h2_origin.reset_codes.clear()
                if self.process.poll() is None and time.monotonic() < next_report:
                    continue
                next_report += args.report_every
                if self.process.poll() is not None:
                    print("the proxy died", flush=True)
                    self.stopping.set()
                    break
                rss, fds, nthreads = figures.sample()
                with stats.lock:
                    served, failed = sum(stats.served.values()), sum(stats.failures.values())
                print(f"  {time.monotonic() - started:6.0f}s  served {served:7d}  failed "
                      f"{failed:4d}  RSS {rss / 1024:6.1f} MiB  fds {fds:4d}  threads "
                      f"{nthreads}", flush=True)
        except KeyboardInterrupt:
            self.stopping.set()
        for thread in threads:
            thread.join(60)
        for worker in workers:
            worker.close()
        elapsed = time.monotonic() - started
        # Let timeouts and closes settle, then the closing figures.
        settle_deadline = time.monotonic() + args.settle
        alive = self.process.poll() is None
        end_rss = end_fds = end_threads = 0
        end_pooled = 0
        while alive and time.monotonic() < settle_deadline:
            end_rss, end_fds, end_threads = figures.sample()
            end_pooled = connections_to(pid, self.origin_ports)
            if end_fds - end_pooled <= start_fds - self.start_pooled:
                break
            time.sleep(0.5)
        self.end_pooled = end_pooled
        return self.report(stats, elapsed, figures, alive, (start_rss, start_fds, start_threads),
                           (end_rss, end_fds, end_threads))

    def report(self, stats: Stats, elapsed: float, figures: Figures, alive: bool,
               start: tuple[int, int, int], end: tuple[int, int, int]) -> int:
        served = sum(stats.served.values())
        failed = sum(stats.failures.values())
        log = self.log_path.read_text(errors="replace")
        tracebacks = log.count("Traceback")
        unexpected = log.count("unexpected error")
        print()
        print(f"duration            {elapsed:.0f} s")
        print(f"requests served     {served}  ({served / elapsed:.0f}/s), "
              f"{stats.bytes_up / MIB:.0f} MiB up, {stats.bytes_down / MIB:.0f} MiB down")
        for name, count in sorted(stats.served.items()):
            print(f"    {name:18s}{count}")
        print(f"failures            {failed}")
        for key, count in sorted(stats.failures.items()):
            print(f"    {key}: {count}  e.g. {stats.examples[key]}")
        print(f"proxy alive         {alive}")
        print(f"RSS                 start {start[0] / 1024:.1f} MiB, end {end[0] / 1024:.1f} MiB, "
              f"peak {figures.peak_rss_kib / 1024:.1f} MiB")
        print(f"open fds            start {start[1]}, end {end[1]}, peak {figures.peak_fds}; "
              f"pooled origin connections start {self.start_pooled}, end {self.end_pooled}")
        extra_fds = (end[1] - self.end_pooled) - (start[1] - self.start_pooled)
        print(f"fds beyond the pool {extra_fds:+d} after settling "
              f"({'ok' if extra_fds <= 0 else 'LEAK?'})")
        steady = [(t, r) for t, r in self.rss_samples if t >= WARM_UP]
        slope = slope_mib_per_10min(steady)
        judged = elapsed >= WARM_UP + 180 and slope is not None
        verdict = ("not judged: run 5 minutes or more" if not judged
                   else "ok" if slope is not None and slope < SLOPE_GOAL else "TOO STEEP")
        slope_text = "n/a" if slope is None else f"{slope:+.2f} MiB per 10 min"
        print(f"RSS slope           {slope_text} after the first {WARM_UP:.0f} s, from "
              f"{len(steady)} samples (goal < {SLOPE_GOAL:g}): {verdict}")
        later = [(t, r) for t, r in self.rss_samples if t >= elapsed / 2]
        if elapsed >= 2 * (WARM_UP + 180) and len(later) >= 3:
            half = slope_mib_per_10min(later)
            print(f"RSS slope, 2nd half {'n/a' if half is None else f'{half:+.2f}'} MiB per 10 "
                  f"min (from {elapsed / 2:.0f} s: a warm-up that lasts longer than "
                  f"{WARM_UP:.0f} s flattens here, a leak does not)")
        print(f"threads             start {start[2]}, end {end[2]}")
        store = self.workdir / "home" / "flows.db"
        if store.exists():
            import sqlite3

            size = sum(f.stat().st_size for f in store.parent.glob("flows.db*"))
            with contextlib.closing(sqlite3.connect(store)) as conn:
                count = conn.execute("SELECT count(*) FROM flows").fetchone()[0]
            print(f"flow store          {count} flows, {size / MIB:.0f} MiB on disk")
        print(f"proxy log           {tracebacks} tracebacks, {unexpected} 'unexpected error'")
        if tracebacks or unexpected or not alive:
            print("--- end of the proxy log ---")
            print("\n".join(log.splitlines()[-40:]))
        too_steep = judged and slope is not None and slope >= SLOPE_GOAL
        bad = failed or not alive or tracebacks or unexpected or extra_fds > 0 or too_steep
        return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--workers", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--report-every", type=float, default=15.0,
                        help="seconds between progress lines (default 15)")
    parser.add_argument("--only", metavar="SCENARIO", type=lambda v: set(v.split(",")),
                        default=set(), help="run only these scenarios (comma-separated): "
                        + ", ".join(name for name, _ in Worker.SCENARIOS))
    parser.add_argument("--no-capture", dest="capture", action="store_false",
                        help="run the proxy with --no-web (by default it captures every flow "
                             "into a store in the temporary directory, as it does for users)")
    parser.add_argument("--no-resets", dest="resets", action="store_false",
                        help="clients never close with a TCP reset")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait for connections to close before the closing "
                             "figures (default 10)")
    args = parser.parse_args(argv)
    unknown = args.only - {name for name, _ in Worker.SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="nectoproxy-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            soak.start()
            status = soak.run()
        finally:
            soak.stopping.set()
            code = soak.stop()
        if code not in (0, None, -signal.SIGTERM):
            print(f"the proxy exited with status {code}")
            status = 1
        return status


if __name__ == "__main__":
    sys.exit(main())
