"""The request handler of the fake origin (see ``nectoproxy.testing.origin``) and its data.

Kept separate from ``origin.py`` only for size; import everything from ``origin``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BLOCK_SIZE = 64 * 1024  # the pattern repeats with this period; also the max chunk size
RECORD_BODY_LIMIT = 1024 * 1024  # RecordedRequest.body keeps at most this many leading bytes
ECHO_BODY_LIMIT = 64 * 1024  # /echo returns "body" only up to this size (else null)
IDLE_TIMEOUT = 60.0  # per-recv timeout on server connections
HELLO_BODY = b"hello from origin\n"
JSON_BODY = json.dumps({"hello": "world", "n": 1}).encode()
HTML_BODY = (
    b"<!doctype html>\n<html><head><title>Origin</title></head>"
    b"<body><p>hello from origin</p></body></html>\n"
)
GZIP_TEXT = b"compressed hello\n" * 100
ORIGIN_HEADER = ("X-Origin", "nectoproxy-test")


@lru_cache(maxsize=8)
def _block(seed: int) -> bytes:
    return b"".join(
        hashlib.sha256(b"nectoproxy-pattern:%d:%d" % (seed, i)).digest()
        for i in range(BLOCK_SIZE // 32)
    )


def iter_pattern(n: int, seed: int = 0, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the first ``n`` pattern bytes in chunks of at most ``min(chunk_size, 64 KiB)``."""
    block, pos, step = _block(seed), 0, max(1, min(chunk_size, BLOCK_SIZE))
    while pos < n:
        offset = pos % BLOCK_SIZE
        size = min(step, n - pos, BLOCK_SIZE - offset)
        yield block[offset : offset + size]
        pos += size


def pattern_bytes(n: int, seed: int = 0) -> bytes:
    """The deterministic body of ``/bytes/<n>``: a sha256-derived 64 KiB block, repeated."""
    block = _block(seed)
    return block * (n // BLOCK_SIZE) + block[: n % BLOCK_SIZE]


def pattern_sha256(n: int, seed: int = 0) -> str:
    """Hex sha256 of ``pattern_bytes(n, seed)``, computed without materialising it."""
    digest = hashlib.sha256()
    for chunk in iter_pattern(n, seed):
        digest.update(chunk)
    return digest.hexdigest()


def _gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container, mtime 0
    for chunk in chunks:
        if out := comp.compress(chunk):
            yield out
    yield comp.flush()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip exactly as the origin does (deterministic: mtime 0)."""
    return b"".join(_gzip_chunks([data]))


@dataclass
class RecordedRequest:
    """One request as the origin received it (``body`` keeps at most 1 MiB; see body_length)."""

    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    body_length: int
    body_sha256: str
    tls: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class BadRequest(Exception):
    pass


class HandlerServer(ThreadingHTTPServer):
    """What OriginHandler needs from its server (implemented by origin._Server)."""

    #: (socketserver's default, 5, drops the connections of a burst: an HTTP/2 client's 100
    #: streams each open one to an HTTP/1.1 origin.)
    request_queue_size = 128

    stopping: threading.Event  # set when the origin stops: sleeping handlers give up
    tls: bool

    def record(self, request: RecordedRequest) -> None:
        raise NotImplementedError


class OriginHandler(BaseHTTPRequestHandler):
    server: HandlerServer
    protocol_version = "HTTP/1.1"
    server_version = "NectoProxyTestOrigin/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    _headers_buffer: list[bytes]  # (BaseHTTPRequestHandler's, which typeshed does not declare)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # No Nagle: a response's last small write must not wait for the client's delayed ACK
        # (40 ms a request on a keep-alive connection).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # (the client is gone already)

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        self.send_header(*ORIGIN_HEADER)  # on every final response, error pages included

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
            elif not self.raw_requestline:
                self.close_connection = True
            elif self.parse_request():  # (sends "100 Continue" when asked)
                self._dispatch()
        except OSError:  # disconnects, resets, timeouts, TLS errors
            self.close_connection = True

    # -- request side ----------------------------------------------------------------------
    def _read_exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            data = self.rfile.read(min(n, BLOCK_SIZE))
            if not data:
                raise BadRequest("body truncated")
            n -= len(data)
            yield data

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1025)
            size = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not size or size.strip(b"0123456789abcdefABCDEF"):
                raise BadRequest("bad chunk size line")
            if int(size, 16) == 0:
                break
            yield from self._read_exact(int(size, 16))
            if self.rfile.readline(3).strip():
                raise BadRequest("chunk not followed by CRLF")
        for _ in range(100):  # trailer section
            line = self.rfile.readline(8193)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                break
        raise BadRequest("bad trailers")

    def _body_chunks(self) -> Iterator[bytes]:
        te = ",".join(self.headers.get_all("Transfer-Encoding", []))
        if te.strip():
            if te.split(",")[-1].strip().lower() != "chunked":
                raise BadRequest("unsupported transfer-encoding")
            return self._read_chunked()
        lengths = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        if not lengths:
            return iter(())
        length = lengths.pop()
        if lengths or not (length.isascii() and length.isdigit()):
            raise BadRequest("bad content-length")
        return self._read_exact(int(length))

    def _read_body(self) -> tuple[bytes, int, str]:
        head, length, digest = bytearray(), 0, hashlib.sha256()
        for chunk in self._body_chunks():
            digest.update(chunk)
            length += len(chunk)
            if len(head) < RECORD_BODY_LIMIT:
                head += chunk[: RECORD_BODY_LIMIT - len(head)]
        return bytes(head), length, digest.hexdigest()

    # -- response side ---------------------------------------------------------------------
    def _start(self, status: int, headers: Iterable[tuple[str, str]] = (),
               body: bytes = b"") -> None:
        """Send the head, and ``body`` with it in the same write."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n" + body)  # what end_headers() appends, and more
        self.flush_headers()

    def _send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str | None = "text/plain",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        hdrs = ([("Content-Type", ctype)] if ctype else []) + list(headers)
        if status not in (204, 304):
            hdrs.append(("Content-Length", str(len(body))))
        with_body = self.command != "HEAD" and status not in (204, 304)
        self._start(status, hdrs, body if with_body else b"")

    def _stream(
        self,
        chunks: Iterable[bytes],
        framing: str,
        length: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        delay: float = 0.0,
    ) -> None:
        hdrs = list(headers)
        if framing == "chunked":
            hdrs.append(("Transfer-Encoding", "chunked"))
        elif framing == "close":
            self.close_connection = True
        else:
            hdrs.append(("Content-Length", str(length)))
        self._start(200, hdrs)
        if self.command == "HEAD":
            return
        for chunk in chunks:
            if delay and self.server.stopping.wait(delay):
                self.close_connection = True
                return
            if chunk and framing == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif chunk:
                self.wfile.write(chunk)
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    # -- routing ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            body, length, sha = self._read_body()
        except BadRequest as exc:
            self.close_connection = True
            return self._send(400, f"bad request: {exc}\n".encode())
        self.server.record(
            RecordedRequest(
                self.command,
                self.path,
                self.request_version,
                list(self.headers.items()),
                body,
                length,
                sha,
                self.server.tls,
            )
        )
        url = urlsplit(self.path)
        path, pairs = url.path, parse_qsl(url.query, keep_blank_values=True)
        query = dict(pairs)
        try:
            self._route(path, query, pairs, body, length, sha)
        except (ValueError, BadRequest) as exc:
            self._send(400, f"bad request: {exc}\n".encode())

    def _route(
        self,
        path: str,
        query: dict[str, str],
        pairs: list[tuple[str, str]],
        body: bytes,
        length: int,
        sha: str,
    ) -> None:
        method = "GET" if self.command == "HEAD" else self.command
        if path == "/echo":
            return self._echo(body, length, sha)
        if path == "/upload":
            if method not in ("POST", "PUT"):
                return self._send(405, b"method not allowed\n", headers=[("Allow", "POST, PUT")])
            return self._send(
                200, json.dumps({"sha256": sha, "length": length}).encode(), "application/json"
            )
        static = {
            "/": (HELLO_BODY, "text/plain"),
            "/json": (JSON_BODY, "application/json"),
            "/html": (HTML_BODY, "text/html; charset=utf-8"),
        }
        known = (*static, "/gzip-text", "/headers", "/slow", "/drip", "/close")
        if path not in known and not path.startswith(("/bytes/", "/status/")):
            return self._send(404, b"not found\n")
        if method != "GET":
            return self._send(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])
        if path in static:
            return self._send(200, *static[path])
        if path == "/gzip-text":
            return self._send(
                200, gzip_bytes(GZIP_TEXT), "text/plain", [("Content-Encoding", "gzip")]
            )
        if path == "/headers":
            return self._headers(pairs)
        if path == "/slow":
            if self.server.stopping.wait(max(0.0, float(query.get("delay", "1")))):
                self.close_connection = True
                return None
            return self._send(200, b"slow")
        if path == "/drip":
            n, size = int(query.get("n", "10")), int(query.get("chunk", "1"))
            return self._stream(
                iter_pattern(n, 0, size),
                pick_framing(query),
                n,
                [("Content-Type", "application/octet-stream")],
                max(0.0, float(query.get("delay", "0.1"))),
            )
        if path == "/close":
            if query.get("reset") == "1":  # RST instead of FIN
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.close_connection = True
            return None
        if path.startswith("/status/"):
            status = int(path[len("/status/") :])
            if not 200 <= status <= 599:
                raise ValueError("status must be 200..599")
            return self._send(status, b"", None)
        return self._bytes(int(path[len("/bytes/") :]), query)

    def _echo(self, body: bytes, length: int, sha: str) -> None:
        data = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_sha256": sha,
            "body_length": length,
            "body": body.decode("latin-1") if length <= ECHO_BODY_LIMIT else None,
            "http_version": self.request_version,
        }
        self._send(200, json.dumps(data).encode(), "application/json")

    def _headers(self, pairs: list[tuple[str, str]]) -> None:
        if any("\r" in k + v or "\n" in k + v or ":" in k or not k.strip() for k, v in pairs):
            raise ValueError("invalid header name or value")
        framing = ("content-length", "transfer-encoding")
        extra = [(k, v) for k, v in pairs if k.lower() not in framing]
        ctype = None if any(k.lower() == "content-type" for k, _ in extra) else "text/plain"
        self._send(200, b"ok", ctype, extra)

    def _bytes(self, n: int, query: dict[str, str]) -> None:
        if n < 0:
            raise ValueError("negative size")
        seed = int(query.get("seed", "0"))
        hdrs = [("Content-Type", "application/octet-stream")]
        framing = pick_framing(query)
        if query.get("gzip") == "1":
            hdrs.append(("Content-Encoding", "gzip"))
            # Two deterministic passes instead of buffering: first the length, then the data.
            length = sum(map(len, _gzip_chunks(iter_pattern(n, seed))))
            self._stream(_gzip_chunks(iter_pattern(n, seed)), framing, length, hdrs)
        else:
            self._stream(iter_pattern(n, seed), framing, n, hdrs)


def pick_framing(query: dict[str, str]) -> str:
    return (
        "chunked"
        if query.get("chunked") == "1"
        else "close"
        if query.get("close") == "1"
        else "length"
    )
