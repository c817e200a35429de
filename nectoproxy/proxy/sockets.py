"""TCP connections to origins: happy eyeballs, and the one place that picks the kind of stream
an opened connection gets (the server picks it for accepted ones)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import anyio

from nectoproxy.proxy.streams import AnyioStream, EngineStream
from nectoproxy.proxy.transport import TransportStream

#: Happy eyeballs: how long one connection attempt runs before the next address is tried too.
HAPPY_EYEBALLS_DELAY = 0.25


async def connect(host: str, port: int, *, loop_transports: bool = True) -> EngineStream:
    """A TCP connection to ``host:port`` (happy eyeballs between its addresses): a
    :class:`TransportStream`, or with ``loop_transports=False`` anyio's, adapted."""
    if loop_transports:
        return await TransportStream.from_socket(await connect_socket(host, port))
    return AnyioStream(await anyio.connect_tcp(host, port,
                                               happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY))


async def connect_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``.

    Addresses are tried in the resolver's order, alternating families (RFC 8305), each
    :data:`HAPPY_EYEBALLS_DELAY` after the previous one started unless it failed sooner; the
    first to connect wins. If all fail, the OSError raised has an ExceptionGroup of every
    attempt's error as its cause. (uvloop's create_connection has no happy eyeballs.)
    """
    try:
        literal = ipaddress.ip_address(host) if "%" not in host else None
    except ValueError:
        literal = None
    if literal is not None:  # no resolver round trip for an address
        addresses: list[tuple[int, Any]] = [
            (socket.AF_INET, (host, port)) if literal.version == 4
            else (socket.AF_INET6, (host, port, 0, 0))]
    else:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = _interleave([(info[0], info[4]) for info in infos])
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    winner: socket.socket | None = None

    async def attempt(family: int, address: Any, failed: anyio.Event,
                      scope: anyio.CancelScope) -> None:
        nonlocal winner
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            failed.set()
            return
        except BaseException:
            sock.close()
            raise
        if winner is None:
            winner = sock
            scope.cancel()
        else:
            sock.close()

    if len(addresses) == 1:  # the common case: no race to run
        family, address = addresses[0]
        await attempt(family, address, anyio.Event(), anyio.CancelScope())
    else:
        async with anyio.create_task_group() as group:
            for family, address in addresses:
                failed = anyio.Event()
                group.start_soon(attempt, family, address, failed, group.cancel_scope)
                with anyio.move_on_after(HAPPY_EYEBALLS_DELAY):
                    await failed.wait()
    if winner is None:
        raise OSError(f"all connection attempts to {host}:{port} failed") from \
            ExceptionGroup("connection attempts", errors or [OSError("no address")])
    return winner


def _interleave(addresses: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Distinct addresses, alternating between address families, first family first."""
    unique = list(dict.fromkeys((family, tuple(address)) for family, address in addresses))
    by_family: dict[int, list[tuple[int, Any]]] = {}
    for item in unique:
        by_family.setdefault(item[0], []).append(item)
    queues = list(by_family.values())
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered
