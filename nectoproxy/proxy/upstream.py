"""Opening connections to origins: TCP (+ TLS), directly or through an upstream proxy, with
every failure turned into an UpstreamError, and the origin side's error mapping.

The status a client sees is decided here, once: unreachable, refused, DNS failure and TLS
verification failure are 502; a timeout is 504. Reusing connections is :mod:`.pool`'s.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import h11

from nectoproxy.config import UPSTREAM_SCHEMES, ProxyConfig
from nectoproxy.errors import ConfigError, UpstreamError, UpstreamTimeout
from nectoproxy.flow import ServerTLSInfo, format_authority, split_host_port
from nectoproxy.hosts import host_matches
from nectoproxy.proxy.http1 import HTTPConnection
from nectoproxy.proxy.sockets import connect
from nectoproxy.proxy.socksproto import SocksError, client_handshake
from nectoproxy.proxy.streams import STREAM_ERRORS, EngineStream

log = logging.getLogger("nectoproxy.upstream")


def client_tls_context(config: ProxyConfig) -> ssl.SSLContext:
    """The context for TLS to origins, built once: verified against the system store (plus
    ``upstream_ca``) unless ``ssl_insecure`` is set; offering ``h2`` when ``http2`` is on."""
    context = ssl.create_default_context()
    if config.upstream_ca:
        try:
            context.load_verify_locations(cafile=config.upstream_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"proxy.upstream_ca: cannot load {config.upstream_ca}: {exc}") from exc
    if config.ssl_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"] if config.http2 else ["http/1.1"])
    return context


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    #: The name sent as SNI and checked against the certificate (the client's SNI if it gave one).
    server_name: str

    def __str__(self) -> str:
        return format_authority(self.host, self.port)


class Upstream(HTTPConnection):
    """An HTTP/1.1 client connection to one origin."""

    __slots__ = ("_tls_info", "address", "opened_at", "requests_sent", "session_offered",
                 "session_saved", "target", "tcp_connected_at", "tls_established_at", "via")

    stream: EngineStream
    #: Whether this is one stream of an HTTP/2 connection (:mod:`.upstream2`).
    http2 = False

    def __init__(self, stream: EngineStream, target: Target, max_header_size: int) -> None:
        super().__init__(stream, h11.CLIENT, max_header_size)
        self.target = target
        self.requests_sent = 0
        #: Whether a kept TLS session was offered in its handshake; whether the pool has
        #: learnt from that handshake already.
        self.session_offered = False
        self.session_saved = False
        #: Set when plain HTTP is sent through an upstream proxy (absolute-form targets).
        self.via: UpstreamProxy | None = None
        self.address: tuple[str, int] | None = None
        #: When the connection was begun, its TCP connect ended and its TLS handshake ended
        #: (``time.time()``; None when not known, as for a connection made elsewhere).
        self.opened_at: float | None = None
        self.tcp_connected_at: float | None = None
        self.tls_established_at: float | None = None
        self._tls_info: ServerTLSInfo | None = None
        try:
            peer = stream.extra(anyio.abc.SocketAttribute.remote_address, None)
        except OSError:
            peer = None
        if isinstance(peer, tuple):
            self.address = (str(peer[0]), int(peer[1]))


    @property
    def negotiated_h2(self) -> bool:
        """Whether the origin chose HTTP/2 in its TLS handshake."""
        ssl_object = self.stream.ssl_object
        return ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"

    def tls_info(self) -> ServerTLSInfo | None:
        """The TLS details of this connection (read once), None for plain HTTP."""
        if self._tls_info is None and self.target.scheme == "https":
            ssl_object = self.stream.ssl_object
            if ssl_object is not None:
                cipher = ssl_object.cipher()
                self._tls_info = ServerTLSInfo(
                    sni=self.target.server_name, version=ssl_object.version(),
                    cipher=cipher[0] if cipher else None,
                    alpn=ssl_object.selected_alpn_protocol(),
                    certificate=ssl_object.getpeercert(binary_form=True))
        return self._tls_info


async def connect_tcp(host: str, port: int, timeout: float,
                      loop_transports: bool = True) -> EngineStream:
    """TCP connection with the failures a user can act on spelled out."""
    where = format_authority(host, port)
    try:
        with anyio.fail_after(timeout):
            return await connect(host, port, loop_transports=loop_transports)
    except TimeoutError:
        raise UpstreamTimeout(f"timed out after {timeout:g}s connecting to {where}") from None
    except socket.gaierror as exc:
        raise UpstreamError(f"cannot resolve {host}: {exc.strerror}") from None
    except OSError as exc:
        reason = _os_reason(exc)
        raise UpstreamError(f"cannot connect to {where}: {reason}") from None


def _os_reason(exc: OSError) -> str:
    # anyio wraps the per-address failures of happy eyeballs in one OSError.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError):
        exc = cause
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.errno:  # asyncio's own strerror is "Connect call failed (address)"
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


@dataclass(frozen=True)
class UpstreamProxy:
    """``upstream_proxy = "http://[user:pass@]host:port"`` (or ``socks4``, ``socks4a``,
    ``socks5``, ``socks5h``): where to chain requests to."""

    host: str
    port: int
    authorization: str | None
    scheme: str = "http"
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> UpstreamProxy:
        parts = urlsplit(url)
        if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname:
            raise ConfigError(f"proxy.upstream_proxy: expected http://[user:pass@]host:port "
                              f"(or socks4, socks4a, socks5, socks5h), got {url!r}")
        try:
            port = parts.port or (8080 if parts.scheme == "http" else 1080)
        except ValueError:
            raise ConfigError(f"proxy.upstream_proxy: bad port in {url!r}") from None
        authorization = username = password = None
        if parts.username is not None:
            username, password = unquote(parts.username), unquote(parts.password or "")
            credentials = f"{username}:{password}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        return cls(parts.hostname, port, authorization, parts.scheme, username, password)

    @property
    def is_socks(self) -> bool:
        return self.scheme != "http"

    def __str__(self) -> str:
        kind = f"{self.scheme}://" if self.is_socks else ""
        return kind + format_authority(self.host, self.port)


def mapped_address(host: str, port: int, config: ProxyConfig) -> tuple[str, int] | None:
    """Where ``proxy.hosts`` sends ``host`` (an exact name first, then the patterns in
    order), or None when it is not mapped."""
    hosts = config.hosts
    if not hosts:
        return None
    address = hosts.get(host) or hosts.get(host.lower())
    if address is None:
        address = next((a for pattern, a in hosts.items() if host_matches(host, [pattern])),
                       None)
    if address is None:
        return None
    try:
        return split_host_port(address, port)
    except ValueError:
        return address.strip("[]"), port  # a bare IPv6 address (validated with the file)


def upstream_proxy_for(host: str, config: ProxyConfig) -> UpstreamProxy | None:
    """The upstream proxy to use for ``host``, or None to connect directly (as to a host
    that ``proxy.hosts`` maps: it is reached at its mapped address)."""
    if not config.upstream_proxy or host_matches(host, config.no_upstream) \
            or mapped_address(host, 0, config) is not None:
        return None
    return UpstreamProxy.parse(config.upstream_proxy)


async def open_stream(host: str, port: int, config: ProxyConfig,
                      loop_transports: bool = True) -> EngineStream:
    """A byte stream to ``host:port``: direct TCP, or a CONNECT tunnel via the upstream proxy."""
    via = upstream_proxy_for(host, config)
    if via is None:
        host, port = mapped_address(host, port, config) or (host, port)
        return await connect_tcp(host, port, config.connect_timeout, loop_transports)
    stream = await connect_tcp(via.host, via.port, config.connect_timeout, loop_transports)
    if via.is_socks:
        await _socks_connect(stream, via, host, port, config.read_timeout)
        return stream
    target = format_authority(host, port)
    connection = HTTPConnection(stream, h11.CLIENT, config.max_header_size)
    headers = [("Host", target)]
    if via.authorization:
        headers.append(("Proxy-Authorization", via.authorization))
    try:
        with anyio.fail_after(config.read_timeout):
            await connection.send(h11.Request(method="CONNECT", target=target, headers=headers))
            await connection.send(h11.EndOfMessage())
            event = await connection.next_event()
    except TimeoutError:
        await connection.aclose()
        raise UpstreamTimeout(f"upstream proxy {via} did not answer CONNECT {target}") from None
    except (h11.ProtocolError, *STREAM_ERRORS) as exc:
        await connection.aclose()
        raise UpstreamError(f"upstream proxy {via} failed on CONNECT {target}: {exc}") from None
    if not isinstance(event, h11.Response) or not 200 <= event.status_code < 300:
        await connection.aclose()
        status = getattr(event, "status_code", "?")
        reason = getattr(event, "reason", b"").decode("latin-1")
        raise UpstreamError(f"upstream proxy {via} refused CONNECT {target}: {status} {reason}")
    stream.unread(bytes(connection.h11.trailing_data[0]))
    return stream


async def _socks_connect(stream: EngineStream, via: UpstreamProxy, host: str, port: int,
                         timeout: float) -> None:
    target = format_authority(host, port)
    try:
        with anyio.fail_after(timeout):
            await client_handshake(stream, via.scheme, host, port, via.username, via.password)
    except TimeoutError:
        await stream.aclose()
        raise UpstreamTimeout(f"upstream proxy {via} did not answer CONNECT {target}") from None
    except SocksError as exc:
        await stream.aclose()
        raise UpstreamError(f"upstream proxy {via} refused CONNECT {target}: {exc}") from None
    except STREAM_ERRORS as exc:
        await stream.aclose()
        raise UpstreamError(f"upstream proxy {via} failed on CONNECT {target}: "
                            f"{type(exc).__name__}") from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        raise


async def open_upstream(
    target: Target, config: ProxyConfig, tls_context: ssl.SSLContext,
    session: ssl.SSLSession | None = None, loop_transports: bool = True,
) -> Upstream:
    """A new connection to ``target``; its TLS handshake offers ``session`` for resumption."""
    via = upstream_proxy_for(target.host, config)
    opened_at = time.time()
    if via is not None and target.scheme == "http" and not via.is_socks:
        # Plain HTTP goes to an HTTP upstream proxy in absolute form, with its credentials.
        stream = await connect_tcp(via.host, via.port, config.connect_timeout, loop_transports)
        upstream = Upstream(stream, target, config.max_header_size)
        upstream.via = via
        upstream.opened_at, upstream.tcp_connected_at = opened_at, time.time()
        return upstream
    stream = await open_stream(target.host, target.port, config, loop_transports)
    connected_at = time.time()
    if target.scheme == "https":
        await start_tls(stream, target, config.tls_handshake_timeout, tls_context, session)
    upstream = Upstream(stream, target, config.max_header_size)
    upstream.session_offered = session is not None and target.scheme == "https"
    upstream.opened_at, upstream.tcp_connected_at = opened_at, connected_at
    if target.scheme == "https":
        upstream.tls_established_at = time.time()
    return upstream


async def start_tls(
    stream: EngineStream, target: Target, timeout: float, context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> None:
    name = target.server_name
    try:
        with anyio.fail_after(timeout):
            await stream.start_tls(context, server_side=False, server_hostname=name,
                                   session=session)
    except TimeoutError:
        await stream.aclose()
        raise UpstreamTimeout(f"TLS handshake with {name} timed out after {timeout:g}s") from None
    except ssl.SSLCertVerificationError as exc:
        await stream.aclose()
        raise UpstreamError(
            f"TLS certificate verification failed for {name}: {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        await stream.aclose()
        raise UpstreamError(f"TLS handshake with {name} failed: {exc.reason or exc}") from None
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        await stream.aclose()
        raise UpstreamError(f"TLS handshake with {name} failed: connection closed "
                            f"({type(exc).__name__})") from None
    except BaseException:  # cancelled (an eager connection nobody waits for any more)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        raise


class upstream_errors:  # (lower case: used like a function, ``with upstream_errors(t):``)
    """Turns a stream failure while talking to an origin into an UpstreamError (502), the one
    place where that direction's errors are mapped."""

    __slots__ = ("_target",)

    def __init__(self, target: Target) -> None:
        self._target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, STREAM_ERRORS):
            raise UpstreamError(f"connection to {self._target} lost: {type(exc).__name__}") \
                from None
