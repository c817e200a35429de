"""SOCKS on an engine stream: exact reads, addresses (RFC 1928), and the client side that
upstream connections use (SOCKS4, 4a, 5 and 5h, with credentials).

The server side (the ``socks5`` listener) is :mod:`nectoproxy.proxy.socks`; both share the
address encoding here. python-socks does this too, but over streams of its own; the engine
keeps to :class:`~nectoproxy.proxy.streams.EngineStream` (the loop's transports, TLS in place).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import anyio

from nectoproxy.proxy.streams import EngineStream

#: RFC 1928 address types.
IPV4, DOMAIN, IPV6 = 1, 3, 4
#: RFC 1928 replies.
SUCCEEDED, GENERAL_FAILURE, NOT_ALLOWED, NETWORK_UNREACHABLE, HOST_UNREACHABLE, \
    CONNECTION_REFUSED, TTL_EXPIRED, COMMAND_NOT_SUPPORTED, ADDRESS_NOT_SUPPORTED = range(9)
REPLY_TEXT = {
    GENERAL_FAILURE: "general failure", NOT_ALLOWED: "not allowed by ruleset",
    NETWORK_UNREACHABLE: "network unreachable", HOST_UNREACHABLE: "host unreachable",
    CONNECTION_REFUSED: "connection refused", TTL_EXPIRED: "TTL expired",
    COMMAND_NOT_SUPPORTED: "command not supported",
    ADDRESS_NOT_SUPPORTED: "address type not supported",
}
SOCKS4_GRANTED = 0x5A


class SocksError(Exception):
    """A SOCKS exchange failed; ``reply`` is the RFC 1928 code that says why."""

    def __init__(self, message: str, reply: int = GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


async def read_exactly(stream: EngineStream, count: int) -> bytes:
    """``count`` bytes (what arrives beyond them stays on the stream); EndOfStream if the
    peer closes first."""
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive(65536)
        data += chunk
    if len(data) > count:
        stream.unread(data[count:])
    return bytes(data[:count])


def encode_address(host: str, port: int) -> bytes:
    """ATYP, DST.ADDR and DST.PORT for ``host`` (an IP address, else a domain name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise SocksError(f"host name {host!r} cannot be sent over SOCKS") from None
        return bytes([DOMAIN, len(name)]) + name + struct.pack("!H", port)
    kind = IPV4 if address.version == 4 else IPV6
    return bytes([kind]) + address.packed + struct.pack("!H", port)


async def read_address(stream: EngineStream) -> tuple[str, int]:
    """ATYP, DST.ADDR and DST.PORT; SocksError(ADDRESS_NOT_SUPPORTED) for an unknown type,
    SocksError(GENERAL_FAILURE) for a name that is not one."""
    kind = (await read_exactly(stream, 1))[0]
    if kind == IPV4:
        host = socket.inet_ntop(socket.AF_INET, await read_exactly(stream, 4))
    elif kind == IPV6:
        host = socket.inet_ntop(socket.AF_INET6, await read_exactly(stream, 16))
    elif kind == DOMAIN:
        raw = await read_exactly(stream, (await read_exactly(stream, 1))[0])
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError:
            host = ""
        if not host or not all(c.isalnum() or c in "-._" for c in host):
            raise SocksError(f"bad host name {raw[:80]!r}")
    else:
        raise SocksError(f"unknown address type {kind}", ADDRESS_NOT_SUPPORTED)
    port = struct.unpack("!H", await read_exactly(stream, 2))[0]
    return host, port


async def client_handshake(stream: EngineStream, version: str, host: str, port: int,
                           username: str | None, password: str | None) -> None:
    """Ask the SOCKS server on ``stream`` to connect to ``host:port``; SocksError if it
    refuses. ``version`` is "socks4", "socks4a", "socks5" or "socks5h" (the "a" and "h" kinds
    send the name for the server to resolve; the others resolve it here)."""
    if version in ("socks4", "socks5"):
        host = await _resolve(host, port, ipv4_only=version == "socks4")
    try:
        if version.startswith("socks4"):
            await _socks4(stream, host, port, username or "", names=version == "socks4a")
        else:
            await _socks5(stream, host, port, username, password)
    except anyio.EndOfStream:
        raise SocksError("the SOCKS server closed the connection") from None


async def _resolve(host: str, port: int, *, ipv4_only: bool) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    family = socket.AF_INET if ipv4_only else socket.AF_UNSPEC
    try:
        infos = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SocksError(f"cannot resolve {host}: {exc.strerror}", HOST_UNREACHABLE) from None
    return str(infos[0][4][0])


async def _socks4(stream: EngineStream, host: str, port: int, user_id: str, *,
                  names: bool) -> None:
    try:
        address = ipaddress.IPv4Address(host).packed
        name = b""
    except ValueError:  # SOCKS4a: 0.0.0.x, and the name after the user id
        if not names:
            raise SocksError(f"SOCKS4 reaches IPv4 addresses only, not {host}",
                             ADDRESS_NOT_SUPPORTED) from None
        address, name = b"\0\0\0\1", host.encode("idna") + b"\0"
    await stream.send(b"\x04\x01" + struct.pack("!H", port) + address + user_id.encode() +
                      b"\0" + name)
    reply = await read_exactly(stream, 8)
    if reply[1] != SOCKS4_GRANTED:
        raise SocksError(f"the SOCKS4 server refused the connection (code {reply[1]:#x})",
                         NOT_ALLOWED)


async def _socks5(stream: EngineStream, host: str, port: int, username: str | None,
                  password: str | None) -> None:
    methods = b"\x00\x02" if username is not None else b"\x00"
    await stream.send(bytes([5, len(methods)]) + methods)
    version, method = await read_exactly(stream, 2)
    if version != 5:
        raise SocksError(f"not a SOCKS5 server (version {version})")
    if method == 2 and username is not None:
        user, secret = username.encode(), (password or "").encode()
        if len(user) > 255 or len(secret) > 255:
            raise SocksError("SOCKS5 username and password are limited to 255 bytes each")
        await stream.send(bytes([1, len(user)]) + user + bytes([len(secret)]) + secret)
        if (await read_exactly(stream, 2))[1] != 0:
            raise SocksError("the SOCKS5 server refused the username and password",
                             NOT_ALLOWED)
    elif method != 0:
        raise SocksError("the SOCKS5 server accepts none of the offered authentication "
                         "methods" + ("" if username is not None else " (it may want a "
                                      "username and password)"), NOT_ALLOWED)
    await stream.send(b"\x05\x01\x00" + encode_address(host, port))
    _, reply, _ = await read_exactly(stream, 3)
    await read_address(stream)
    if reply != SUCCEEDED:
        raise SocksError(f"the SOCKS5 server could not connect to {host}:{port}: "
                         f"{REPLY_TEXT.get(reply, f'code {reply}')}", reply)
