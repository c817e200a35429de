"""The load generator's HTTP/1.1 client: an asyncio Protocol that parses responses in place.

Bodies are counted, never kept, so the same protocol serves 1 KiB keep-alive requests and
100 MiB downloads. Through a proxy, plain requests use the absolute form and TLS goes through
``CONNECT host:port`` followed by ``loop.start_tls`` on the same protocol.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any, TypeVar

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _IDLE = range(8)
_MAX_HEAD = 64 * 1024


@dataclass
class Target:
    host: str
    port: int
    proxy_port: int = 0
    tls: bool = False
    sni: str = ""
    context: ssl.SSLContext | None = None


class ClientProtocol(asyncio.Protocol):
    """One client connection. Subclasses override :meth:`response_complete`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.finished: asyncio.Future[str | None] = loop.create_future()
        self.response: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._tunnel: asyncio.Future[int] | None = None
        self._buffer = b""
        self._state = _IDLE
        self._remaining = 0
        self._status = 0
        self._body = 0
        self._closing = False
        self._by_us = False

    # -- life cycle ------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _UNTIL_CLOSE:
            self._state = _IDLE
            self.response_complete(self._status, self._body, True)
        elif self._state != _IDLE and not self._by_us:
            reason = f"connection lost mid-response ({type(exc).__name__ if exc else 'EOF'})"
            self._fail(reason)
        elif not self._by_us and not self.finished.done():
            self.finished.set_result("connection closed by peer while idle")
        if not self.finished.done():
            self.finished.set_result(None)

    def _fail(self, reason: str) -> None:
        for future in (self.response, self._tunnel):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(reason))
        if not self.finished.done():
            self.finished.set_result(reason)

    def finish(self) -> None:
        """Close the connection on purpose (not an error)."""
        self._by_us = True
        if self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)

    async def tunnel(self, authority: str) -> None:
        """Send CONNECT and wait for the proxy's 2xx."""
        self._tunnel = asyncio.get_running_loop().create_future()
        self._state = _HEAD
        self.transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
                             .encode("ascii"))
        status = await self._tunnel
        self._tunnel = None
        if not 200 <= status < 300:
            raise ConnectionError(f"proxy answered CONNECT with {status}")

    def expect_response(self) -> None:
        self._state = _HEAD
        self._body = 0

    def response_complete(self, status: int, body: int, closing: bool) -> None:
        if not self.response.done():
            self.response.set_result((status, body))

    # -- parsing ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _BODY or state == _CHUNK_DATA:
                take = min(end - pos, self._remaining)
                self._remaining -= take
                self._body += take
                pos += take
                if self._remaining == 0:
                    if state == _BODY:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
            elif state == _HEAD:
                stop = data.find(b"\r\n\r\n", pos)
                if stop < 0:
                    self._keep(data, pos)
                    return
                self._head(data[pos:stop])
                pos = stop + 4
            elif state == _CHUNK_SIZE:
                stop = data.find(b"\r\n", pos)
                if stop < 0:
                    self._keep(data, pos)
                    return
                size = int(data[pos:stop].split(b";")[0], 16)
                pos = stop + 2
                self._remaining = size
                self._state = _CHUNK_DATA if size else _TRAILERS
            elif state == _CHUNK_END:
                if end - pos < 2:
                    self._keep(data, pos)
                    return
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if data.startswith(b"\r\n", pos):
                    pos += 2
                    self._complete()
                    continue
                stop = data.find(b"\r\n\r\n", pos)
                if stop < 0:
                    self._keep(data, pos)
                    return
                pos = stop + 4
                self._complete()
            elif state == _UNTIL_CLOSE:
                self._body += end - pos
                return
            else:  # bytes while no response is expected
                self._fail("unexpected bytes from the server")
                self.transport.close()
                return

    def _keep(self, data: bytes, pos: int) -> None:
        self._buffer = data[pos:]
        if len(self._buffer) > _MAX_HEAD:
            self._fail("response head too large")
            self.transport.close()

    def _head(self, head: bytes) -> None:
        try:
            status = int(head[9:12])
        except ValueError:
            self._fail(f"bad status line {head[:40]!r}")
            self.transport.close()
            return
        self._status = status
        if self._tunnel is not None:
            self._state = _IDLE
            self._tunnel.set_result(status)
            return
        lower = head.lower()
        self._closing = b"\r\nconnection: close" in lower
        if status < 200:  # 1xx: the real response follows
            return
        start = lower.find(b"\r\ncontent-length:")
        if status in (204, 304):
            self._complete()
        elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
            self._state = _CHUNK_SIZE
        elif start >= 0:
            stop = lower.find(b"\r\n", start + 2)
            length = int(lower[start + 17 : stop if stop >= 0 else None])
            self._remaining = length
            self._state = _BODY
            if length == 0:
                self._complete()
        else:
            self._state = _UNTIL_CLOSE

    def _complete(self) -> None:
        self._state = _IDLE
        self.response_complete(self._status, self._body, self._closing)


P = TypeVar("P", bound=ClientProtocol)


async def open_connection(target: Target, factory: Any) -> Any:
    """Connect (directly, or through the proxy with CONNECT for TLS); returns the protocol."""
    loop = asyncio.get_running_loop()
    name = target.sni or target.host
    if not target.proxy_port:
        if target.tls:
            _, protocol = await loop.create_connection(factory, target.host, target.port,
                                                       ssl=target.context, server_hostname=name)
        else:
            _, protocol = await loop.create_connection(factory, target.host, target.port)
        return protocol
    transport, protocol = await loop.create_connection(factory, "127.0.0.1", target.proxy_port)
    if target.tls:
        assert target.context is not None
        try:
            await protocol.tunnel(f"{target.host}:{target.port}")
            protocol.transport = await loop.start_tls(transport, protocol, target.context,
                                                      server_hostname=name)
        except BaseException:
            transport.close()
            raise
    return protocol
