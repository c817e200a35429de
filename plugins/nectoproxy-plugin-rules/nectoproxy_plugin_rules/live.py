"""The rules as live settings: what the inspector reads and saves (``/api/settings/rules``).

The value is ``{"rules": [...], "configured": [...], "file": "..."}``: ``rules`` are the rules
file's tables (the same keys as in TOML), in file order; ``configured`` are the
``[[plugins.rules.rule]]`` tables of nectoproxy.toml, shown but not changed here. ``put``
checks the new list exactly as a reload would, writes the rules file atomically (so every
worker process reloads it within a second) and puts the rules in force in this process at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nectoproxy import ConfigError
from nectoproxy.settings import SettingsError, checked_object, exposes_private
from nectoproxy_plugin_rules.json_schema import RULE_SCHEMA
from nectoproxy_plugin_rules.loading import combine, name_prefix, read_tables
from nectoproxy_plugin_rules.model import Rule
from nectoproxy_plugin_rules.schema import parse_rules

if TYPE_CHECKING:
    from nectoproxy_plugin_rules.plugin import RulesPlugin

MAX_RULES = 10_000
_RULE_INDEX = re.compile(r"\brules: rule (\d+)")


def _field(message: str) -> tuple[str, str]:
    """``rules: rule 3 (name 'x'): mock: ...`` -> (``rules[2] (name 'x'): mock: ...``,
    ``rules[2]``): positions the way a JSON client counts them."""
    match = _RULE_INDEX.search(message)
    message = _RULE_INDEX.sub(lambda m: f"rules[{int(m.group(1)) - 1}]", message)
    return message, f"rules[{int(match.group(1)) - 1}]" if match else "rules"


def _plain(value: Any, where: str) -> Any:
    """A JSON value TOML can hold: no null, no NaN; SettingsError names where."""
    if value is None:
        raise SettingsError(f"{where}: null is not a value here (leave the key out)", where)
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{where}: {value!r} is not a number", where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{n}]") for n, v in enumerate(value)]
    return value


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rules": {"type": "array", "items": RULE_SCHEMA, "maxItems": MAX_RULES,
                  "description": "The rules file's rules, in file order (priority, "
                  "higher first, decides before it)."},
        "configured": {"type": "array", "items": RULE_SCHEMA, "readOnly": True,
                       "description": "[[plugins.rules.rule]] of nectoproxy.toml."},
        "file": {"type": "string", "readOnly": True},
        "error": {"type": "string", "readOnly": True, "description":
                  "Why the rules file, edited by hand, is not in force."},
    },
    "required": ["rules"],
    "additionalProperties": False,
}


class RulesSettings:
    """The ``rules`` settings of one :class:`~nectoproxy_plugin_rules.RulesPlugin`."""

    name = "rules"
    title = "Rules"
    description = ("Mock, block, delay, throttle, map remote/local and rewrite requests and "
                   "responses. Saved in the rules file, which every worker reloads within a "
                   "second; rules in nectoproxy.toml (configured) are read-only here.")
    def __init__(self, plugin: RulesPlugin) -> None:
        assert plugin.file is not None and plugin.live is not None
        self.plugin = plugin
        self.live = plugin.live
        self.schema = SCHEMA
        self.file = plugin.file

    def get(self) -> dict[str, Any]:
        value: dict[str, Any] = {"rules": [], "configured": self.plugin.inline_tables,
                                 "file": str(self.file)}
        try:
            tables = read_tables(self.file, missing_ok=self.plugin.default_file)
            prefix = name_prefix(self.file)
            value["rules"] = [
                {"name": f"{prefix}{n}", **table} if isinstance(table, dict)
                and "name" not in table else table for n, table in enumerate(tables, 1)]
            parse_rules(tables, str(self.file), self.file.parent, prefix)
        except ConfigError as exc:
            value["error"] = str(exc)
        return value

    def put(self, value: Any) -> dict[str, Any]:
        items = checked_object(value, SCHEMA)["rules"]
        if not isinstance(items, list):
            raise SettingsError(f"rules: expected a list of rules, got {items!r}", "rules")
        if len(items) > MAX_RULES:
            raise SettingsError(f"rules: at most {MAX_RULES} rules", "rules")
        tables = [_plain(item, f"rules[{n}]") for n, item in enumerate(items)]
        self._name_unnamed(tables)
        try:
            rules = parse_rules(tables, "rules", self.file.parent, "rule ")
            rule_set = combine(self.plugin.inline, rules)
        except ConfigError as exc:
            message, field = _field(str(exc))
            raise SettingsError(message, field) from None
        self._refuse_private(rules)
        self.live.write({"rule": tables}, rule_set, field="rules")
        return self.get()

    def _refuse_private(self, rules: list[Rule]) -> None:
        """A token holder must not make the proxy serve the CA key, the token or the store."""
        config = self.plugin.config
        if config is None:
            return
        for n, rule in enumerate(rules):
            for key, path in (("mock.body_file", rule.mock.body_file if rule.mock else None),
                              ("map_local", rule.map_local.root if rule.map_local else None)):
                if path is not None and exposes_private(path, config):
                    field = f"rules[{n}].{key}"
                    raise SettingsError(
                        f"{field}: {path} holds NectoProxy's own files (CA key, token, flow "
                        "store), which the inspector never serves", field)

    def _name_unnamed(self, tables: list[Any]) -> None:
        """Give every rule without a name one (``rule 4``), so that it keeps its name (the
        API's id for it) when rules are added or moved."""
        taken = {t.get("name") for t in tables if isinstance(t, dict)}
        taken |= {rule.name for rule in self.plugin.inline}
        number = 0
        for table in tables:
            if isinstance(table, dict) and "name" not in table:
                number += 1
                while f"rule {number}" in taken:
                    number += 1
                table["name"] = f"rule {number}"
                taken.add(table["name"])
