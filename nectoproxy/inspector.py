"""The inspector as the ``nectoproxy`` command runs it: store, capture, retention, web server.

Every process (each of ``workers = N``) opens the store and captures its own flows through a
:class:`~nectoproxy.store.ProcessWriter` of its own (a child process writing), so all of them
reach the one SQLite file. The first process also starts the run's session and serves the web
API (its changes feed reads what every process wrote), and its writer enforces retention. A library user who runs
:class:`~nectoproxy.proxy.server.Proxy` directly gets none of this unless they add
:class:`~nectoproxy.capture.Capture` themselves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import anyio.abc

from nectoproxy.breakpoints import Breakpoints
from nectoproxy.capture import Capture
from nectoproxy.capturepause import CapturePause
from nectoproxy.config import Config
from nectoproxy.errors import ConfigError
from nectoproxy.settings import SettingsRegistry
from nectoproxy.store import ProcessWriter, Session, SQLiteStore, StoreError

if TYPE_CHECKING:
    from nectoproxy.plugins import PluginHost
    from nectoproxy.web import Replayer

log = logging.getLogger("nectoproxy.inspector")

TOKEN_FILE = "web-token"
#: How often retention runs (the first time right at start, in the writer process): often
#: enough that a capture of large bodies cannot run far past max_bytes in between; a run with
#: nothing to delete costs two small queries.
RETENTION_SECONDS = 10.0


def web_token(config: Config) -> str:
    """The configured token, or the one kept in ``$NECTOPROXY_HOME/web-token`` (made on first
    use, owner-only, so that the UI's URL stays the same from one run to the next)."""
    if config.web.token:
        return config.web.token
    path = config.home_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _reachable(host: str) -> str:
    """How to reach a listening address from this machine: a wildcard becomes loopback, an
    IPv6 literal gets its brackets."""
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.is_unspecified:
            host = "127.0.0.1" if address.version == 4 else "::1"
        if address.version == 6:
            return f"[{host}]"
    return host


def ui_url(host: str, port: int, token: str) -> str:
    """The address the banner prints: a browser opening it gets the token cookie."""
    return f"http://{_reachable(host)}:{port}/?token={quote(token)}"


def proxy_url(config: Config, address: tuple[str, int]) -> str:
    """How this process reaches its own proxy (replays go through it), credentials included."""
    auth = ""
    if config.proxy.proxy_auth:
        user, _, password = config.proxy.proxy_auth.partition(":")
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"http://{auth}{_reachable(address[0])}:{address[1]}"


class Inspector:
    """Capture and (in the first process) the web server, around one proxy run.

    Make it before the proxy (the proxy needs :attr:`capture` among its plugins), then
    ``async with inspector.running(ca_path):`` around the proxy's run: the web port is bound
    (a busy one fails start-up) and the run's session started before the proxy accepts its
    first client. Once the proxy listens, :meth:`proxy_started` tells replays where it is.
    """

    def __init__(self, config: Config, *, primary: bool = True) -> None:
        self.config = config
        self.primary = primary
        web = config.web
        self.token = web_token(config)
        self.path = config.store_path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store = SQLiteStore(self.path, max_body_size=web.max_body_size)
        except StoreError as exc:
            raise ConfigError(f"cannot open the flow store {self.path}: {exc}") from None
        self.session: Session | None = None
        if primary:  # (before the writer opens the store: it would make a session itself)
            try:
                self.session = self.store.start_run(web.session or None)
            except LookupError:
                self.store.close()
                raise ConfigError(f"web.session: no session {web.session!r} to continue (see "
                                  "`nectoproxy sessions list`)") from None
        # (A child process writes: SQLite work in a thread here would compete with the event
        # loop for the GIL.)
        # The first process's writer also enforces retention, between its batches.
        retention = {"max_age_days": web.max_age_days or None,
                     "max_flows": web.max_flows or None,
                     "max_bytes": web.max_bytes or None} if primary else None
        self.writer = ProcessWriter(self.path, max_body_size=web.max_body_size,
                                    retention=retention, retention_seconds=RETENTION_SECONDS)
        self.capture = Capture(self.writer, token=self.token, max_body_size=web.max_body_size)
        #: Flows that pause for a person (``/api/breakpoints``), unless disabled by name.
        self.breakpoints = Breakpoints(config) \
            if "breakpoints" not in config.plugins.disable else None
        self.pause = CapturePause(self.capture, self.path, primary=primary)
        self.address: tuple[str, int] | None = None
        #: Where the proxy listens, once it does (``/api/status`` says it).
        self.proxy_address: tuple[str, int] | None = None
        self.replayer: Replayer | None = None
        #: The plugins' live settings the web API serves (collected once the proxy runs).
        self.settings = SettingsRegistry()

    @property
    def plugins(self) -> list[object]:
        """The plugins the proxy needs for the inspector: capture, breakpoints."""
        return [self.capture] + ([self.breakpoints] if self.breakpoints is not None else [])

    @property
    def url(self) -> str:
        assert self.address is not None
        return ui_url(self.address[0], self.address[1], self.token)

    def status(self) -> Mapping[str, Any]:
        stats = self.writer.stats
        address = self.proxy_address
        proxy = f"{_reachable(address[0])}:{address[1]}" if address is not None else None
        return {"proxy": proxy, "capturing": self.capture.enabled,
                "paused": self.pause.paused, "store": str(self.path),
                "flowsWritten": stats.flows_written, "bytesDropped": stats.bytes_dropped,
                "messagesDropped": stats.messages_dropped, "queuedBytes": self.writer.queued_bytes}

    @contextlib.asynccontextmanager
    async def running(self, ca_path: Path) -> AsyncIterator[Inspector]:
        """Serve the web API (in the first process) inside the block;
        :meth:`close` (capture's writer) is for after the proxy stopped."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.pause.follow)
            if self.primary:
                try:
                    self.address = await group.start(self._serve_web, ca_path)
                except BaseException:
                    session = self.session
                    if session is not None and not self.config.web.session:
                        # A run that never ran leaves no empty session behind.
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(self.store.delete_session,
                                                           session.id)
                    raise
            try:
                yield self
            finally:
                group.cancel_scope.cancel()

    def proxy_started(self, address: tuple[str, int], hooks: PluginHost | None = None) -> None:
        """The proxy listens at ``address``: replays go there, and (in the first process) the
        web API serves the live settings its plugins offer (``on_settings``)."""
        self.proxy_address = address
        if self.replayer is not None:
            self.replayer.proxy_url = proxy_url(self.config, address)
        if hooks is not None and self.primary:
            self.settings.collect(hooks)

    async def _serve_web(self, ca_path: Path, *,
                         task_status: anyio.abc.TaskStatus[tuple[str, int] | None]) -> None:
        web = self.config.web
        if not web.enabled:  # (never so from the command line: --no-web captures nothing)
            task_status.started(None)
            return
        from nectoproxy.web import Replayer, create_app, serve_web

        # (Where the proxy listens is known once it does: see proxy_started.)
        self.replayer = Replayer(proxy_url(self.config, (self.config.proxy.listen_host,
                                                         self.config.proxy.listen_port)),
                                 ca_path, self.token)
        app = create_app(self.store, token=self.token, allowed_hosts=web.allowed_hosts,
                         replayer=self.replayer, status=self.status, settings=self.settings,
                         capture=self.pause,
                         websockets=self.capture.websockets.get)
        if not web.is_loopback:
            log.warning("the inspector listens on %s, not a loopback address: anyone who can "
                        "reach it and knows the token sees all traffic", web.host)
        await serve_web(app, web.host, web.port, task_status=task_status)

    def close(self) -> None:
        self.writer.close()
        self.store.close()
