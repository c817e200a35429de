"""The ``socks5`` listener: a SOCKS5 handshake (RFC 1928), then a tunnel like CONNECT's.

No authentication, or username/password (RFC 1929) when ``proxy.proxy_auth`` is set; the
CONNECT command only (BIND and UDP ASSOCIATE are answered "command not supported"); IPv4,
IPv6 and domain names. What the client sends after the success reply is sniffed as in a
CONNECT tunnel (:func:`nectoproxy.proxy.tunnel.inside_tunnel`). Bad input gets the reply code
that says what was wrong, a log line, and the connection closed.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from nectoproxy.flow import Connection, format_authority
from nectoproxy.hosts import host_matches
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.socksproto import (
    COMMAND_NOT_SUPPORTED,
    NOT_ALLOWED,
    SUCCEEDED,
    SocksError,
    read_address,
    read_exactly,
)
from nectoproxy.proxy.streams import STREAM_ERRORS, EngineStream
from nectoproxy.proxy.tunnel import Inner, inside_tunnel

log = logging.getLogger("nectoproxy.socks")
NO_AUTH, USERNAME_PASSWORD, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
#: The success reply's bound address: none that matters (the client talks through us).
_BOUND = b"\x01\0\0\0\0\0\0"
_SOCKS4_REJECTED = b"\x00\x5b\0\0\0\0\0\0"


@asynccontextmanager
async def socks5(services: Services, stream: EngineStream,
                 connection: Connection) -> AsyncIterator[Inner | None]:
    """Yields the tunnel's inner stream to serve requests on, or None when there is nothing
    more to do (bad input, refused, relayed untouched, or the client left)."""
    client = connection.client_address[0]
    try:
        with anyio.fail_after(services.config.proxy.header_timeout):
            target = await _handshake(stream, services.config.proxy.proxy_auth)
    except SocksError as exc:
        log.warning("SOCKS5 client %s: %s", client, exc)
        if exc.reply >= 0:
            await _reply(stream, exc.reply)
        yield None
        return
    except TimeoutError:
        log.info("SOCKS5 client %s: handshake not finished in time", client)
        yield None
        return
    except STREAM_ERRORS:
        yield None  # the client left mid-handshake
        return
    connection.target = target
    connection.intercept = not host_matches(target[0], services.config.proxy.passthrough)
    if services.hooks.has("on_connect"):
        await services.hooks.call("on_connect", connection=connection)
    if connection.refused:
        log.info("SOCKS5 client %s: CONNECT %s refused: %s", client,
                 format_authority(*target), connection.refused[1])
        await _reply(stream, NOT_ALLOWED)
        yield None
        return
    if not await _reply(stream, SUCCEEDED):
        yield None
        return
    async with inside_tunnel(services, stream, connection) as inner:
        yield inner


async def _handshake(stream: EngineStream, credentials: str) -> tuple[str, int]:
    """The greeting, the authentication and the request; the CONNECT target. A SocksError's
    reply is sent back (-1: none, the client would not understand it)."""
    version, count = await read_exactly(stream, 2)
    if version == 4:  # a SOCKS4 client understands its own "request rejected"
        await stream.send(_SOCKS4_REJECTED)
        raise SocksError("SOCKS4 is not served (only SOCKS5)", -1)
    if version != 5:
        raise SocksError(f"not SOCKS5 (version byte {version:#x})", -1)
    methods = await read_exactly(stream, count)
    wanted = USERNAME_PASSWORD if credentials else NO_AUTH
    if wanted not in methods:
        await stream.send(bytes([5, NO_ACCEPTABLE]))
        raise SocksError("offers no acceptable authentication method (" + (
            "username/password is required" if credentials else "only no-auth is served")
            + ")", -1)
    await stream.send(bytes([5, wanted]))
    if credentials:
        await _authenticate(stream, credentials)
    version, command, _ = await read_exactly(stream, 3)
    if version != 5:
        raise SocksError(f"request of version {version:#x}, not 5")
    target = await read_address(stream)
    if command != 1:
        raise SocksError(f"command {command} is not supported (only CONNECT)",
                         COMMAND_NOT_SUPPORTED)
    return target


async def _authenticate(stream: EngineStream, credentials: str) -> None:
    """RFC 1929, compared in constant time."""
    version, length = await read_exactly(stream, 2)
    user = await read_exactly(stream, length)
    password = await read_exactly(stream, (await read_exactly(stream, 1))[0])
    expected_user, _, expected_password = credentials.encode().partition(b":")
    same_user = hmac.compare_digest(user, expected_user)
    if version != 1 or not (hmac.compare_digest(password, expected_password) and same_user):
        await stream.send(b"\x01\x01")
        raise SocksError("username/password " + ("rejected" if version == 1
                                                  else f"of version {version:#x}"), -1)
    await stream.send(b"\x01\x00")


async def _reply(stream: EngineStream, code: int) -> bool:
    try:
        await stream.send(bytes([5, code, 0]) + _BOUND)
    except STREAM_ERRORS:
        return False
    return True

