"""The ``[plugins.rules]`` table and the rules file: reading and validating."""

from __future__ import annotations

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
#: The rules file when ``[plugins.rules]`` names none: in ``$NECTOPROXY_HOME``.
DEFAULT_FILE = "rules.toml"
#: What the inspector writes at the top of the rules file when it saves it.
HEADER = ("# NectoProxy rules, saved by the inspector. Edit by hand if you like: the proxy reloads\n"
          "# this file when it changes (comments are not kept when the inspector saves it).\n")


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


def read_tables(path: Path, *, missing_ok: bool = False) -> list[Any]:
    """The ``[[rule]]`` tables of a rules file, unchecked; ConfigError names the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
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
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: rule: expected an array of tables ([[rule]]), "
                          f"got {tables!r}")
    return tables


def load_file(path: Path, *, missing_ok: bool = False) -> list[Rule]:
    """The rules of a rules file (``[[rule]]`` tables); ConfigError names the file. A missing
    file has no rules when ``missing_ok`` (the default file, before anything was saved)."""
    return parse_rules(read_tables(path, missing_ok=missing_ok), str(path), path.parent,
                       name_prefix(path))


def name_prefix(path: Path) -> str:
    """What an unnamed rule of the file is called, before its index: ``rules.toml rule 3``."""
    return f"{path.name} rule "


def combine(inline: list[Rule], from_file: list[Rule]) -> RuleSet:
    """The rules in force: the table's rules, then the file's; names must be unique."""
    seen: dict[str, Rule] = {}
    for rule in (*inline, *from_file):
        if rule.name in seen:
            raise ConfigError(f"{rule.source}: name {rule.name!r} is already used by "
                              f"{seen[rule.name].source}")
        seen[rule.name] = rule
    return RuleSet.of([*inline, *from_file])
