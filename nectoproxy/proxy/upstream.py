"""Connections to origins: TCP (+ TLS), with every failure turned into an UpstreamError.

The status a client sees is decided here, once: unreachable, refused, DNS failure and TLS
verification failure are 502; a timeout is 504.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import h11
from anyio.streams.tls import TLSStream

from nectoproxy.config import ProxyConfig
from nectoproxy.errors import ConfigError, UpstreamError, UpstreamTimeout
from nectoproxy.flow import format_authority
from nectoproxy.proxy import streams
from nectoproxy.proxy.http1 import HTTPConnection, pause_until_read
from nectoproxy.proxy.streams import TransportStream

log = logging.getLogger("nectoproxy.upstream")


def client_tls_context(config: ProxyConfig) -> ssl.SSLContext:
    """The context for TLS to origins, built once: verified against the system store (plus
    ``upstream_ca``) unless ``ssl_insecure`` is set."""
    context = ssl.create_default_context()
    if config.upstream_ca:
        try:
            context.load_verify_locations(cafile=config.upstream_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"proxy.upstream_ca: cannot load {config.upstream_ca}: {exc}") from exc
    if config.ssl_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
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

    __slots__ = ("address", "requests_sent", "session_offered", "session_saved", "target", "via")

    def __init__(self, stream: anyio.abc.ByteStream, target: Target, max_header_size: int) -> None:
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
        try:
            peer = stream.extra(anyio.abc.SocketAttribute.remote_address, None)
        except OSError:
            peer = None
        if isinstance(peer, tuple):
            self.address = (str(peer[0]), int(peer[1]))


async def connect_tcp(host: str, port: int, timeout: float) -> anyio.abc.ByteStream:
    """TCP connection with the failures a user can act on spelled out."""
    where = format_authority(host, port)
    try:
        with anyio.fail_after(timeout):
            if streams.native():
                return await TransportStream.connect(host, port)
            stream = await anyio.connect_tcp(host, port)
        pause_until_read(stream)
        return stream
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
    """``upstream_proxy = "http://[user:pass@]host:port"``: where to chain requests to."""

    host: str
    port: int
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> UpstreamProxy:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"proxy.upstream_proxy: expected http://[user:pass@]host:port, "
                              f"got {url!r}")
        try:
            port = parts.port or 8080
        except ValueError:
            raise ConfigError(f"proxy.upstream_proxy: bad port in {url!r}") from None
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        return cls(parts.hostname, port, authorization)

    def __str__(self) -> str:
        return format_authority(self.host, self.port)


def upstream_proxy_for(host: str, config: ProxyConfig) -> UpstreamProxy | None:
    """The upstream proxy to use for ``host``, or None to connect directly."""
    if not config.upstream_proxy:
        return None
    from nectoproxy.proxy.tunnel import host_matches

    if host_matches(host, config.no_upstream):
        return None
    return UpstreamProxy.parse(config.upstream_proxy)


async def open_stream(host: str, port: int, config: ProxyConfig) -> anyio.abc.ByteStream:
    """A byte stream to ``host:port``: direct TCP, or a CONNECT tunnel via the upstream proxy."""
    via = upstream_proxy_for(host, config)
    if via is None:
        return await connect_tcp(host, port, config.connect_timeout)
    stream = await connect_tcp(via.host, via.port, config.connect_timeout)
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
    except (h11.ProtocolError, OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        await connection.aclose()
        raise UpstreamError(f"upstream proxy {via} failed on CONNECT {target}: {exc}") from None
    if not isinstance(event, h11.Response) or not 200 <= event.status_code < 300:
        await connection.aclose()
        status = getattr(event, "status_code", "?")
        reason = getattr(event, "reason", b"").decode("latin-1")
        raise UpstreamError(f"upstream proxy {via} refused CONNECT {target}: {status} {reason}")
    return streams.with_prefix(stream, bytes(connection.h11.trailing_data[0]))


async def open_upstream(
    target: Target, config: ProxyConfig, tls_context: ssl.SSLContext,
    pool: UpstreamPool | None = None,
) -> Upstream:
    """A new connection to ``target``; TLS resumes a session ``pool`` kept for it, if any."""
    via = upstream_proxy_for(target.host, config)
    if via is not None and target.scheme == "http":
        # Plain HTTP goes to the upstream proxy in absolute form, with its credentials.
        stream: anyio.abc.ByteStream = await connect_tcp(via.host, via.port,
                                                         config.connect_timeout)
        upstream = Upstream(stream, target, config.max_header_size)
        upstream.via = via
        return upstream
    stream = await open_stream(target.host, target.port, config)
    session = None
    if target.scheme == "https":
        session = pool.tls_session(target) if pool is not None else None
        stream = await start_tls(stream, target, config.tls_handshake_timeout, tls_context,
                                 session)
    upstream = Upstream(stream, target, config.max_header_size)
    upstream.session_offered = session is not None
    return upstream


async def start_tls(
    stream: anyio.abc.ByteStream, target: Target, timeout: float, context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> anyio.abc.ByteStream:
    name = target.server_name
    try:
        with anyio.fail_after(timeout):
            if isinstance(stream, TransportStream):
                await stream.start_tls(context, server_side=False, server_hostname=name,
                                       session=session)
                return stream
            return await TLSStream.wrap(
                stream,
                server_side=False,
                hostname=name,
                ssl_context=context,
                standard_compatible=False,
            )
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


class EarlyUpstream:
    """An origin connection opened while the client's TLS handshake runs.

    With ``connection_strategy = "eager"`` an intercepted CONNECT starts connecting to its
    target (TCP, TLS, verification) at once, in parallel with making the client's certificate
    and the client handshake; the first request on the tunnel then finds it ready. A failure
    is kept and raised only when a request needs this origin.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.upstream: Upstream | None = None
        self.error: UpstreamError | None = None
        self.done = anyio.Event()
        self.discarded = False

    async def connect(self, pool: UpstreamPool, config: ProxyConfig,
                      tls_context: ssl.SSLContext) -> None:
        try:
            upstream = await pool.take(self.target) or await open_upstream(
                self.target, config, tls_context, pool)
        except UpstreamError as exc:
            self.error = exc
        else:
            if self.discarded:  # nobody wants it any more (see discard)
                await upstream.aclose()
            else:
                self.upstream = upstream
        finally:
            self.done.set()

    async def take(self) -> Upstream:
        """The connection (waiting for it if need be), or the error that prevented it."""
        await self.done.wait()
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            assert self.error is not None
            raise self.error
        return upstream

    async def discard(self) -> None:
        """Close the connection if nobody took it (now, or once it is made)."""
        self.discarded = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            await upstream.aclose()




