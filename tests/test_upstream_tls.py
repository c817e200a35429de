"""TLS to origins: a new connection to an origin resumes the session of an earlier one."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from nectoproxy.config import config_from_dict
from nectoproxy.proxy.streams import TransportStream
from nectoproxy.proxy.upstream import Target, UpstreamPool, client_tls_context, open_upstream


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
    pool = UpstreamPool()
    target = Target("https", "127.0.0.1", tls_origin.port, "localhost")

    first = await open_upstream(target, config, context, pool)
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

    second = await open_upstream(target, config, context, pool)
    try:
        assert isinstance(second.stream, TransportStream) and second.stream.ssl_object
        assert second.stream.ssl_object.session_reused  # abbreviated handshake
        assert len(await fetch(second, "/bytes/1000")) == 1000
    finally:
        await second.aclose()

    other = Target("https", "127.0.0.1", tls_origin.port, "127.0.0.1")  # another name: no reuse
    third = await open_upstream(other, config, context, pool)
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
