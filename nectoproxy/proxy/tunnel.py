"""CONNECT: answer 200, then intercept the TLS inside (or relay it untouched).

The first bytes after the 200 decide: a TLS ClientHello is peeked at for its SNI, a leaf for
that name is fetched from the CA service, and the client's TLS is terminated with it; anything
that parses as HTTP is served as plain HTTP; everything else is relayed as opaque bytes.
"""

from __future__ import annotations

import fnmatch
import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import h11
from anyio.streams.tls import TLSAttribute, TLSStream

from nectoproxy.errors import CertError, NectoProxyError
from nectoproxy.flow import TLSInfo, split_host_port
from nectoproxy.proxy.streams import TransportStream, with_prefix
from nectoproxy.proxy.upstream import EarlyUpstream, Target, open_stream

if TYPE_CHECKING:
    from nectoproxy.proxy.exchange import ClientSession

log = logging.getLogger("nectoproxy.tunnel")
_MAX_CLIENT_HELLO = 16384 + 5
_HTTP_METHOD_START = tuple(m.encode() + b" " for m in
                           ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE"))


class PrefixedStream(anyio.abc.ByteStream):
    """A byte stream that first returns bytes already read from it (the peeked ClientHello)."""

    def __init__(self, prefix: bytes, stream: anyio.abc.ByteStream) -> None:
        self._prefix = prefix
        self._stream = stream
        # Every send of an intercepted connection passes through here: skip this layer.
        self.send = stream.send  # type: ignore[method-assign]
        if not prefix:
            self.receive = stream.receive  # type: ignore[method-assign]

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            if not self._prefix:
                self.receive = self._stream.receive  # type: ignore[method-assign]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._stream.extra_attributes


def client_hello_sni(data: bytes) -> tuple[bool, str | None]:
    """(whether ``data`` holds the whole first TLS record, the SNI host name in it if any)."""
    if len(data) < 5:
        return False, None
    length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + length:
        return False, None
    try:
        body = data[5 : 5 + length]
        if body[0] != 1:  # not a ClientHello
            return True, None
        pos = 4 + 2 + 32  # handshake header, client_version, random
        pos += 1 + body[pos]  # session id
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher suites
        pos += 1 + body[pos]  # compression methods
        end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= min(end, len(body)):
            ext_type = int.from_bytes(body[pos : pos + 2], "big")
            ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
            pos += 4
            if ext_type == 0:  # server_name: list length, type (0 = host_name), name length
                name_len = int.from_bytes(body[pos + 3 : pos + 5], "big")
                if body[pos + 2] == 0:
                    return True, body[pos + 5 : pos + 5 + name_len].decode("ascii").lower()
            pos += ext_len
    except (IndexError, UnicodeDecodeError):
        pass
    return True, None


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Exact names, ``*.example.com`` (any subdomain) and shell globs."""
    host = host.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern or fnmatch.fnmatchcase(host, pattern):
            return True
    return False


async def handle_connect(session: ClientSession, event: h11.Request) -> None:
    connection = session.connection
    config = session.config
    try:
        host, port = split_host_port(event.target.decode("ascii", errors="replace"))
    except ValueError as exc:
        await session._send_error(400, f"bad CONNECT target: {exc}")
        return
    connection.target = (host, port)
    connection.intercept = not host_matches(host, config.passthrough)
    if session.hooks.has("on_connect"):
        await session.hooks.call("on_connect", connection=connection)
    if connection.refused:
        status, reason = connection.refused
        await session._send_error(status, reason)
        return
    await session.client.send(h11.Response(status_code=200, headers=[],
                                           reason=b"Connection established"))
    stream = session.client.stream
    prefix = bytes(session.client.h11.trailing_data[0])
    try:
        with anyio.fail_after(config.tls_handshake_timeout):
            prefix = await _peek(stream, prefix)
    except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        return
    if not prefix:
        return
    stream = with_prefix(stream, prefix)
    if prefix[0] == 0x16:
        _, sni = client_hello_sni(prefix)
        if connection.intercept and not (sni and host_matches(sni, config.passthrough)):
            await _intercept(session, stream, host, port, sni)
        else:
            await _relay_to(session, stream, host, port)
    elif prefix.startswith(_HTTP_METHOD_START):
        from nectoproxy.proxy.exchange import ClientSession

        inner = ClientSession(session.services, stream, connection, tunnel_target=(host, port))
        await inner.run()
    else:
        await _relay_to(session, stream, host, port)


async def _peek(stream: anyio.abc.ByteStream, prefix: bytes) -> bytes:
    """Read until the first bytes say what they are: a whole ClientHello record, or not TLS."""
    data = bytearray(prefix)
    while True:
        if data and data[0] != 0x16:
            return bytes(data)
        if data and (client_hello_sni(bytes(data))[0] or len(data) >= _MAX_CLIENT_HELLO):
            return bytes(data)
        chunk = await stream.receive(_MAX_CLIENT_HELLO)
        data += chunk


async def _intercept(session: ClientSession, stream: anyio.abc.ByteStream, host: str, port: int,
                     sni: str | None) -> None:
    name = sni or host
    early = None
    async with anyio.create_task_group() as group:
        if session.config.connection_strategy == "eager":
            services = session.services
            early = EarlyUpstream(Target("https", host, port, name))
            group.start_soon(early.connect, services.pool, session.config, services.upstream_tls)
        try:
            await _serve_intercepted(session, stream, host, port, sni, name, early)
        finally:
            group.cancel_scope.cancel()  # an eager connect still running is not needed
    if early is not None:
        await early.discard()


async def _serve_intercepted(session: ClientSession, stream: anyio.abc.ByteStream, host: str,
                             port: int, sni: str | None, name: str,
                             early: EarlyUpstream | None) -> None:
    from nectoproxy.proxy.exchange import ClientSession

    try:
        context = await session.services.certs.server_context(name)
    except CertError as exc:
        log.error("cannot make a certificate for %s: %s", name, exc)
        return
    try:
        with anyio.fail_after(session.config.tls_handshake_timeout):
            if isinstance(stream, TransportStream):
                await stream.start_tls(context, server_side=True)
                tls: anyio.abc.ByteStream = stream
            else:
                tls = await TLSStream.wrap(stream, server_side=True, ssl_context=context,
                                           standard_compatible=False)
    except (TimeoutError, ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError,
            OSError) as exc:
        # Typically the client does not trust our CA yet; say so once, without a traceback.
        log.info("TLS handshake with client %s for %s failed: %s",
                 session.connection.client_address[0], name, _tls_reason(exc))
        await stream.aclose()
        return
    ssl_object = tls.extra(TLSAttribute.ssl_object)
    cipher = ssl_object.cipher()
    session.connection.tls = TLSInfo(sni=sni, version=ssl_object.version(),
                                     cipher=cipher[0] if cipher else None,
                                     alpn=ssl_object.selected_alpn_protocol())
    inner = ClientSession(session.services, tls, session.connection, scheme="https",
                          tunnel_target=(host, port), server_name=name, early=early)
    try:
        await inner.run()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await tls.aclose()
            except (OSError, ssl.SSLError, anyio.BrokenResourceError):
                pass


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"connection closed ({type(exc).__name__})"


async def _relay_to(session: ClientSession, client: anyio.abc.ByteStream, host: str,
                    port: int) -> None:
    try:
        upstream = await open_stream(host, port, session.config)
    except NectoProxyError as exc:
        log.info("pass-through tunnel to %s:%s failed: %s", host, port, exc)
        return
    await relay(client, upstream)


async def relay(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
    """Copy bytes both ways until both directions have ended; half-closes are passed on."""

    async def copy(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            while True:
                data = await source.receive(256 * 1024)
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError, ssl.SSLError):
            pass
        try:
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError,
                NotImplementedError):
            tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(copy, a, b)
            tg.start_soon(copy, b, a)
    finally:
        with anyio.CancelScope(shield=True):
            for stream in (a, b):
                try:
                    await stream.aclose()
                except (OSError, anyio.BrokenResourceError, ssl.SSLError):
                    pass
