"""The ``[plugins.rules]`` table and the rules file: reading, validating, noticing changes."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nectoproxy import Config, ConfigError
from nectoproxy_plugin_rules.model import Rule, RuleSet
from nectoproxy_plugin_rules.schema import parse_rules
from nectoproxy_plugin_rules.tables import Table

TABLE = "[plugins.rules]"
OPTION_KEYS = ("rule", "file", "reload")

#: What identifies one version of the rules file: (mtime in ns, size, inode), None if missing.
Stamp = tuple[int, int, int] | None


@dataclass(frozen=True)
class Settings:
    inline: list[Rule]
    file: Path | None
    reload: bool


def parse_options(options: Mapping[str, Any], config: Config) -> Settings:
    """Validate the plugin's table; relative paths start at the config file's folder."""
    table = Table(options, TABLE, OPTION_KEYS)
    base = Path(config.source).parent if config.source else Path.cwd()
    inline = parse_rules(options.get("rule", []), TABLE, base, "rule ")
    name = table.string("file", empty=False)
    file = (base / name).expanduser().resolve() if name is not None else None
    return Settings(inline, file, table.boolean("reload", True))


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def load_file(path: Path) -> list[Rule]:
    """The rules of a rules file (``[[rule]]`` tables); ConfigError names the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such rules file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    Table(document, str(path), ("rule",))
    return parse_rules(document.get("rule", []), str(path), path.parent, f"{path.name} rule ")


def combine(inline: list[Rule], from_file: list[Rule]) -> RuleSet:
    """The rules in force: the table's rules, then the file's; names must be unique."""
    seen: dict[str, Rule] = {}
    for rule in (*inline, *from_file):
        if rule.name in seen:
            raise ConfigError(f"{rule.source}: name {rule.name!r} is already used by "
                              f"{seen[rule.name].source}")
        seen[rule.name] = rule
    return RuleSet.of([*inline, *from_file])
