"""A raw HTTP/2 client for the tests: the ``h2`` library over a CONNECT tunnel and TLS.

Blocking sockets, one thread: send frames (or raw bytes, for the defence tests), then read
events until a condition holds, each read bounded by the socket's timeout.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from wire import read_head

TIMEOUT = 30.0


@dataclass
class StreamResult:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers).get(b":status", b"0"))

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection through the proxy to ``host:port``."""

    def __init__(self, proxy_port: int, ca_path: str, host: str, port: int,
                 alpn: tuple[str, ...] = ("h2", "http/1.1"), timeout: float = TIMEOUT,
                 preface: bool = True) -> None:
        sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
        target = f"{host}:{port}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert not rest
        context = ssl.create_default_context(cafile=ca_path)
        context.set_alpn_protocols(list(alpn))
        self.sock = context.wrap_socket(sock, server_hostname=host)
        self.authority = target.encode()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.results: dict[int, StreamResult] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.events: list[Any] = []
        #: Without a preface the client sends nothing at all (not even SETTINGS ACKs).
        self.silent = not preface
        if preface:
            self.conn.initiate_connection()
            self.conn.increment_flow_control_window(2**24)
            self.flush()

    @property
    def alpn(self) -> str | None:
        return self.sock.selected_alpn_protocol()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.silent:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: list[tuple[bytes, bytes]] | None = None,
                trailers: list[tuple[bytes, bytes]] | None = None, end: bool = True) -> int:
        """Start a stream (and send its body when it fits the window); its id."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"https"),
                  (b":authority", self.authority), (b":path", path.encode()),
                  *(headers or [])]
        self.results[stream_id] = StreamResult()
        self.conn.send_headers(stream_id, fields, end_stream=end and not body and not trailers)
        if body:
            self.send_body(stream_id, body, end=end and not trailers)
        if trailers:
            self.conn.send_headers(stream_id, trailers, end_stream=True)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.read_once()
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    def read_once(self) -> bool:
        """Read and handle one batch of bytes; False once the proxy closed the connection."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            self.events.append(event)
            self._handle(event)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def _handle(self, event: Any) -> None:
        result = self.results.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and result is not None:
            result.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if result is not None:
                result.body += event.data
        elif isinstance(event, h2.events.TrailersReceived) and result is not None:
            result.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and result is not None:
            result.ended = True
        elif isinstance(event, h2.events.StreamReset) and result is not None:
            result.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event

    def until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Read until ``condition()`` or the connection ends; whether the condition holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.closed or time.monotonic() > deadline:
                return condition()
            self.read_once()
        return True

    def get(self, path: str, **kwargs: Any) -> StreamResult:
        stream_id = self.request(path, **kwargs)
        assert self.until(lambda: self.results[stream_id].done), self.results[stream_id]
        return self.results[stream_id]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
