"""The network profile as live settings: ``/api/settings/throttle`` of the inspector.

The value has the keys of ``[plugins.throttle]`` (``profile``, ``hosts``, ``profiles``,
``loss_mode``, ``seed``) plus read-only ones: ``source`` (``"inspector"`` when the settings in
force come from the live file, ``"configuration"`` when from nectoproxy.toml), ``presets``
and ``file``. ``put`` checks the table as start-up would and writes it to
``$NECTOPROXY_HOME/throttle.toml``, which every worker process watches; while that file exists
it replaces the ``[plugins.throttle]`` table.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nectoproxy import ConfigError
from nectoproxy.settings import SettingsError
from nectoproxy_plugin_throttle.options import TOP_KEYS, Settings, parse_options
from nectoproxy_plugin_throttle.profiles import PRESET_LIST

if TYPE_CHECKING:
    from nectoproxy_plugin_throttle.plugin import Throttle

LIVE_FILE = "throttle.toml"
READ_ONLY = ("source", "presets", "file", "error")
HEADER = ("# The network profile set in NectoProxy's inspector. While this file exists it "
           "replaces\n# [plugins.throttle] of nectoproxy.toml; delete it to go back to that.\n")
_KEY = re.compile(r"^\[plugins\.throttle\] ([^:]+): ")

_PROFILE = {"type": "object", "additionalProperties": False, "properties": {
    "download_bps": {"type": "integer", "minimum": 0, "description": "Bytes per second; 0 = "
                     "unlimited."},
    "upload_bps": {"type": "integer", "minimum": 0},
    "latency_ms": {"type": "number", "minimum": 0},
    "jitter_ms": {"type": "number", "minimum": 0},
    "loss": {"type": "number", "minimum": 0, "maximum": 1},
    "loss_mode": {"enum": ["reset", "503"]}}}


def read_live(path: Path) -> Settings | None:
    """The live file's settings (None when there is none); ConfigError names the file."""
    table = read_table(path)
    if table is None:
        return None
    try:
        return parse_options(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_table(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "profile": {"type": "string", "description": "The default profile: a preset "
                    "(any case, spaces or dashes), a custom profile, or 'none'."},
        "hosts": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "Host glob -> profile name; the first match wins."},
        "profiles": {"type": "object", "additionalProperties": _PROFILE,
                     "description": "Custom profiles by name."},
        "loss_mode": {"enum": ["reset", "503"]},
        "seed": {"type": "integer"},
        "source": {"enum": ["inspector", "configuration"], "readOnly": True},
        "presets": {"type": "array", "readOnly": True, "items": {"type": "object"}},
        "file": {"type": "string", "readOnly": True},
        "error": {"type": "string", "readOnly": True},
    },
}


def _finite(value: Any, where: str) -> None:
    """JSON may say NaN or Infinity; no setting means them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{where}: {value!r} is not a number", where)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))


class ThrottleSettings:
    """The ``throttle`` settings of one :class:`~nectoproxy_plugin_throttle.Throttle`."""

    name = "throttle"
    title = "Network profile"
    description = ("Latency, bandwidth and loss, as a bad network would have them: a default "
                   "profile (a preset such as 'Slow 3G', a custom one, or 'none') and "
                   "per-host profiles. Kept in $NECTOPROXY_HOME/throttle.toml, which replaces "
                   "[plugins.throttle] of nectoproxy.toml while it exists.")
    def __init__(self, plugin: Throttle) -> None:
        assert plugin.live_path is not None and plugin.live is not None
        self.plugin = plugin
        self.live = plugin.live
        self.schema = SCHEMA
        self.path = plugin.live_path

    def get(self) -> dict[str, Any]:
        value: dict[str, Any]
        try:
            table = read_table(self.path)
            value = dict(table) if table is not None else dict(self.plugin.table)
            value["source"] = "inspector" if table is not None else "configuration"
            if table is not None:
                read_live(self.path)
        except ConfigError as exc:
            value = {"source": "inspector", "error": str(exc)}
        presets = [{k: v for k, v in asdict(p).items() if v is not None} for p in PRESET_LIST]
        return {**value, "presets": presets, "file": str(self.path)}

    def put(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise SettingsError("expected an object with the keys of [plugins.throttle]")
        table = {k: v for k, v in value.items() if k not in READ_ONLY}
        for key in table:
            if key not in TOP_KEYS:
                raise SettingsError(f"{key}: unknown key (known: {', '.join(TOP_KEYS)})", key)
        _finite(table, "")
        try:
            settings = parse_options(table)
        except ConfigError as exc:
            message = str(exc)
            match = _KEY.match(message)
            raise SettingsError(message, match.group(1) if match else "") from None
        self.live.write(table, settings)  # (SettingsError for a null, say: TOML has none)
        return self.get()
