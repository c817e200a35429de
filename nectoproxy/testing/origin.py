"""A small, deterministic fake origin web server for tests (runs in a background thread).

``with Origin() as o: httpx.get(o.url + "/")`` -- see ``Origin`` for the endpoints, and
``RawServer`` for origins that misbehave. Standard library only; ``trustme`` is imported
lazily when ``tls=True``.
"""

from __future__ import annotations

import os
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from nectoproxy.testing._origin_handler import (
    BLOCK_SIZE,
    GZIP_TEXT,
    HTML_BODY,
    IDLE_TIMEOUT,
    JSON_BODY,
    HandlerServer,
    OriginHandler,
    RecordedRequest,
    gzip_bytes,
    iter_pattern,
    pattern_bytes,
    pattern_sha256,
)

if TYPE_CHECKING:
    import trustme

__all__ = [
    "BLOCK_SIZE",
    "GZIP_TEXT",
    "HTML_BODY",
    "JSON_BODY",
    "Origin",
    "RawServer",
    "RecordedRequest",
    "free_port",
    "gzip_bytes",
    "iter_pattern",
    "pattern_bytes",
    "pattern_sha256",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _Stopping(Exception):
    pass


class _Tracker:
    """Connection threads and sockets of a server, so that stop() can unblock and join them."""

    def __init__(self, errors: list[BaseException], name: str) -> None:
        self.name = name  # prefix of the connection threads' names
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors = errors
        self._socks: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    def spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=self._run, args=(target, *args), name=f"{self.name}-conn", daemon=True
        )
        with self.lock:  # started under the lock: stop() never sees one it cannot join yet
            if self.stopping.is_set():
                raise _Stopping
            self._threads.add(thread)
            thread.start()

    def _run(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except (OSError, _Stopping):
            pass  # client went away, TLS handshake failed, or we are stopping
        except Exception as exc:  # noqa: BLE001 -- a handler bug: keep it for the test
            self.errors.append(exc)
        finally:
            with self.lock:
                self._threads.discard(threading.current_thread())

    def track(self, sock: socket.socket) -> None:
        with self.lock:
            if self.stopping.is_set():
                raise _Stopping
            self._socks.add(sock)

    def close(self, sock: socket.socket) -> None:
        with self.lock:
            self._socks.discard(sock)
        sock.close()

    def stop(self, timeout: float = 5.0) -> None:
        with self.lock:  # shut down under the lock: no tracked socket can be closed meanwhile
            self.stopping.set()
            for sock in self._socks:
                try:  # the plain-socket method, even on an SSLSocket: wakes up blocked reads
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


class _Server(HandlerServer):
    def __init__(self, origin: Origin, ctx: ssl.SSLContext | None) -> None:
        self.address_family = _family(origin.host)
        self.origin, self.ssl_context, self.tls = origin, ctx, ctx is not None
        super().__init__((origin.host, 0), OriginHandler)
        self.tracker = _Tracker(origin.errors, f"nectoproxy-origin-{self.server_address[1]}")
        self.stopping = self.tracker.stopping

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which can be slow
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self.tracker.spawn(self._serve_connection, request, client_address)
        except _Stopping:
            request.close()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        conn = sock
        try:
            self.tracker.track(sock)
            if self.ssl_context is not None:
                sock.settimeout(IDLE_TIMEOUT)
                conn = self.ssl_context.wrap_socket(sock, server_side=True)  # detaches sock
                self.tracker.track(conn)
            OriginHandler(conn, client_address, self)
        finally:
            self.tracker.close(conn)
            self.tracker.close(sock)

    def record(self, request: RecordedRequest) -> None:
        self.origin._record(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # never print tracebacks to stderr


class _Background:
    """start()/stop() plus the context-manager protocol."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Origin(_Background):
    """A running fake origin. Context manager: ``with Origin() as o:`` / ``Origin(tls=True)``.

    Endpoints: ``/`` ``/echo`` ``/bytes/<n>[?chunked=1|close=1][&gzip=1][&seed=s]``
    ``/upload`` (POST/PUT) ``/status/<code>`` ``/headers?k=v`` ``/slow?delay=s``
    ``/drip?n=&delay=&chunk=`` ``/close[?reset=1]`` ``/json`` ``/html`` ``/gzip-text``;
    HEAD works on every GET path; anything else is 404.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        host: str = "127.0.0.1",
        ca: trustme.CA | None = None,
        cert_hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    ) -> None:
        self.tls, self.host, self.port, self.ca = tls, host, 0, ca
        self.cert_hosts = tuple(cert_hosts)
        self.ca_pem_path: str | None = None
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # unexpected handler exceptions (should stay [])
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return _url("https" if self.tls else "http", self.host, self.port)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _ssl_context(self) -> ssl.SSLContext:
        import trustme

        if self.ca is None:
            self.ca = trustme.CA()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*self.cert_hosts).configure_cert(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        fd, self.ca_pem_path = tempfile.mkstemp(prefix="nectoproxy-origin-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(self.ca.cert_pem.bytes())
        return ctx

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("origin already started")
        ctx = self._ssl_context() if self.tls else None
        try:
            self._server = _Server(self, ctx)
        except BaseException:
            self._remove_ca_file()
            raise
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.05,),
            name=f"nectoproxy-origin-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        server.shutdown()  # serve_forever() returns: no more accepts
        server.tracker.stop()  # wake up and join the connection threads
        server.server_close()  # free the port
        thread.join(5.0)
        self._remove_ca_file()

    def _remove_ca_file(self) -> None:
        if self.ca_pem_path is not None:
            os.unlink(self.ca_pem_path)
            self.ca_pem_path = None


class RawServer(_Background):
    """Accepts TCP connections and runs ``handler(sock)`` for each in its own thread.

    The socket is closed after the handler returns. With ``ssl_context`` the socket is
    TLS-wrapped (server side) before the handler sees it; failed handshakes are ignored.
    """

    def __init__(
        self,
        handler: Callable[[socket.socket], None],
        *,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler, self.host, self.port, self.ssl_context = handler, host, 0, ssl_context
        self.connections = 0
        self.errors: list[BaseException] = []  # non-OSError exceptions raised by the handler
        self._tracker = _Tracker(self.errors, "nectoproxy-raw")
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return _url("https" if self.ssl_context else "http", self.host, self.port)

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("server already started")
        self._listener = socket.socket(_family(self.host), socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._tracker = _Tracker(self.errors, f"nectoproxy-raw-{self.port}")
        self._thread = threading.Thread(
            target=self._accept_loop,
            args=(self._listener,),
            name=f"nectoproxy-raw-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._tracker.stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:  # TimeoutError every 50 ms: re-check the stop flag
                continue
            sock.settimeout(None)
            self.connections += 1
            try:
                self._tracker.spawn(self._serve, sock)
            except _Stopping:
                sock.close()

    def _serve(self, sock: socket.socket) -> None:
        conn = sock
        try:
            self._tracker.track(sock)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(sock, server_side=True)
                self._tracker.track(conn)
            self.handler(conn)
        finally:
            self._tracker.close(conn)
            self._tracker.close(sock)

    def stop(self) -> None:
        listener, thread, self._listener, self._thread = self._listener, self._thread, None, None
        if listener is None or thread is None:
            return
        self._tracker.stop()
        thread.join(5.0)
        listener.close()
