"""The hooks: choose a profile per request, wait, maybe fail, pace both bodies.

- ``on_request_headers`` (before the request body is read, so no body is buffered): pick the
  profile for the host, sleep latency ± jitter, draw the loss, and pace the upload with a
  request chunk filter.
- ``on_response_headers`` (the response head is in, its body not read yet): pace the download
  with a response chunk filter, so the body streams at the profile's rate.

Both run ``trylast``: throttling is the network, so it sees what other plugins decided (a
mocked answer is delayed and paced too; a lost request fails even if a plugin answered it).
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

import nectoproxy
from nectoproxy import Flow, Response
from nectoproxy.settings import LiveFile, SettingsProvider
from nectoproxy_plugin_throttle.live import HEADER, LIVE_FILE, ThrottleSettings, read_live
from nectoproxy_plugin_throttle.options import Settings, parse_options
from nectoproxy_plugin_throttle.pacing import Pacer
from nectoproxy_plugin_throttle.profiles import Profile

log = logging.getLogger("nectoproxy.throttle")

#: ``flow.metadata`` key under which each throttled flow records what was applied.
METADATA_KEY = "throttle"
#: Response header on the 503 answers this plugin makes (so they are not mistaken for real).
SIMULATED_HEADER = "X-NectoProxy-Throttle"
_NO_BODY_STATUS = frozenset({204, 304})


class Throttle:
    """The ``throttle`` plugin (the entry point creates one instance per proxy)."""

    #: Selects the ``[plugins.throttle]`` table when an instance is passed from Python.
    name = "throttle"

    def __init__(self) -> None:
        self.settings = Settings()
        self.rng = random.Random()
        # The profile each flow got in on_request_headers, for on_response_headers (kept out
        # of flow.metadata, which other plugins may serialise).
        self._profiles: weakref.WeakKeyDictionary[Flow, Profile] = weakref.WeakKeyDictionary()
        self._exempt: set[str] = set()
        #: The ``[plugins.throttle]`` table as written (what applies without a live file).
        self.table: dict[str, Any] = {}
        #: Where the inspector keeps the settings it set (None: the plugin is not live).
        self.live_path: Path | None = None
        self.live: LiveFile[Settings] | None = None
        self._started = False

    @nectoproxy.hookimpl
    def on_configure(self, config: nectoproxy.Config,
                     options: Mapping[str, Any]) -> bool | None:
        """Check ``[plugins.throttle]``; without a table, switch off when no profile and no
        host rule is set. With one (even empty), stay on: the inspector may set a profile,
        kept in ``$NECTOPROXY_HOME/throttle.toml``, which then replaces the table."""
        self.table = dict(options)
        self.settings = parse_options(options)
        # The proxy's own setup pages are not "the network": Offline must not hide the CA.
        self._exempt = {config.proxy.onboarding_host.lower()} - {""}
        self._profiles = weakref.WeakKeyDictionary()
        self.live_path, self.live, self._started = None, None, False
        if self.name in config.plugin_options:
            self.live_path = config.home_dir / LIVE_FILE
            self.live = LiveFile(self.live_path, self._read_live, self._apply,
                                 what="throttle settings", logger=log, header=HEADER)
            self.live.load()  # (a broken file is logged: the table's settings apply)
        self.rng = random.Random(self.settings.seed)
        return None if self.settings.active or self.live_path is not None else False

    def _read_live(self, path: Path) -> Settings:
        """The live file's settings, or the table's while there is none; ConfigError."""
        live = read_live(path)
        return live if live is not None else parse_options(self.table)

    def _apply(self, settings: Settings) -> None:
        """Put ``settings`` in force: the live file as read, reloaded, or just written here."""
        self.settings = settings
        if settings.seed is not None:
            self.rng = random.Random(settings.seed)
        if self._started:  # (on_start shows the settings of the start)
            self._log_summary()

    def _log_summary(self) -> None:
        for line in self.settings.summary():
            log.info("%s", line)

    @nectoproxy.hookimpl
    def on_start(self) -> None:
        """Show the active profiles."""
        self._started = True
        self._log_summary()

    @nectoproxy.hookimpl
    def on_settings(self) -> list[SettingsProvider]:
        """The network profile, for the inspector (only with a ``[plugins.throttle]`` table)."""
        return [ThrottleSettings(self)] if self.live_path is not None else []

    @nectoproxy.hookimpl(trylast=True)
    async def on_request_headers(self, flow: Flow) -> None:
        if self.live is not None:  # (reloads the live file if it changed)
            await self.live.refresh()
        if flow.request.host in self._exempt:
            return
        profile = self.settings.profile_for(flow.request.host)
        if profile is None:
            return
        record: dict[str, Any] = {
            "profile": profile.name,
            "download_bps": profile.download_bps,
            "upload_bps": profile.upload_bps,
            "latency_ms": 0.0,
            "lost": False,
        }
        flow.metadata[METADATA_KEY] = record
        if profile.offline:
            self._fail(flow, profile, record, "offline")
            return
        delay = self._latency(profile)
        lost = profile.loss >= 1.0 or (profile.loss > 0 and self.rng.random() < profile.loss)
        record["latency_ms"] = round(delay * 1000, 3)
        if delay > 0:
            await anyio.sleep(delay)
        if lost:
            self._fail(flow, profile, record, "packet loss")
            return
        self._profiles[flow] = profile
        if profile.upload_bps and flow.response is None and _has_body(flow.request.headers):
            flow.request.chunk_filters.append(Pacer(profile.upload_bps))

    @nectoproxy.hookimpl(trylast=True)
    def on_response_headers(self, flow: Flow) -> None:
        profile = self._profiles.get(flow)
        response = flow.response
        if profile is None or not profile.download_bps or response is None:
            return
        if flow.request.method == "HEAD" or response.status_code in _NO_BODY_STATUS:
            return
        if response.raw_content is not None and not response.raw_content:
            return  # a made-up response with an empty body: nothing to pace
        response.chunk_filters.append(Pacer(profile.download_bps))

    def _latency(self, profile: Profile) -> float:
        """Seconds to wait: latency plus a uniform jitter draw, never negative."""
        jitter = self.rng.uniform(-profile.jitter_ms, profile.jitter_ms) if profile.jitter_ms \
            else 0.0
        return max(0.0, profile.latency_ms + jitter) / 1000

    def _fail(self, flow: Flow, profile: Profile, record: dict[str, Any], why: str) -> None:
        record["lost"] = True
        record["loss_mode"] = profile.loss_mode or self.settings.loss_mode
        if record["loss_mode"] == "503":
            text = f"throttle: simulated {why} (profile {profile.name})"
            flow.response = Response.make(503, text + "\n", {SIMULATED_HEADER: why})
        else:
            flow.response = None
            flow.kill()


def _has_body(headers: nectoproxy.Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers
