"""TLS to origins: a new connection to an origin resumes the session of an earlier one."""

from __future__ import annotations

import ssl
import time
from typing import Any

import h11
import pytest

from nectoproxy.config import config_from_dict
from nectoproxy.proxy.pool import Origins, TLSSessions
from nectoproxy.proxy.transport import TransportStream
from nectoproxy.proxy.upstream import Target, client_tls_context


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def fetch(upstream: Any, path: str) -> bytes:
    """One GET on ``upstream``; the body (reading it also takes in TLS 1.3 session tickets)."""
    await upstream.send(h11.Request(method="GET", target=path, headers=[("Host", "localhost")]))
    await upstream.send(h11.EndOfMessage())
    body = b""
    while True:
        event = await upstream.next_event(10)
        if type(event) is h11.Data:
            body += event.data
        elif type(event) is h11.EndOfMessage:
            return body


@pytest.mark.anyio
async def test_a_new_origin_connection_resumes_the_last_session(tls_origin, origin_ca_path):
    config = config_from_dict({"proxy": {"upstream_ca": origin_ca_path}}).proxy
    context = client_tls_context(config)
    origins = Origins(config, context)
    pool = origins.pool
    target = Target("https", "127.0.0.1", tls_origin.port, "localhost")

    first = await origins.open(target)
    try:
        assert isinstance(first.stream, TransportStream)
        assert first.stream.ssl_object is not None
        assert not first.stream.ssl_object.session_reused
        assert await fetch(first, "/bytes/100") != b""
        assert pool.tls_session(target) is None
        pool.remember_session(first)
        assert pool.tls_session(target) is not None
    finally:
        await first.aclose()

    second = await origins.open(target)
    try:
        assert isinstance(second.stream, TransportStream) and second.stream.ssl_object
        assert second.stream.ssl_object.session_reused  # abbreviated handshake
        assert len(await fetch(second, "/bytes/1000")) == 1000
    finally:
        await second.aclose()

    other = Target("https", "127.0.0.1", tls_origin.port, "127.0.0.1")  # another name: no reuse
    third = await origins.open(other)
    try:
        assert isinstance(third.stream, TransportStream) and third.stream.ssl_object
        assert not third.stream.ssl_object.session_reused
    finally:
        await third.aclose()


def test_the_proxy_keeps_sessions_of_closed_origin_connections(make_proxy, tls_origin):
    with make_proxy() as proxy, proxy.client() as client:
        for _ in range(2):  # the origin closes after each response: two origin connections
            response = client.get(f"https://localhost:{tls_origin.port}/bytes/64?close=1")
            assert response.status_code == 200 and len(response.content) == 64
        pool = proxy.proxy.services.pool
        target = Target("https", "localhost", tls_origin.port, "localhost")
        assert pool.tls_session(target) is not None


def test_origin_closing_connections_does_not_read_a_session_per_connection(
        make_proxy, tls_origin, monkeypatch):
    """Each read of SSLObject.session copies the session, and CPython 3.10-3.13.0 leak that copy
    (gh-116810): reading it once per origin connection grew the proxy by ~6.5 KiB every time
    an origin closed its connection. The session is read after a full handshake only, and
    resumed from then on."""
    reads = []
    reused = []
    original = ssl.SSLObject.session

    def counted(self: ssl.SSLObject) -> Any:
        reads.append(self.server_hostname)
        return original.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(ssl.SSLObject, "session", property(counted, original.fset))
    real_learn = TLSSessions.learn

    def learn(self: TLSSessions, target: Target, sslobj: ssl.SSLObject, offered: bool) -> None:
        reused.append(sslobj.session_reused)
        real_learn(self, target, sslobj, offered)

    monkeypatch.setattr(TLSSessions, "learn", learn)
    with make_proxy() as proxy, proxy.client() as client:
        for _ in range(40):  # the origin closes after each response: 40 origin connections
            response = client.get(f"https://localhost:{tls_origin.port}/bytes/100?close=1")
            assert response.status_code == 200 and len(response.content) == 100
        for _ in range(10):  # and answers without a body, then closes
            assert client.get(f"https://localhost:{tls_origin.port}/close").status_code == 502
    assert len(reused) == 50
    assert reused[0] is False and all(reused[1:]), reused  # every later handshake resumed
    assert reads == ["localhost"]


class FakeSession:
    def __init__(self, resumable: bool = True) -> None:
        self.has_ticket = resumable
        self.id = b""
        self.time = int(time.time())
        self.timeout = 7200
        self.ticket_lifetime_hint = 7200


class FakeSSLObject:
    def __init__(self, reused: bool, session: FakeSession | None) -> None:
        self.session_reused = reused
        self._session = session
        self.reads = 0

    @property
    def session(self) -> FakeSession | None:
        self.reads += 1
        return self._session


def test_sessions_back_off_from_origins_that_do_not_resume():
    sessions = TLSSessions()
    target = Target("https", "a.test", 443, "a.test")
    nothing = FakeSSLObject(reused=False, session=FakeSession(resumable=False))
    sessions.learn(target, nothing, offered=False)
    assert sessions.offer(target) is None
    sessions.learn(target, nothing, offered=False)  # within the back-off: not read again
    assert nothing.reads == 1

    refuser = Target("https", "b.test", 443, "b.test")
    issued = FakeSSLObject(reused=False, session=FakeSession())
    sessions.learn(refuser, issued, offered=False)
    assert sessions.offer(refuser) is not None
    sessions.learn(refuser, issued, offered=True)  # refused once: the new one is kept
    assert sessions.offer(refuser) is not None
    sessions.learn(refuser, issued, offered=True)  # twice in a row: leave it alone
    assert sessions.offer(refuser) is None
    sessions.learn(refuser, issued, offered=False)
    assert issued.reads == 3

    expired = Target("https", "c.test", 443, "c.test")
    old = FakeSession()
    old.time -= 7200
    sessions.learn(expired, FakeSSLObject(reused=False, session=old), offered=False)
    assert sessions.offer(expired) is None


def test_session_tables_are_bounded():
    sessions = TLSSessions()
    for n in range(TLSSessions.CAPACITY + 10):
        target = Target("https", f"h{n}.test", 443, f"h{n}.test")
        sessions.learn(target, FakeSSLObject(reused=False, session=FakeSession()), offered=False)
        other = Target("https", f"n{n}.test", 443, f"n{n}.test")
        sessions.learn(other, FakeSSLObject(reused=False, session=None), offered=False)
    assert len(sessions) == TLSSessions.CAPACITY
    assert len(sessions._quiet_until) == TLSSessions.CAPACITY
