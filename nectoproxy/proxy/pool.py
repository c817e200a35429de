"""Reusing origin connections: the shared pool of idle ones, TLS sessions for resumption, the
eager connect of an intercepted CONNECT, and :class:`Origins`, what the engine asks for one."""

from __future__ import annotations

import ssl
import time
from collections import OrderedDict

import anyio

from nectoproxy.config import ProxyConfig
from nectoproxy.errors import UpstreamError
from nectoproxy.proxy.streams import EngineStream
from nectoproxy.proxy.upstream import Target, Upstream, open_stream, open_upstream
from nectoproxy.proxy.upstream2 import H2OriginConnection


class Origins:
    """Where sessions get origin connections: from the pool, or new (offering the TLS session
    kept for that origin); the stream kind (:mod:`.sockets`) is chosen here, once."""

    def __init__(self, config: ProxyConfig, tls_context: ssl.SSLContext,
                 loop_transports: bool = True) -> None:
        self.config = config
        self.tls_context = tls_context
        self.loop_transports = loop_transports
        self.pool = UpstreamPool(idle_timeout=min(config.idle_timeout, 30.0),
                                 max_idle=config.max_connections)
        #: Origins that chose HTTP/2 the last time, and those an HTTP/2 connection is being
        #: opened to now.
        self._h2_targets: set[Target] = set()
        self._opening: dict[Target, anyio.Event] = {}

    async def get(self, target: Target) -> Upstream:
        """A new stream on the HTTP/2 connection to ``target``, an idle pooled connection,
        or a new one."""
        if self.pool.h2 and (stream := self.pool.h2_stream(target)) is not None:
            return stream
        if self._h2_targets and target in self._h2_targets:
            return await self._h2_stream(target)
        return await self.pool.take(target) or await self.open(target)

    async def _h2_stream(self, target: Target) -> Upstream:
        """For an origin known to speak HTTP/2: wait for the connection being opened to it
        rather than open one more (the many streams of a page all start at once)."""
        opening = self._opening.get(target)
        if opening is not None:
            await opening.wait()
            # (If that failed, or its connection is full, this stream tries on its own.)
            return self.pool.h2_stream(target) or await self.open(target)
        self._opening[target] = anyio.Event()
        try:
            return await self.open(target)
        finally:
            self._opening.pop(target).set()

    async def open(self, target: Target) -> Upstream:
        upstream = await open_upstream(target, self.config, self.tls_context,
                                       self.pool.tls_session(target), self.loop_transports)
        if upstream.negotiated_h2:  # shared from now on, a stream per flow
            self._h2_targets.add(target)
            connection = H2OriginConnection(upstream, self.config.http2_max_header_list_size)
            stream = connection.new_stream()  # (before any await: it is in use from now)
            await self.pool.add_h2(connection)
            return stream
        self._h2_targets.discard(target)
        return upstream

    async def open_stream(self, host: str, port: int) -> EngineStream:
        """A byte stream to ``host:port`` (pass-through tunnels), via the upstream proxy too."""
        return await open_stream(host, port, self.config, self.loop_transports)


class OriginSlot:
    """The origin connection of one client connection: reused by its next request to the
    same origin, handed to the shared pool while the client idles."""

    __slots__ = ("early", "origins", "upstream")

    def __init__(self, origins: Origins, early: EarlyUpstream | None = None) -> None:
        self.origins = origins
        #: The origin connection an intercepted CONNECT started eagerly, until first used.
        self.early = early
        self.upstream: Upstream | None = None

    async def get(self, target: Target) -> Upstream:
        if self.early is not None:
            early, self.early = self.early, None
            if early.target == target:
                self.upstream = await early.take()
                return self.upstream
            await early.discard()  # a plugin sent the request elsewhere
        if self.upstream is not None:
            if self.upstream.target == target and self.upstream.reusable:
                self.upstream.h11.start_next_cycle()
                return self.upstream
            await self.release()
        self.upstream = await self.origins.get(target)
        return self.upstream

    async def release(self) -> None:
        """Hand a reusable origin connection to the shared pool (or close it)."""
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            await self.origins.pool.put(upstream)

    async def drop(self) -> None:
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            self.origins.pool.remember_session(upstream)
            await upstream.aclose()

    def detach(self) -> Upstream:
        """Take the connection away for good (it now carries another protocol)."""
        upstream, self.upstream = self.upstream, None
        assert upstream is not None
        return upstream


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

    async def connect(self, origins: Origins) -> None:
        try:
            upstream = await origins.get(self.target)
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
        #: The HTTP/2 connection to each origin that chose it (each is shared, never idle).
        self.h2: dict[Target, H2OriginConnection] = {}
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
        sslobj = stream.ssl_object
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

    def h2_stream(self, target: Target) -> Upstream | None:
        """A new stream on the HTTP/2 connection to ``target``, if it can take one."""
        connection = self.h2.get(target)
        if connection is None or not connection.usable():
            return None
        return connection.new_stream()

    async def add_h2(self, connection: H2OriginConnection) -> None:
        old = self.h2.get(connection.target)
        self.h2[connection.target] = connection
        if old is not None:  # (closed by its last stream if it has some)
            old.retired = True
            if old.users == 0:
                await old.aclose()

    async def sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        deadline = time.monotonic() - self.idle_timeout
        for target, connection in list(self.h2.items()):
            if connection.users == 0 and (connection.idle_since < deadline
                                          or not connection.usable()):
                del self.h2[target]
                await connection.aclose()
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
        shared, self.h2 = self.h2, {}
        for connection in shared.values():
            await connection.aclose()
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
    is confused. A stream that reports its peer's end knows at once; anyio's read only while
    someone receives, so asking costs a syscall: not for connections idle under a second (a
    dead one is retried anyway).
    """
    stream = upstream.stream
    if not stream.reports_peer_end and idle_for < 1.0:
        return True
    return stream.quiet
