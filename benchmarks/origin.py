"""The benchmark origin on 127.0.0.1: nginx when installed, else a fast Python server.

Both serve ``/1k`` (1 KiB) and ``/100m`` (100 MiB) over HTTP and HTTPS, keep-alive, with a
trustme certificate for ``127.0.0.1``, ``localhost``, ``bench.test`` and ``*.bench.test``
(the "never-seen host" scenario sends SNI names ``hN.bench.test`` to 127.0.0.1).

Run directly, this module is the Python origin::

    python benchmarks/origin.py --http-port 8080 --https-port 8443 --cert c.pem --key k.pem
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMALL_SIZE = 1024
LARGE_SIZE = 100 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass
class OriginFiles:
    directory: Path
    cert: Path
    key: Path
    ca: Path


def make_files(directory: Path) -> OriginFiles:
    """The document root (1 KiB and 100 MiB files) and a trustme CA + server certificate."""
    import trustme

    www = directory / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "1k").write_bytes(b"x" * SMALL_SIZE)
    block = os.urandom(_CHUNK)
    with open(www / "100m", "wb") as large:
        large.writelines(block for _ in range(LARGE_SIZE // _CHUNK))
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", "bench.test", "*.bench.test")
    files = OriginFiles(directory, directory / "origin-cert.pem", directory / "origin-key.pem",
                        directory / "origin-ca.pem")
    leaf.private_key_pem.write_to_path(str(files.key))
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def nginx_config(files: OriginFiles, http_port: int, https_port: int) -> Path:
    d = files.directory
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the 0700 temp dir
    temp_paths = "".join(f"    {kind}_temp_path {d}/{kind};\n" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = f"""{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
{temp_paths}    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{http_port} reuseport backlog=4096;
        root {d}/www;
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl reuseport backlog=4096;
        ssl_certificate {files.cert};
        ssl_certificate_key {files.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:bench:10m;
        root {d}/www;
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(text)
    return path


def nginx_command(binary: str, files: OriginFiles, config: Path) -> list[str]:
    d = str(files.directory)
    return [binary, "-p", d, "-c", str(config), "-e", f"{d}/nginx-error.log"]


def python_command(files: OriginFiles, http_port: int, https_port: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--http-port", str(http_port),
            "--https-port", str(https_port), "--cert", str(files.cert), "--key", str(files.key)]


# -- the Python origin ------------------------------------------------------------------------

_SMALL_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: bench-origin\r\nContent-Type: "
                   b"application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + b"x" * SMALL_SIZE)
_LARGE_HEAD = (b"HTTP/1.1 200 OK\r\nServer: bench-origin\r\nContent-Type: "
               b"application/octet-stream\r\nContent-Length: %d\r\n\r\n" % LARGE_SIZE)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_BLOCK = memoryview(os.urandom(_CHUNK))


class OriginProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 with fixed answers; bodies of requests are not expected."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None
        self.paused = False
        self.large_left = 0  # bytes of /100m still to send
        self.close_after = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.large_left and not self.paused:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).lower()
            del self.buffer[:end + 4]
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            self.close_after = b"\r\nconnection: close" in head
            if path.endswith(b"/1k"):
                self.transport.write(_SMALL_RESPONSE)
            elif path.endswith(b"/100m"):
                self.transport.write(_LARGE_HEAD)
                self.large_left = LARGE_SIZE
                self._stream_large()
            else:
                self.transport.write(_NOT_FOUND)
            if self.close_after and not self.large_left:
                self.transport.close()
                return

    def _stream_large(self) -> None:
        while self.large_left and not self.paused:
            size = min(self.large_left, _CHUNK)
            self.transport.write(_BLOCK[:size])
            self.large_left -= size
        if not self.large_left and self.close_after:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.large_left:
            self._stream_large()
        if not self.large_left and self.buffer and not self.transport.is_closing():
            self._serve()


async def serve(http_port: int, https_port: int, cert: str, key: str) -> None:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    plain = await loop.create_server(OriginProtocol, "127.0.0.1", http_port, backlog=4096)
    secure = await loop.create_server(OriginProtocol, "127.0.0.1", https_port, ssl=context,
                                      backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    plain.close()
    secure.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="fast fixed-response origin for benchmarks")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.http_port, args.https_port, args.cert, args.key))


if __name__ == "__main__":
    main()