class TLSSessions:
    """The TLS session offered to each origin when a new connection to it is made.

    A session is read from a connection only after a full handshake, and then offered for as
    long as the origin accepts it and it has not expired (a TLS 1.2 session or a TLS 1.3 ticket
    may be resumed many times). Reading ``SSLObject.session`` is costly: CPython copies the
    session through DER, peer certificate and all, and CPython 3.10 to 3.13.0 leak that copy
    (about 6.5 KiB) on every read (CPython gh-116810). Reading it once per connection made the
    proxy grow by that much every time an origin closed a connection. So an origin that offers
    nothing resumable, or refuses twice in a row what it issued, is not asked again for
    :data:`BACKOFF` seconds, and every table here is bounded.
    """

    #: Origins whose session is kept (least recently stored dropped first).
    CAPACITY = 1024
    #: How long an origin that does not resume is left alone.
    BACKOFF = 3600.0

    def __init__(self) -> None:
        self._sessions: OrderedDict[Target, ssl.SSLSession] = OrderedDict()
        self._refusals: dict[Target, int] = {}
        self._quiet_until: OrderedDict[Target, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def offer(self, target: Target) -> ssl.SSLSession | None:
        """The session to offer on a new connection to ``target``, if a valid one is kept."""
        session = self._sessions.get(target)
        if session is not None and _expired(session):
            del self._sessions[target]
            return None
        return session

    def learn(self, target: Target, sslobj: ssl.SSLObject, offered: bool) -> None:
        """After a connection's first response (TLS 1.3 tickets come with it): keep its session
        if the handshake was a full one, ``offered`` telling whether one was offered."""
        if sslobj.session_reused:
            self._refusals.pop(target, None)
            return
        now = time.time()
        if self._quiet_until.get(target, 0.0) > now:
            return
        session = sslobj.session
        if session is None or not (session.has_ticket or session.id):
            self._sessions.pop(target, None)
            self._back_off(target, now)
            return
        if offered:
            refusals = self._refusals[target] = self._refusals.get(target, 0) + 1
            if refusals >= 2:  # it refuses what it issues (servers with different keys)
                self._sessions.pop(target, None)
                self._back_off(target, now)
                return
        self._sessions[target] = session
        self._sessions.move_to_end(target)
        while len(self._sessions) > self.CAPACITY:
            dropped, _ = self._sessions.popitem(last=False)
            self._refusals.pop(dropped, None)

    def _back_off(self, target: Target, now: float) -> None:
        self._refusals.pop(target, None)
        self._quiet_until[target] = now + self.BACKOFF
        self._quiet_until.move_to_end(target)
        while len(self._quiet_until) > self.CAPACITY:
            self._quiet_until.popitem(last=False)


def _expired(session: ssl.SSLSession) -> bool:
    lifetime = session.timeout
    if session.has_ticket and session.ticket_lifetime_hint:
        lifetime = min(lifetime, session.ticket_lifetime_hint)
    return time.time() >= session.time + lifetime - 5  # (not one that expires in flight)


class UpstreamPool:
    """Idle origin connections shared by all clients, so a client that comes back, or a new
    one, skips the TCP (and TLS) handshake; and idle clients do not each hold an origin
    connection open."""

    #: ``per_target``: enough for every keep-alive client of a busy origin to find its
    #: connection again (the load tests use 50), few enough that 1,000 idle clients do not
    #: keep 1,000 open. ``max_idle`` bounds them all (the proxy passes max_connections).
    def __init__(self, per_target: int = 64, idle_timeout: float = 30.0,
                 max_idle: int = 1024) -> None:
        self.per_target = per_target
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: dict[Target, list[tuple[float, Upstream]]] = {}
        self._count = 0
        #: Sessions offered when a new connection is made to an origin seen before (an
        #: abbreviated handshake: no certificate chain to send and verify again).
        self.tls_sessions = TLSSessions()

    def tls_session(self, target: Target) -> ssl.SSLSession | None:
        return self.tls_sessions.offer(target)

    def remember_session(self, upstream: Upstream) -> None:
        """Learn from ``upstream``'s TLS handshake, once per connection (after its first
        response, which brought the TLS 1.3 tickets)."""
        if upstream.session_saved:
            return
        upstream.session_saved = True
        stream = upstream.stream
        sslobj = stream.ssl_object if isinstance(stream, TransportStream) else None
        if sslobj is not None:
            self.tls_sessions.learn(upstream.target, sslobj, upstream.session_offered)

    async def put(self, upstream: Upstream) -> None:
        self.remember_session(upstream)
        idle = self._idle.setdefault(upstream.target, [])
        if not upstream.reusable or len(idle) >= self.per_target \
                or self._count >= self.max_idle:
            await upstream.aclose()
            return
        idle.append((time.monotonic(), upstream))
        self._count += 1

    async def take(self, target: Target) -> Upstream | None:
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            since, upstream = idle.pop()
            self._count -= 1
            if now - since < self.idle_timeout and _still_open(upstream, now - since):
                upstream.h11.start_next_cycle()
                return upstream
            await upstream.aclose()
        return None

    async def sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        deadline = time.monotonic() - self.idle_timeout
        expired: list[Upstream] = []
        # Taken out of the pool before the first await: a put() meanwhile must not be lost.
        for target, idle in list(self._idle.items()):
            keep = [(since, upstream) for since, upstream in idle if since >= deadline]
            expired += [upstream for since, upstream in idle if since < deadline]
            if keep:
                self._idle[target] = keep
            else:
                del self._idle[target]
        self._count -= len(expired)
        for upstream in expired:
            await upstream.aclose()

    async def close(self) -> None:
        idle, self._idle, self._count = self._idle, {}, 0
        for connections in idle.values():
            for _, upstream in connections:
                await upstream.aclose()

    def __len__(self) -> int:
        return self._count


def _still_open(upstream: Upstream, idle_for: float) -> bool:
    """Whether an idle pooled connection is still clean: nothing, not even EOF, is waiting.

    Between responses an origin has nothing to say (TLS 1.3 session tickets come with the
    first response and are read then), so pending bytes or an EOF mean the origin closed it or
    is confused. A native stream reads while idle and knows; anyio's stop reading while
    nobody receives, so their socket is peeked at (a syscall: only after a second idle).
    """
    stream = upstream.stream
    if isinstance(stream, TransportStream):
        return stream.quiet  # it reads while idle: an EOF or a reset is known already
    if idle_for < 1.0:
        return True  # a syscall per reuse is not worth it; a dead one is retried anyway
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if raw is None:
        return True
    if raw.fileno() < 0:
        return False  # closed already
    sock = socket.socket(fileno=raw.fileno())
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing to read: open and idle
    except OSError:
        return False
    finally:
        sock.detach()  # the fd still belongs to the event loop's transport
    return False
