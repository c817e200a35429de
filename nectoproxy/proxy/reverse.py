"""Reverse mode: every request on the listener goes to one configured origin.

The client talks to the proxy as if it were the origin: the first bytes say whether it speaks
TLS (terminated with a leaf for the origin's name) or plain HTTP. Either way the requests
inside go to the origin over its own scheme, so the session serves them as a tunnel to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from nectoproxy.config import ListenConfig
from nectoproxy.flow import Connection, format_authority
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.streams import EngineStream
from nectoproxy.proxy.tunnel import Inner, client_hello_sni, handshake, peek


@asynccontextmanager
async def reverse(services: Services, stream: EngineStream, connection: Connection,
                  mode: ListenConfig) -> AsyncIterator[Inner | None]:
    """Yields the stream to serve the origin's requests on (None if the client left or its
    TLS handshake failed)."""
    scheme, host, port = mode.origin_parts()
    try:
        with anyio.fail_after(services.config.proxy.header_timeout):
            prefix = await peek(stream, b"")
    except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        prefix = b""
    if not prefix:
        yield None
        return
    stream.unread(prefix)
    host_header = None if mode.keep_host else format_authority(host, port, scheme)
    if prefix[0] == 0x16:
        _, sni = client_hello_sni(prefix)
        if not await handshake(services, stream, connection, host, sni):
            yield None
            return
    yield Inner(stream, scheme, (host, port), host, host_header=host_header)
