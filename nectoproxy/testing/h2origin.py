"""A fake HTTP/2 origin for tests: the ``h2`` library over TLS (trustme), in a thread.

``with H2Origin(ca=origin_ca) as o: ...`` -- ``o.url`` is ``https://localhost:<port>``; it
offers only ``h2`` in ALPN (``alpn=("h2", "http/1.1")`` to offer both: an HTTP/1.1 client
then gets ``505``). ``o.requests`` records every request: its header fields (pseudo-headers
included, as bytes), body length and sha256, trailers. Endpoints:

- ``/echo``: the request body back, with the request's trailers as response trailers.
- ``/bytes/<n>[?seed=s]``: ``pattern_bytes(n, seed)`` (the h1 :class:`Origin`'s body).
- ``/trailers``: ``ok`` then trailers ``grpc-status: 0``, ``grpc-message: fine``.
- ``/headers``: JSON: the request's header fields, pseudo-headers included.
- ``/stream``: each DATA frame echoed as it arrives (bidirectional streaming), ended when
  the request ends, with a trailer ``x-chunks`` (how many frames came).
- ``/status/<code>``: that status, empty body. Anything else is 404.
- ``/goaway``: ``bye``, then GOAWAY and the connection closed (once its other streams end).

``o.reset_codes`` lists the error codes of the streams the client reset, ``o.connections``
counts connections.

Every connection runs on its own thread with blocking sockets; responses wait for the peer's
flow-control window like a real server's.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from nectoproxy.testing.origin import RawServer, pattern_bytes

if TYPE_CHECKING:
    from types import TracebackType

    import trustme

__all__ = ["H2Origin", "H2Request"]


@dataclass
class H2Request:
    """One request as the origin received it."""

    headers: list[tuple[bytes, bytes]]
    body_length: int = 0
    body_sha256: str = ""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode() for k, v in self.headers if k == key), None)


class _Stream:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = bytearray()
        self.digest = hashlib.sha256()
        self.length = 0
        self.chunks = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        #: What is left to send: body bytes, then trailers (or None: end with DATA).
        self.out = bytearray()
        self.out_trailers: list[tuple[bytes, bytes]] | None = None
        self.finishing = False

    @property
    def path(self) -> str:
        return dict(self.headers).get(b":path", b"/").decode()


class H2Origin:
    """A running HTTP/2 origin over TLS (see the module's docstring)."""

    def __init__(self, *, ca: trustme.CA | None = None, host: str = "127.0.0.1",
                 cert_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
                 alpn: Sequence[str] = ("h2",)) -> None:
        import trustme

        self.ca = ca or trustme.CA()
        self.host = host
        self.alpn = tuple(alpn)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*cert_hosts).configure_cert(context)
        context.set_alpn_protocols(list(self.alpn))
        self.requests: list[H2Request] = []
        #: How many streams the proxy reset, and with which codes.
        self.reset_codes: list[int] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = RawServer(self._serve, host=host, ssl_context=context)
        self.ca_pem_path: str | None = None

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def resets(self) -> int:
        return len(self.reset_codes)

    @property
    def errors(self) -> list[BaseException]:
        return self._server.errors

    def __enter__(self) -> Self:
        with tempfile.NamedTemporaryFile("wb", prefix="nectoproxy-h2origin-ca-", suffix=".pem",
                                         delete=False) as f:
            f.write(self.ca.cert_pem.bytes())
        self.ca_pem_path = f.name
        self._server.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stop()
        if self.ca_pem_path:
            import os

            os.unlink(self.ca_pem_path)

    # -- one connection ----------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        assert isinstance(sock, ssl.SSLSocket)
        if sock.selected_alpn_protocol() != "h2":
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                head += chunk
            sock.sendall(b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        conn.initiate_connection()
        conn.increment_flow_control_window(2**24)
        sock.sendall(conn.data_to_send())
        streams: dict[int, _Stream] = {}
        goaway = False
        while True:
            data = sock.recv(65536)
            if not data:
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                sock.sendall(conn.data_to_send())
                return
            for event in events:
                if not self._event(conn, streams, event):
                    sock.sendall(conn.data_to_send())
                    return
            goaway = goaway or any(st.path == "/goaway" for st in streams.values())
            self._send_pending(conn, streams)
            if goaway and not streams:  # answered: now end the connection
                conn.close_connection()
                sock.sendall(conn.data_to_send())
                return
            sock.sendall(conn.data_to_send())

    def _event(self, conn: h2.connection.H2Connection, streams: dict[int, _Stream],
               event: Any) -> bool:
        stream: _Stream | None
        if isinstance(event, h2.events.RequestReceived):
            stream = streams[event.stream_id] = _Stream(list(event.headers))
            if stream.path == "/stream":
                conn.send_headers(event.stream_id, [(b":status", b"200"),
                                                    (b"content-type", b"application/grpc")])
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.digest.update(event.data)
                stream.length += len(event.data)
                stream.chunks += bool(event.data)
                if stream.path == "/stream":
                    stream.out += event.data
                elif stream.path == "/echo":
                    stream.body += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            if (stream := streams.get(event.stream_id)) is not None:
                stream.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := streams.get(event.stream_id)) is not None:
                self._respond(conn, event.stream_id, stream)
        elif isinstance(event, h2.events.StreamReset):
            streams.pop(event.stream_id, None)
            with self._lock:
                self.reset_codes.append(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    def _respond(self, conn: h2.connection.H2Connection, stream_id: int,
                 stream: _Stream) -> None:
        with self._lock:
            self.requests.append(H2Request(stream.headers, stream.length,
                                           stream.digest.hexdigest(), stream.trailers))
        path, _, query = stream.path.partition("?")
        status, body, trailers = b"200", b"", None
        content_type = b"application/octet-stream"
        if path == "/stream":
            stream.out_trailers = [(b"x-chunks", str(stream.chunks).encode())]
            stream.finishing = True
            return
        if path == "/echo":
            body, trailers = bytes(stream.body), stream.trailers or None
        elif path.startswith("/bytes/"):
            seed = int(dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                       .get("seed", "0"))
            body = pattern_bytes(int(path[len("/bytes/"):]), seed)
        elif path == "/goaway":
            body, content_type = b"bye", b"text/plain"
        elif path == "/trailers":
            body, content_type = b"ok", b"text/plain"
            trailers = [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
        elif path == "/headers":
            body = json.dumps([[k.decode("latin-1"), v.decode("latin-1")]
                               for k, v in stream.headers]).encode()
            content_type = b"application/json"
        elif path.startswith("/status/"):
            status = path[len("/status/"):].encode()
        else:
            status, body, content_type = b"404", b"not found\n", b"text/plain"
        head = [(b":status", status), (b"content-type", content_type)]
        if trailers is None:
            head.append((b"content-length", str(len(body)).encode()))
        conn.send_headers(stream_id, head)
        stream.out += body
        stream.out_trailers = trailers
        stream.finishing = True

    def _send_pending(self, conn: h2.connection.H2Connection,
                      streams: dict[int, _Stream]) -> None:
        for stream_id, stream in list(streams.items()):
            while stream.out:
                window = min(conn.local_flow_control_window(stream_id),
                             conn.max_outbound_frame_size)
                if window <= 0:
                    break
                conn.send_data(stream_id, bytes(stream.out[:window]))
                del stream.out[:window]
            if stream.finishing and not stream.out:
                if stream.out_trailers:
                    conn.send_headers(stream_id, stream.out_trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
                del streams[stream_id]
