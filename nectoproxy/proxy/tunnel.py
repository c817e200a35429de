"""CONNECT: answer 200, then intercept the TLS inside (or relay it untouched).

The first bytes after the 200 decide: a TLS ClientHello is peeked at for its SNI, a leaf for
that name is fetched from the CA service, and the client's TLS is terminated with it; anything
that parses as HTTP is served as plain HTTP; everything else is relayed as opaque bytes.
:func:`tunnel` hands the inner stream back to the session, which serves the requests in it.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.abc
import h11

from nectoproxy.certs import parse_host
from nectoproxy.errors import CertError, NectoProxyError
from nectoproxy.flow import Connection, TLSInfo, Tunnel, split_host_port
from nectoproxy.hosts import host_matches
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.http1 import HTTPConnection, send_error
from nectoproxy.proxy.pool import EarlyUpstream
from nectoproxy.proxy.streams import EngineStream, relay
from nectoproxy.proxy.upstream import Target

log = logging.getLogger("nectoproxy.tunnel")
_MAX_CLIENT_HELLO = 16384 + 5
_HTTP_METHOD_START = tuple(m.encode() + b" " for m in
                           ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE"))


@dataclass
class Inner:
    """What a CONNECT tunnel carries, for the session to serve: HTTP in plain text (``scheme``
    "http") or inside the TLS the proxy terminated ("https")."""

    stream: EngineStream
    scheme: str
    target: tuple[str, int]
    server_name: str | None = None
    early: EarlyUpstream | None = None
    #: The Host header every request gets (reverse mode), None to keep the client's.
    host_header: str | None = None


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


@asynccontextmanager
async def tunnel(services: Services, client: HTTPConnection, connection: Connection,
                 event: h11.Request) -> AsyncIterator[Inner | None]:
    """Serve ``CONNECT``: yields the inner stream to serve requests on, or None when there is
    nothing more to do (refused, relayed untouched, or the client left). An eager origin
    connection started meanwhile is given up when the block ends."""
    config = services.config.proxy
    try:
        host, port = split_host_port(event.target.decode("ascii", errors="replace"))
    except ValueError as exc:
        await send_error(client, 400, f"bad CONNECT target: {exc}")
        yield None
        return
    connection.target = (host, port)
    connection.intercept = not host_matches(host, config.passthrough)
    if services.hooks.has("on_connect"):
        await services.hooks.call("on_connect", connection=connection)
    if connection.refused:
        status, reason = connection.refused
        await send_error(client, status, reason)
        yield None
        return
    await client.send(h11.Response(status_code=200, headers=[],
                                   reason=b"Connection established"))
    async with inside_tunnel(services, client.stream, connection,
                             bytes(client.h11.trailing_data[0])) as inner:
        yield inner


@asynccontextmanager
async def inside_tunnel(services: Services, stream: EngineStream, connection: Connection,
                        prefix: bytes = b"") -> AsyncIterator[Inner | None]:
    """What follows an accepted tunnel to ``connection.target`` (a CONNECT's, a SOCKS
    CONNECT's): TLS intercepted or relayed, plain HTTP served, anything else relayed.
    ``prefix`` is what the client sent already."""
    config = services.config.proxy
    assert connection.target is not None
    host, port = connection.target
    try:
        with anyio.fail_after(config.tls_handshake_timeout):
            prefix = await peek(stream, prefix)
    except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        prefix = b""
    if not prefix:
        yield None
        return
    stream.unread(prefix)
    if prefix[0] == 0x16:
        _, sni = client_hello_sni(prefix)
        if connection.intercept and not (sni and host_matches(sni, config.passthrough)):
            async with _intercepted(services, stream, connection, host, port, sni) as inner:
                yield inner
            return
        await _relay_to(services, stream, Tunnel(connection, host, port, sni=sni))
        yield None
    elif prefix.startswith(_HTTP_METHOD_START):
        yield Inner(stream, "http", (host, port))
    else:
        await _relay_to(services, stream, Tunnel(connection, host, port, reason="opaque"))
        yield None


async def peek(stream: EngineStream, prefix: bytes) -> bytes:
    """Read until the first bytes say what they are: a whole ClientHello record, or not TLS."""
    data = bytearray(prefix)
    while True:
        if data and data[0] != 0x16:
            return bytes(data)
        if data and (client_hello_sni(bytes(data))[0] or len(data) >= _MAX_CLIENT_HELLO):
            return bytes(data)
        chunk = await stream.receive(_MAX_CLIENT_HELLO)
        data += chunk


@asynccontextmanager
async def _intercepted(services: Services, stream: EngineStream, connection: Connection,
                       host: str, port: int, sni: str | None) -> AsyncIterator[Inner | None]:
    name = sni if sni and _valid_name(sni) else host
    early = None
    async with anyio.create_task_group() as group:
        if services.config.proxy.connection_strategy == "eager":
            early = EarlyUpstream(Target("https", host, port, name))
            group.start_soon(early.connect, services.origins)
        try:
            if await handshake(services, stream, connection, name, sni):
                yield Inner(stream, "https", (host, port), name, early)
            else:
                yield None
        finally:
            group.cancel_scope.cancel()  # an eager connect still running is not needed
    if early is not None:
        await early.discard()


def _valid_name(sni: str) -> bool:
    """Whether a ClientHello's server name can name a certificate. Some clients send what is
    not a host name (Go's hey sends "host:port"); the CONNECT target names the leaf then."""
    try:
        parse_host(sni)
    except CertError:
        log.debug("client sent an unusable server name %r; using the CONNECT target", sni)
        return False
    return True


async def handshake(services: Services, stream: EngineStream, connection: Connection,
                     name: str, sni: str | None) -> bool:
    """Terminate the client's TLS with a leaf for ``name``; False if that failed."""
    try:
        context = await services.certs.server_context(name)
    except CertError as exc:
        log.error("cannot make a certificate for %s: %s", name, exc)
        return False
    try:
        with anyio.fail_after(services.config.proxy.tls_handshake_timeout):
            await stream.start_tls(context, server_side=True)
    except (TimeoutError, ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError,
            OSError) as exc:
        # Typically the client does not trust our CA yet; say so once, without a traceback.
        log.info("TLS handshake with client %s for %s failed: %s",
                 connection.client_address[0], name, _tls_reason(exc))
        return False
    ssl_object = stream.ssl_object
    assert ssl_object is not None
    cipher = ssl_object.cipher()
    connection.tls = TLSInfo(sni=sni, version=ssl_object.version(),
                             cipher=cipher[0] if cipher else None,
                             alpn=ssl_object.selected_alpn_protocol())
    return True


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"connection closed ({type(exc).__name__})"


async def _relay_to(services: Services, client: EngineStream, tunnel: Tunnel) -> None:
    """Relay the tunnel's bytes untouched; ``on_tunnel`` hears of it once it has ended."""
    try:
        upstream = await services.origins.open_stream(tunnel.host, tunnel.port)
    except NectoProxyError as exc:
        log.info("pass-through tunnel to %s:%s failed: %s", tunnel.host, tunnel.port, exc)
        tunnel.error = str(exc)
    else:
        try:
            peer = upstream.extra(anyio.abc.SocketAttribute.remote_address, None)
        except OSError:
            peer = None
        if isinstance(peer, tuple):
            tunnel.server_address = (str(peer[0]), int(peer[1]))
        try:
            tunnel.bytes_up, tunnel.bytes_down = await relay(client, upstream)
        finally:
            tunnel.timestamp_end = time.time()
    tunnel.timestamp_end = tunnel.timestamp_end or time.time()
    if services.hooks.has("on_tunnel"):
        with anyio.CancelScope(shield=True):
            await services.hooks.call("on_tunnel", tunnel=tunnel)
