"""``serve_web``: the inspector's ASGI app on hypercorn, inside the proxy's own event loop.

The listening socket is bound here first, so a busy port is a :class:`ConfigError` before the
proxy accepts anything, and ``task_status.started`` reports the real port (port 0 picks one).
Each accepted connection is served by hypercorn's own asyncio connection handler (its HTTP/1.1,
HTTP/2 and WebSocket protocol code) on the current loop, uvloop included.

The accept loop is ours rather than ``hypercorn.asyncio.serve`` because of shutdown: hypercorn
closes a connection by waiting for its send buffer to drain, so one client that stopped reading
(a paused download, a stalled event socket) would hold its shutdown until cancelled, and then
leave the socket open. Here, on cancellation: event sockets are told to close (1001), idle
connections close, the rest get :data:`GRACE` seconds to finish, and whatever is left is aborted
(its socket reset). The app finds two callables in its scope: ``scope["nectoproxy.closing"]``
(an event set on shutdown) and ``scope["nectoproxy.abort"]`` (resets this connection: the
event socket uses it on a client it dropped for not reading). No lifespan events are sent
(the inspector's app has none).
hypercorn's messages go to the ``nectoproxy.web`` logger; there is no access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import struct
from typing import cast

import anyio
import anyio.abc
import anyio.to_thread
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import Framework
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp, Receive, Scope, Send

from nectoproxy.errors import ConfigError, PortInUse
from nectoproxy.web.events import ABORT_KEY, CLOSING_KEY

log = logging.getLogger("nectoproxy.web")

#: How long open requests may take to finish once the server stops; then they are aborted.
GRACE = 1.0


def _keepalive(sock: socket.socket) -> None:
    """TCP keep-alive, inherited by accepted connections: a client that vanished without a
    close (a sleeping laptop) is noticed after about 90 s, even on an idle event socket."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"the inspector cannot listen on {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # elsewhere a port in TIME_WAIT would stay unusable for a while
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        _keepalive(sock)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"the inspector's port {port} on {host} is in use: choose another "
                              "with --web-port (or [web] port), or turn it off with --no-web"
                              ) from None
        raise ConfigError(f"the inspector cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    return sock


def _hypercorn_config() -> HypercornConfig:
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    config.websocket_max_message_size = 64 * 1024  # clients only send small subscriptions
    # No hypercorn pings: its ping task outlives the socket by up to an interval. TCP
    # keep-alive on the socket finds vanished clients instead.
    config.websocket_ping_interval = None
    return config


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection now, dropping what the client has not read (a reset, not a FIN
    after a send buffer that may never drain)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connections:
    """The connections being served, so that shutdown can wait for them, then abort them."""

    def __init__(self, app: Framework, config: HypercornConfig) -> None:
        self.app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.config = config
        self.context = WorkerContext(None)
        self.open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = cast("asyncio.Task[None]", asyncio.current_task())
        self.open[task] = writer
        try:
            await TCPServer(self.app, asyncio.get_running_loop(), self.config, self.context, {},
                            reader, writer)
        finally:
            self.open.pop(task, None)

    def abort(self, client: tuple[str, int] | None) -> None:
        """Reset the connection from ``client`` (a scope's ``client``), if it is still open."""
        for writer in self.open.values():
            peer = writer.get_extra_info("peername")
            if client is not None and peer is not None and tuple(peer[:2]) == tuple(client):
                _reset(writer)

    async def _settle(self, timeout: float) -> None:
        if self.open:
            await asyncio.wait(list(self.open), timeout=timeout)

    async def close(self) -> None:
        """Idle connections close at once, busy ones get GRACE, then the rest are aborted."""
        await self.context.terminated.set()
        await self._settle(GRACE)
        for writer in list(self.open.values()):
            _reset(writer)
        await self._settle(1.0)
        for task in list(self.open):  # cannot happen short of a hypercorn bug
            log.warning("the inspector's web server: a connection did not close: cancelled")
            task.cancel()


async def serve_web(app: ASGIApp, host: str, port: int, *,
                    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started((host, port))``
    once the socket listens. ConfigError if it cannot listen."""
    sock = await anyio.to_thread.run_sync(_bind, host, port)
    actual_port = int(sock.getsockname()[1])
    closing = anyio.Event()

    async def app_with_closing(scope: Scope, receive: Receive, send: Send) -> None:
        abort = functools.partial(connections.abort, scope.get("client"))
        await app({**scope, CLOSING_KEY: closing, ABORT_KEY: abort}, receive, send)

    connections = _Connections(cast(Framework, app_with_closing), _hypercorn_config())
    try:
        server = await asyncio.start_server(connections.serve, sock=sock, backlog=128)
    except BaseException:
        sock.close()
        raise
    log.debug("the inspector serves http://%s:%d", host, actual_port)
    try:
        task_status.started((host, actual_port))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            closing.set()
            server.close()  # and the listening socket with it
            await connections.close()
            with anyio.move_on_after(1.0):
                await server.wait_closed()
        sock.close()
