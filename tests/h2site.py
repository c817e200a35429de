"""A small web site served over HTTP/2 for the browser tests: hypercorn (ASGI) over TLS with a
trustme certificate on 127.0.0.1, ALPN ``h2`` and ``http/1.1``, in a thread of its own.

The page (``/``) pulls a stylesheet, a script, four images and, from the script, a JSON
document; every answer records the HTTP version hypercorn served it with, so a test can tell
which protocol the proxy spoke to the origin.

:class:`H2Source` is an origin for back-pressure tests: the ``h2`` library on a blocking
socket, sending a large body only as the peer's flow-control windows allow, and counting what
it has sent (hypercorn accepts an application's body whatever the peer's window says).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "orange": (240, 150, 20)}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>h2 page</title>
<link rel="stylesheet" href="/style.css"></head>
<body><h1>Served over HTTP/2</h1>
<div class="tiles">{images}</div>
<p id="data">waiting for /data.json</p>
<script src="/app.js"></script></body></html>
"""

STYLE = """body { font: 20px sans-serif; background: #f4f1e8; margin: 24px; }
h1 { color: #203060; }
.tiles img { width: 96px; height: 96px; margin-right: 12px; border: 3px solid #203060; }
#data { font-weight: bold; color: #206020; }
"""

SCRIPT = """fetch("/data.json").then((r) => r.json()).then((d) => {
  document.getElementById("data").textContent = d.message;
  document.body.dataset.loaded = "yes";
});
"""

DATA = b'{"message": "data.json arrived"}'


def big_body(size: int) -> bytes:
    """Counted 8-digit blocks, so that a lost or repeated piece shows."""
    return b"".join(f"{n:08d}".encode() for n in range(size // 8 + 1))[:size]


def png(rgb: tuple[int, int, int], size: int = 48) -> bytes:
    """A solid-colour RGB PNG, ``size`` pixels square."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


def resources() -> dict[str, tuple[str, bytes]]:
    """path -> (content type, body) of everything the site serves."""
    images = "".join(f'<img src="/img/{name}.png" alt="{name}">' for name in COLOURS)
    served = {
        "/": ("text/html; charset=utf-8", PAGE.format(images=images).encode()),
        "/style.css": ("text/css", STYLE.encode()),
        "/app.js": ("text/javascript", SCRIPT.encode()),
        "/data.json": ("application/json", DATA),
    }
    for name, rgb in COLOURS.items():
        served[f"/img/{name}.png"] = ("image/png", png(rgb))
    served["/favicon.ico"] = ("image/png", png((32, 48, 96), 16))  # (Chromium asks for it)
    return served


class H2Site:
    """``with H2Site(ca, tmp_path) as site:`` serves on ``site.url`` until the block ends;
    ``site.versions`` maps each path to the HTTP versions it was served with."""

    def __init__(self, ca: Any, directory: Path) -> None:
        cert = ca.issue_cert("127.0.0.1")
        self.certfile, self.keyfile = directory / "h2site.pem", directory / "h2site.key"
        cert.cert_chain_pems[0].write_to_path(str(self.certfile))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.certfile), append=True)
        cert.private_key_pem.write_to_path(str(self.keyfile))
        self.resources = resources()
        self.versions: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="h2site", daemon=True)
        self._error: BaseException | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"].rpartition(".")[2]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        path = scope["path"]
        with self._lock:
            self.versions.setdefault(path, []).append(scope["http_version"])
        found = self.resources.get(path)
        status, (content_type, body) = (200, found) if found else (404, ("text/plain", b"no"))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-served-over", scope["http_version"].encode())]})
        await send({"type": "http.response.body", "body": body})

    def _run(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{self._socket.detach()}"]  # (hypercorn owns and closes it)
        config.certfile, config.keyfile = str(self.certfile), str(self.keyfile)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except Exception as exc:  # noqa: BLE001 - reported by __enter__ or __exit__
            self._error = exc
            self._started.set()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._started.wait(10), "hypercorn did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "hypercorn did not stop"
        if self._error is not None and exc is None:
            raise self._error


class H2Source:
    """``with H2Source(ca, size) as source:`` answers every request on ``source.port`` with
    ``big_body(size)``; ``source.sent`` is how many of those bytes it has sent so far."""

    def __init__(self, ca: Any, size: int) -> None:
        import h2.config
        import h2.connection

        from nectoproxy.testing.origin import RawServer

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        context.set_alpn_protocols(["h2"])
        self.size = size
        self.body = big_body(size)
        self.sent = 0
        self._connection = h2.connection.H2Connection
        self._config = h2.config.H2Configuration(client_side=False)
        self._server = RawServer(self._serve, ssl_context=context)

    @property
    def port(self) -> int:
        return self._server.port

    def _serve(self, sock: socket.socket) -> None:
        import h2.events

        conn = self._connection(self._config)
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sock.settimeout(30)
        stream_id: int | None = None
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived) and stream_id is None:
                    stream_id = event.stream_id
                    conn.send_headers(stream_id, [(":status", "200"),
                                                  ("content-length", str(self.size))])
            while stream_id is not None and self.sent < self.size:
                window = min(conn.local_flow_control_window(stream_id),
                             conn.max_outbound_frame_size)
                if window <= 0:
                    break
                piece = self.body[self.sent:self.sent + window]
                conn.send_data(stream_id, piece, end_stream=self.sent + len(piece) == self.size)
                self.sent += len(piece)
            sock.sendall(conn.data_to_send())

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stop()
        assert self._server.errors == [], self._server.errors
