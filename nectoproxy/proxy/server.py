"""The proxy server: accept, access control, one task per connection, graceful shutdown.

``async with Proxy(config) as proxy:`` loads the plugins, loads (or creates) the CA, listens,
and calls ``on_start``; leaving the block stops accepting, lets in-flight requests finish
within ``grace`` seconds, closes the rest and calls ``on_stop``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc

from nectoproxy.certs import CertStore
from nectoproxy.config import Config, ListenConfig, load_config
from nectoproxy.errors import ConfigError, PortInUse
from nectoproxy.flow import Connection
from nectoproxy.plugins import PluginHost
from nectoproxy.proxy.context import Services
from nectoproxy.proxy.http1 import error_response, response_bytes
from nectoproxy.proxy.memory import PeakTracker, release_free_memory
from nectoproxy.proxy.pool import Origins
from nectoproxy.proxy.reverse import reverse
from nectoproxy.proxy.session import ClientSession
from nectoproxy.proxy.socks import socks5
from nectoproxy.proxy.streams import (
    AnyioStream,
    EngineStream,
    close_quietly,
    loop_transports_available,
)
from nectoproxy.proxy.transport import TransportStream
from nectoproxy.proxy.upstream import client_tls_context

log = logging.getLogger("nectoproxy.server")

#: A refused connection is read (and dropped) for up to this long, or this much, before closing.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
#: Refused clients are logged at most once per this many seconds (with a count).
REFUSAL_LOG_INTERVAL = 10.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proxy:
    """A running NectoProxy. Use as an async context manager."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        plugins: Sequence[object] = (),
        scripts: Sequence[str] = (),
        grace: float = 5.0,
        anyio_streams: bool = False,
    ) -> None:
        """``anyio_streams=True`` serves through anyio's streams even on asyncio (they are
        what any other anyio backend gets): slower, for tests of that path."""
        self.config = config if config is not None else load_config(use_file=False)
        self.hooks = PluginHost(self.config)
        self._plugins = plugins
        self._scripts = scripts
        self.grace = grace
        self._anyio_streams = anyio_streams
        self._allowed: list[Network] = [
            ipaddress.ip_network(net, strict=False) for net in self.config.proxy.allow_clients
        ]
        self._listeners: list[tuple[ListenConfig, anyio.abc.Listener[Any]]] = []
        #: Each mode's listening address, in the order of ``proxy.modes``.
        self.listening: list[tuple[ListenConfig, tuple[str, int]]] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._connections: anyio.abc.TaskGroup | None = None
        self._accept_scope: anyio.CancelScope | None = None
        self.services: Services | None = None
        #: The first listener's address (the only one's, unless several modes are set).
        self.address: tuple[str, int] = ("", 0)
        self._active = 0
        self._refusing = 0
        self._refusals = _RefusalLog()
        self._peaks = PeakTracker()
        self._native_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def check(self) -> None:
        """Load and configure the plugins as :meth:`start` would, without listening
        (``nectoproxy config check``); raises what start-up would."""
        self.hooks.load(scripts=self._scripts, objects=self._plugins)
        self._check_plugin_tables()
        await self.hooks.configure()

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients must trust."""
        return self.config.certs_dir / "ca.pem"

    async def start(self) -> None:
        config = self.config
        await self.check()
        _raise_open_file_limit(self.fds_needed)
        certs = CertStore(config.certs_dir,
                          ("h2", "http/1.1") if config.proxy.http2 else ("http/1.1",))
        await anyio.to_thread.run_sync(certs.load_or_create)
        if self.hooks.has("on_cert_generated"):
            certs.on_cert_generated = self._cert_generated
        loop_transports = not self._anyio_streams and loop_transports_available()
        self.services = Services(config, self.hooks, certs, Origins(
            config.proxy, client_tls_context(config.proxy), loop_transports))
        try:
            for mode in config.proxy.modes:
                listener = await _listen(mode, reuse_port=config.proxy.workers != 1)
                self._listeners.append((mode, listener))
                sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
                self.listening.append((mode, (str(sockname[0]), int(sockname[1]))))
        except BaseException:
            await self._close_listeners()
            raise
        self.address = self.listening[0][1]
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._connections = anyio.create_task_group()
        try:
            await self._task_group.start(self._serve)
            self._task_group.start_soon(self._sweep_pool)
            if any(i.source == "script" for i in self.hooks.infos.values()) \
                    and config.plugins.reload:
                self._task_group.start_soon(self._watch_scripts)
            await self.hooks.call("on_start", config=config, address=self.address)
        except BaseException:
            await self.stop(call_on_stop=False)
            raise
        # The CLI prints the banner; a library user can log at debug level to see this.
        log.debug("listening on %s:%s (CA: %s)", *self.address, certs.ca_path)

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self._listeners and self._connections is not None
        async with self._connections:
            try:
                native = self.services is not None and self.services.loop_transports
                with anyio.CancelScope() as self._accept_scope:
                    if native:
                        await self._serve_native(task_status)
                    else:
                        async with anyio.create_task_group() as accepting:
                            for mode, listener in self._listeners:
                                accepting.start_soon(functools.partial(
                                    listener.serve, functools.partial(self._handle_anyio, mode),
                                    task_group=self._connections))
                            task_status.started()
                if native:
                    await self._end_native_tasks()
            finally:
                await self._close_listeners()  # stop accepting; in-flight connections go on

    async def _close_listeners(self) -> None:
        with anyio.CancelScope(shield=True):
            for _, listener in self._listeners:
                await listener.aclose()

    async def _serve_native(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Accept on the event loop's own servers (see :mod:`nectoproxy.proxy.streams`).

        anyio made the listening sockets (one per address, the same port on each); the loop
        accepts on duplicates of them, and every connection becomes a task of ours at once.
        """
        servers = []
        try:
            for mode, each in self._listeners:
                for listener in getattr(each, "listeners", [each]):
                    sock = listener.extra(anyio.abc.SocketAttribute.raw_socket).dup()
                    try:
                        servers.append(await TransportStream.serve(
                            sock, functools.partial(self._accepted, mode)))
                    except BaseException:
                        sock.close()
                        raise
            task_status.started()
            await anyio.sleep_forever()
        finally:
            for server in servers:
                server.close()

    def _accepted(self, mode: ListenConfig, stream: TransportStream) -> None:
        """A new connection: its own asyncio task.

        A plain task, not one of an anyio task group: anyio gives each such task a handle
        with its own cancel scope and event (about 2.5 KiB), which an idle keep-alive client
        would hold for nothing. The proxy tracks the tasks itself and cancels them on stop.
        """
        task = asyncio.get_running_loop().create_task(self._handle(stream, mode))
        self._native_tasks.add(task)
        task.add_done_callback(self._native_tasks.discard)

    async def _end_native_tasks(self) -> None:
        """After accepting stopped: wait until stop() cancels us, then cancel the connections
        still open and wait (boundedly) for them to finish."""
        try:
            await anyio.sleep_forever()
        finally:
            tasks = list(self._native_tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(tasks, timeout=max(self.grace, 1.0))

    async def stop(self, *, call_on_stop: bool = True) -> None:
        """Stop accepting, give in-flight requests ``grace`` seconds, then close everything."""
        if self._task_group is None or self.services is None:
            return
        services = self.services
        services.stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for session in list(services.sessions):
            session.stop_idle()
        with anyio.move_on_after(self.grace):
            while self._active:
                await anyio.sleep(0.05)
        self._task_group.cancel_scope.cancel()
        if self._connections is not None:
            self._connections.cancel_scope.cancel()
        task_group, self._task_group = self._task_group, None
        await task_group.__aexit__(None, None, None)
        if call_on_stop:
            with anyio.CancelScope(shield=True):
                await self.hooks.call("on_stop")

    async def _sweep_pool(self) -> None:
        assert self.services is not None
        pool = self.services.pool
        try:
            while True:
                await anyio.sleep(min(5.0, pool.idle_timeout))
                await pool.sweep()
                if self._peaks.should_release(self._active + self._refusing):
                    release_free_memory()
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()

    async def serve_forever(self) -> None:
        await anyio.sleep_forever()

    async def _watch_scripts(self) -> None:
        while True:
            await anyio.sleep(1.0)
            await self.hooks.reload_changed_scripts()

    async def _cert_generated(self, hostname: str, certificate: Any) -> None:
        await self.hooks.call("on_cert_generated", hostname=hostname, certificate=certificate)

    def _check_plugin_tables(self) -> None:
        disabled = set(self.config.plugins.disable)
        for name in self.config.plugin_options:
            if name not in self.hooks.infos and name not in disabled:
                where = self.config.source or "configuration"
                raise ConfigError(f"{where}: [plugins.{name}] configures a plugin that is not "
                                  f"loaded (loaded: {', '.join(self.hooks.infos) or 'none'})")

    # -- connections -------------------------------------------------------------------------

    def client_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed)

    async def _handle_anyio(self, mode: ListenConfig, stream: anyio.abc.ByteStream) -> None:
        await self._handle(AnyioStream(stream), mode)

    async def _handle(self, stream: EngineStream, mode: ListenConfig) -> None:
        assert self.services is not None
        client = ("?", 0)
        served = False
        try:
            try:
                peer = stream.extra(anyio.abc.SocketAttribute.remote_address)
            except (OSError, anyio.TypedAttributeLookupError):
                peer = None
            if not peer:
                return  # the client reset before we looked: nothing to serve
            client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else (str(peer), 0)
            # A SOCKS client cannot read an HTTP answer: it is refused by closing.
            answer = mode.mode != "socks5"
            if not self.client_allowed(client[0]):
                await self._refuse(stream, answer, client[0], 403, "not in proxy.allow_clients",
                                   f"NectoProxy does not serve clients from {client[0]} "
                                   "(see proxy.allow_clients)")
                return
            if self._active >= self.config.proxy.max_connections:
                await self._refuse(stream, answer, client[0], 503,
                                   f"{self._active} connections open (proxy.max_connections)",
                                   "NectoProxy has too many connections open")
                return
            self._active += 1
            served = True
            self._peaks.peak = max(self._peaks.peak, self._active)
            connection = Connection(client_address=client, mode=mode.mode)
            if mode.mode == "reverse":
                connection.target = mode.origin_parts()[1:]
            if self.hooks.has("on_connect"):
                await self.hooks.call("on_connect", connection=connection)
                if connection.refused:
                    if answer:
                        await _answer_and_close(stream, *connection.refused)
                    return
            await self._session(stream, connection, mode)
        except Exception:
            log.exception("unexpected error serving %s:%s", *client)
        finally:
            if served:
                self._active -= 1
            await close_quietly(stream)

    async def _session(self, stream: EngineStream, connection: Connection,
                       mode: ListenConfig) -> None:
        """Serve the connection the way its listener says."""
        assert self.services is not None
        if mode.mode == "regular":
            await ClientSession(self.services, stream, connection).run()
            return
        way_in = reverse(self.services, stream, connection, mode) if mode.mode == "reverse" \
            else socks5(self.services, stream, connection)
        async with way_in as inner:
            if inner is not None:
                await ClientSession.inside(self.services, inner, connection).run()

    async def _refuse(self, stream: EngineStream, answer: bool, client: str, status: int,
                      why: str, message: str) -> None:
        """Answer a refused client, unless too many refusals are being answered already (a
        storm): then it is closed at once, so refusing never holds more than
        :meth:`max_refusing` sockets. Logged at most once per :data:`REFUSAL_LOG_INTERVAL`."""
        self._refusals.note(client, why)
        if self._refusing >= self.max_refusing or not answer:
            return  # (closed by the caller)
        self._refusing += 1
        try:
            await _answer_and_close(stream, status, message)
        finally:
            self._refusing -= 1

    @property
    def fds_needed(self) -> int:
        """The most file descriptors clients can make this proxy hold: per client connection
        its socket and one origin connection, as many idle origin connections in the pool,
        the refusals being answered, and a margin for listeners, the CA and logs."""
        return 3 * self.config.proxy.max_connections + self.max_refusing + 64

    @property
    def max_refusing(self) -> int:
        """How many refused connections may be answered (and lingered on) at once."""
        return max(8, self.config.proxy.max_connections // 8)


class _RefusalLog:
    """Logs refused clients without flooding: the first at once, then a count per interval."""

    def __init__(self) -> None:
        self._since = -REFUSAL_LOG_INTERVAL
        self._count = 0
        self._last = ""

    def note(self, client: str, why: str) -> None:
        now = time.monotonic()
        self._count += 1
        self._last = f"{client}: {why}"
        if now - self._since >= REFUSAL_LOG_INTERVAL:
            if self._count == 1:
                log.warning("refused client %s", self._last)
            else:
                log.warning("refused %d clients in the last %.0f s (the latest %s)",
                            self._count, now - self._since, self._last)
            self._since, self._count = now, 0


async def _listen(mode: ListenConfig, *, reuse_port: bool) -> anyio.abc.Listener[Any]:
    try:
        return await anyio.create_tcp_listener(local_host=mode.host, local_port=mode.port,
                                               reuse_port=reuse_port)
    except OSError as exc:
        where = f"{mode.host}:{mode.port}"
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"the port {mode.port} on {mode.host} ({mode} mode) is in use: "
                            "choose another with --listen-port, --mode or [[proxy.listen]]"
                            ) from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None


async def _answer_and_close(stream: EngineStream, status: int, message: str) -> None:
    try:
        await stream.send(response_bytes(error_response(status, message)))
        await stream.send_eof()
        # Lingering close: a request still arriving at a closed socket makes the kernel
        # reset the connection, and the client may never read the answer.
        with anyio.move_on_after(LINGER_SECONDS):
            received = 0
            while received < LINGER_BYTES:
                received += len(await stream.receive())
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
            NotImplementedError):
        pass


def _raise_open_file_limit(needed: int) -> None:
    """Raise the soft limit of open files to the hard limit (where the system allows), and
    warn if ``needed`` does not fit even so: every connection the proxy would accept beyond
    the limit fails to be accepted, and so does every origin connection."""
    try:
        import resource
    except ImportError:  # (Windows: no such limit)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # (macOS refuses more than its kern.maxfilesperproc)
            log.debug("cannot raise the open-file limit to %s: %s", wanted, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("proxy.max_connections needs up to %d open files, but the limit is %d "
                    "(ulimit -n): lower max_connections, or raise the limit", needed, soft)
