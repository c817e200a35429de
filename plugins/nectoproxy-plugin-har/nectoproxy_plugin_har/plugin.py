"""The hooks: record finished flows to a HAR file, answer requests from another one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

import nectoproxy
from nectoproxy import Config, ConfigError, Flow, Response, hookimpl
from nectoproxy_plugin_har.entry import META_REPLAYED, META_URL, build_entry
from nectoproxy_plugin_har.replay import ReplayIndex
from nectoproxy_plugin_har.settings import HarSettings, output_path, parse_settings
from nectoproxy_plugin_har.writer import HarWriter

log = logging.getLogger("nectoproxy.har")


class HarPlugin:
    """Records flows to HAR 1.2 and replays responses from HAR files.

    One instance per proxy run (the entry point names this class, so the proxy creates it);
    in tests pass ``HarPlugin()`` to ``make_proxy(plugins=[...])``. It switches itself off
    (``on_configure`` returns False) when ``[plugins.har]`` sets neither ``path`` nor ``replay``.
    """

    name = "har"

    def __init__(self) -> None:
        self.settings = HarSettings()
        self.replay: ReplayIndex | None = None
        self.writer: HarWriter | None = None
        #: The file recorded to (its pattern expanded), once the proxy has started.
        self.path: Path | None = None

    # -- start-up and shutdown ---------------------------------------------------------------

    @hookimpl
    async def on_configure(self, config: Config, options: Mapping[str, Any]
                           ) -> bool | set[str] | None:
        base = Path(config.source).parent if config.source else Path.cwd()
        settings = parse_settings(options, base)
        if settings.path is None and settings.replay is None:
            return False  # nothing to do: no hook of ours runs, no body is buffered for us
        self.settings = settings
        self.replay = None
        if settings.replay is not None:
            self.replay = await anyio.to_thread.run_sync(
                ReplayIndex.load, settings.replay, settings.replay_ignore_query_order)
        if settings.path is None:
            return {"on_request_headers"}  # replay only: no body needs to buffer for us
        return None

    @hookimpl
    async def on_start(self) -> None:
        if self.settings.path is None or self.writer is not None:
            return
        path = await anyio.to_thread.run_sync(output_path, self.settings.path, datetime.now())
        from nectoproxy_plugin_har import __version__

        writer = HarWriter(path, {"name": "NectoProxy", "version": nectoproxy.__version__},
                           comment=f"recorded by nectoproxy-plugin-har {__version__}")
        try:
            await anyio.to_thread.run_sync(writer.open)
        except OSError as exc:
            raise ConfigError(f"[plugins.har] path: cannot create {path}: "
                              f"{exc.strerror or exc}") from None
        self.writer, self.path = writer, path
        log.info("har: recording flows to %s", path)

    @hookimpl
    async def on_stop(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await anyio.to_thread.run_sync(writer.close)
            log.info("har: %d flows recorded in %s", writer.entries, writer.path)

    # -- flows -------------------------------------------------------------------------------

    @hookimpl
    def on_request_headers(self, flow: Flow) -> None:
        flow.metadata[META_URL] = flow.request.url
        if self.replay is None or flow.response is not None:
            return
        response = self.replay.answer(flow.request.method, flow.request.url)
        if response is not None:
            flow.response = response
            flow.metadata[META_REPLAYED] = True
        elif not self.settings.replay_fallthrough:
            flow.response = Response.make(
                404, f"nectoproxy-plugin-har: no recorded response for "
                     f"{flow.request.method} {flow.request.url}\n")

    @hookimpl
    def on_request(self, flow: Flow) -> None:
        """Does nothing: implementing it is what makes request bodies buffer for postData."""

    @hookimpl
    def on_response(self, flow: Flow) -> None:
        """Does nothing: implementing it is what makes response bodies buffer for content."""

    @hookimpl
    async def on_complete(self, flow: Flow) -> None:
        await self._record(flow, None)

    @hookimpl
    async def on_error(self, flow: Flow, error: str) -> None:
        await self._record(flow, error)

    async def _record(self, flow: Flow, error: str | None) -> None:
        writer = self.writer
        if writer is None:
            return
        urls = [flow.request.url]
        if META_URL in flow.metadata:
            urls.append(flow.metadata[META_URL])
        if not self.settings.wants(*urls):
            return
        # Decoding bodies and writing may take a while: keep the event loop free.
        await anyio.to_thread.run_sync(self._write, writer, flow, error)

    def _write(self, writer: HarWriter, flow: Flow, error: str | None) -> None:
        if not writer.append(build_entry(flow, error, self.settings.max_body_size)):
            log.debug("har: %s finished after the file was closed", flow.request.url)
