"""The ``[plugins.har]`` table: checked once at start-up into a frozen :class:`HarSettings`."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nectoproxy import ConfigError, host_matches

TABLE = "[plugins.har]"
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
KNOWN_KEYS = ("path", "hosts", "urls", "max_body_size", "replay", "replay_fallthrough",
              "replay_ignore_query_order")


@dataclass(frozen=True)
class UrlPattern:
    """A shell glob over the whole URL, or a ``/regular expression/`` searched in it."""

    text: str
    regex: re.Pattern[str] | None

    def matches(self, url: str) -> bool:
        if self.regex is not None:
            return self.regex.search(url) is not None
        return fnmatch.fnmatchcase(url, self.text)


@dataclass(frozen=True)
class HarSettings:
    """What ``[plugins.har]`` asked for; paths already resolved against the config file."""

    path: Path | None = None  # the output pattern, before {timestamp} / strftime expansion
    hosts: tuple[str, ...] = ()
    urls: tuple[UrlPattern, ...] = ()
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    replay: Path | None = None
    replay_fallthrough: bool = True
    replay_ignore_query_order: bool = False

    def wants(self, *urls: str) -> bool:
        """True if a flow with one of these URLs (as asked for, as sent) is to be recorded."""
        return any(self._host_ok(url) and self._url_ok(url) for url in urls)

    def _host_ok(self, url: str) -> bool:
        if not self.hosts:
            return True
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            with_port = f"{host}:{parts.port}" if parts.port else host
        except ValueError:
            with_port = host
        return host_matches(host, self.hosts) or host_matches(with_port, self.hosts)

    def _url_ok(self, url: str) -> bool:
        return not self.urls or any(pattern.matches(url) for pattern in self.urls)


def output_path(pattern: Path, now: datetime) -> Path:
    """Expand ``{timestamp}`` and strftime codes; never name a file that already exists."""
    text = str(pattern).replace("{timestamp}", now.strftime(TIMESTAMP_FORMAT))
    if "%" in text:
        text = now.strftime(text)
    path = Path(text)
    for n in range(1, 10_000):
        if not path.exists():
            return path
        path = Path(text).with_name(f"{Path(text).stem}-{n}{Path(text).suffix}")
    raise ConfigError(f"{TABLE} path: too many existing files named like {text}")


def parse_settings(options: Mapping[str, Any], base: Path) -> HarSettings:
    """Check the table; raise ConfigError naming the key. Relative paths are under ``base``."""
    unknown = sorted(set(options) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(f"{TABLE} unknown key {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})")
    path = _optional_path(options, "path", base)
    replay = _optional_path(options, "replay", base)
    if path is not None and "{" in str(path).replace("{timestamp}", ""):
        raise ConfigError(f"{TABLE} path: the only placeholder is {{timestamp}}, got {path}")
    max_body_size = options.get("max_body_size", DEFAULT_MAX_BODY_SIZE)
    if isinstance(max_body_size, bool) or not isinstance(max_body_size, int) \
            or max_body_size < 0:
        raise ConfigError(f"{TABLE} max_body_size: expected a number of bytes (>= 0), "
                          f"got {max_body_size!r}")
    return HarSettings(
        path=path,
        hosts=tuple(p.lower() for p in _strings(options, "hosts")),
        urls=tuple(_url_pattern(p) for p in _strings(options, "urls")),
        max_body_size=max_body_size,
        replay=replay,
        replay_fallthrough=_bool(options, "replay_fallthrough", True),
        replay_ignore_query_order=_bool(options, "replay_ignore_query_order", False),
    )


def _optional_path(options: Mapping[str, Any], key: str, base: Path) -> Path | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{TABLE} {key}: expected a file name, got {value!r}")
    return base / Path(value).expanduser()


def _strings(options: Mapping[str, Any], key: str) -> list[str]:
    value = options.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{TABLE} {key}: expected a list of patterns, got {value!r}")
    return value


def _url_pattern(text: str) -> UrlPattern:
    if len(text) > 2 and text.startswith("/") and text.endswith("/"):
        try:
            return UrlPattern(text, re.compile(text[1:-1]))
        except re.error as exc:
            raise ConfigError(f"{TABLE} urls: bad regular expression {text}: {exc}") from None
    return UrlPattern(text, None)


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{TABLE} {key}: expected true or false, got {value!r}")
    return value
