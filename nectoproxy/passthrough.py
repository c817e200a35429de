"""Pass-through hosts that can change while the proxy runs: the ``passthrough`` built-in.

``[proxy] passthrough`` is read once, at start-up, by the engine. This plugin adds the hosts
kept in ``$NECTOPROXY_HOME/passthrough.toml`` (``hosts = ["bank.example", "*.apple.com"]``):
the inspector edits them (``/api/settings/passthrough``), every worker process watches the file,
and a ``CONNECT`` to one of them is relayed untouched from the next connection on (the client
sees the origin's own certificate). It decides ``connection.intercept`` in ``on_connect``,
the public way to pass a tunnel through, so the engine needs no live state of its own. (It
sees the ``CONNECT`` target only: unlike ``[proxy] passthrough``, these hosts are not matched
against the TLS SNI, which arrives after ``on_connect``.)
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from nectoproxy.config import Config
from nectoproxy.flow import Connection
from nectoproxy.hosts import host_matches
from nectoproxy.settings import LiveFile, SettingsError, SettingsProvider, checked_object

log = logging.getLogger("nectoproxy.passthrough")

FILE_NAME = "passthrough.toml"
MAX_HOSTS = 10_000
#: Host names, IP literals and the globs host lists take (``*.example.com``, ``api-?.test``).
_PATTERN = re.compile(r"[a-z0-9*?\[\]!._:-]+")
_HEADER = ("# Pass-through hosts (TLS relayed untouched), kept by NectoProxy's inspector.\n"
           "# [proxy] passthrough in nectoproxy.toml applies too. Edited by hand, it is "
           "reloaded within a second.\n")


def check_hosts(value: Any, field: str = "hosts") -> list[str]:
    """The hosts of a new list, normalised (lower case, no duplicates); SettingsError else."""
    if not isinstance(value, list):
        raise SettingsError(f"{field}: expected a list of host names, got {value!r}", field)
    if len(value) > MAX_HOSTS:
        raise SettingsError(f"{field}: at most {MAX_HOSTS} hosts", field)
    hosts: dict[str, None] = {}
    for n, item in enumerate(value):
        where = f"{field}[{n}]"
        if not isinstance(item, str):
            raise SettingsError(f"{where}: expected a host name, got {item!r}", where)
        host = item.strip().lower().rstrip(".")
        if not host or not _PATTERN.fullmatch(host):
            raise SettingsError(f"{where}: {item!r} is not a host name or pattern (such as "
                                "'bank.example' or '*.example.com')", where)
        hosts[host] = None
    return list(hosts)


def read_hosts(path: Path) -> list[str]:
    """The file's hosts ([] when it does not exist); ValueError naming the file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = set(document) - {"hosts"}
    if unknown:
        raise ValueError(f"{path}: unknown key {min(unknown)!r} (known: hosts)")
    try:
        return check_hosts(document.get("hosts", []))
    except SettingsError as exc:
        raise ValueError(f"{path}: {exc.message}") from None


class LivePassthrough:
    """The ``passthrough`` built-in plugin (one instance per process)."""

    changes_flows = False

    def __init__(self, config: Config) -> None:
        self.path = config.home_dir / FILE_NAME
        self.configured: tuple[str, ...] = config.proxy.passthrough
        self.hosts: tuple[str, ...] = ()
        self.live = LiveFile(self.path, read_hosts, self._apply, what="pass-through hosts",
                             logger=log, header=_HEADER)
        self.live.load()

    def _apply(self, hosts: list[str]) -> None:
        if tuple(hosts) != self.hosts:
            log.info("pass-through hosts: %s", ", ".join(hosts) or "none")
        self.hosts = tuple(hosts)

    def on_connect(self, connection: Connection) -> Awaitable[None] | None:
        if connection.target is None:
            return None
        # Only a changed file is read (in a thread, awaited as the hook's result); every other
        # connection costs a clock read and a match.
        return self.live.then(self._decide, connection)

    def _decide(self, connection: Connection) -> None:
        target = connection.target
        if target is not None and self.hosts and host_matches(target[0], self.hosts):
            connection.intercept = False

    def on_settings(self) -> list[SettingsProvider]:
        return [PassthroughSettings(self)]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hosts": {"type": "array", "maxItems": MAX_HOSTS, "description":
                  "Host names or patterns: 'bank.example', '*.example.com' (the name and "
                  "its subdomains), shell globs.",
                  "items": {"type": "string", "pattern": _PATTERN.pattern}},
        "configured": {"type": "array", "items": {"type": "string"}, "readOnly": True,
                       "description": "[proxy] passthrough from nectoproxy.toml."},
        "file": {"type": "string", "readOnly": True},
        "error": {"type": "string", "readOnly": True, "description":
                  "Why the file, edited by hand, was not applied (hosts are those in force)."},
    },
    "required": ["hosts"],
    "additionalProperties": False,
}


class PassthroughSettings:
    """``/api/settings/passthrough``: ``{"hosts": [...], "configured": [...]}``."""

    name = "passthrough"
    title = "Pass-through hosts"
    description = ("Hosts whose TLS is relayed untouched, not intercepted (the client sees the "
                   "origin's own certificate), from the next connection on. Kept in "
                   "$NECTOPROXY_HOME/passthrough.toml; [proxy] passthrough of nectoproxy.toml "
                   "(configured, read-only here) applies too.")
    def __init__(self, plugin: LivePassthrough) -> None:
        self.plugin = plugin
        self.schema = SCHEMA

    def get(self) -> dict[str, Any]:
        value: dict[str, Any] = {"configured": list(self.plugin.configured),
                                 "file": str(self.plugin.path)}
        try:
            value["hosts"] = read_hosts(self.plugin.path)
        except ValueError as exc:  # edited by hand, wrongly: what is in force, and why
            value["hosts"] = list(self.plugin.hosts)
            value["error"] = str(exc)
        return value

    def put(self, value: Any) -> dict[str, Any]:
        hosts = check_hosts(checked_object(value, SCHEMA)["hosts"])
        self.plugin.live.write({"hosts": hosts}, hosts, field="hosts")
        return self.get()

