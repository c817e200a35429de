"""Turning ``[[rule]]`` tables into :class:`~nectoproxy_plugin_rules.model.Rule` objects.

Every error names the rule by its index (1-based, in its file) and name, then the key:
``rules.toml: rule 3 (name 'x'): mock: unknown key 'stauts' (known: ...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nectoproxy import ConfigError
from nectoproxy_plugin_rules.model import (
    Block,
    Delay,
    MapLocal,
    MapRemote,
    Matchers,
    Mock,
    Modify,
    Replacement,
    Rule,
    Throttle,
)
from nectoproxy_plugin_rules.patterns import Pattern
from nectoproxy_plugin_rules.tables import Table

MATCHER_KEYS = ("url", "host", "path", "method", "headers", "body_contains")
ACTION_KEYS = ("mock", "block", "delay", "throttle", "map_remote", "map_local",
               "modify_request", "modify_response")
RULE_KEYS = ("name", "enabled", "priority", *MATCHER_KEYS, *ACTION_KEYS)
#: Actions that decide where the answer comes from; a rule may have one of them.
ROUTING_ACTIONS = ("mock", "block", "map_local", "map_remote")
_MODIFY_KEYS = ("set_headers", "remove_headers", "set_query", "remove_query", "body", "replace")


def parse_rules(items: Any, where: str, base: Path, name_prefix: str) -> list[Rule]:
    """Validate a list of rule tables.

    :param where: the source for messages (``[plugins.rules]`` or the rules file's path).
    :param base: the directory relative paths (``body_file``, ``map_local``) start from.
    :param name_prefix: an unnamed rule is named this followed by its index (``rule 3``).
    """
    if not isinstance(items, list):
        raise ConfigError(f"{where}: rule: expected an array of tables ([[rule]]), "
                          f"got {items!r}")
    return [_parse_rule(item, n, where, base, name_prefix) for n, item in enumerate(items, 1)]


def _parse_rule(item: Any, n: int, source: str, base: Path, name_prefix: str) -> Rule:
    name = item.get("name") if isinstance(item, Mapping) else None
    where = f"{source}: rule {n}" + (f" (name {name!r})" if isinstance(name, str) and name
                                     else "")
    table = Table(item, where, RULE_KEYS)
    name = table.string("name", f"{name_prefix}{n}", empty=False)
    assert name is not None
    routing = [key for key in ROUTING_ACTIONS if key in table]
    if len(routing) > 1:
        raise ConfigError(f"{where}: {routing[0]} and {routing[1]} cannot be combined "
                          "(each decides where the answer comes from)")
    if not any(key in table for key in ACTION_KEYS):
        raise ConfigError(f"{where}: no action (add one of: {', '.join(ACTION_KEYS)})")
    return Rule(
        name=name,
        source=where,
        priority=table.integer("priority", 0),
        enabled=table.boolean("enabled", True),
        matchers=_matchers(table),
        mock=_mock(table.table("mock", ("status", "headers", "body", "body_file", "delay_ms")),
                   base) if "mock" in table else None,
        block=_block(table) if "block" in table else None,
        delay=_delay(table) if "delay" in table else None,
        throttle=_throttle(table.table("throttle", ("bytes_per_second", "latency_ms")))
        if "throttle" in table else None,
        map_remote=_map_remote(table) if "map_remote" in table else None,
        map_local=_map_local(table, base) if "map_local" in table else None,
        modify_request=_modify(table.table("modify_request", _MODIFY_KEYS))
        if "modify_request" in table else None,
        modify_response=_modify(table.table("modify_response", (*_MODIFY_KEYS, "status")))
        if "modify_response" in table else None,
    )


def _pattern(table: Table, key: str, *, ignore_case: bool = False) -> Pattern | None:
    text = table.string(key, empty=False)
    if text is None:
        return None
    try:
        return Pattern.parse(text, ignore_case=ignore_case)
    except ValueError as exc:
        raise table.fail(key, str(exc)) from None


def _matchers(table: Table) -> Matchers:
    methods = None
    if "method" in table:
        methods = frozenset(m.upper() for m in table.strings("method", single=True))
        if not methods:
            raise table.fail("method", "must name at least one method")
    headers: list[tuple[str, Pattern]] = []
    if "headers" in table:
        for name, text in table.string_map("headers"):
            try:
                headers.append((name, Pattern.parse(text)))
            except ValueError as exc:
                raise table.fail("headers", f"{name}: {exc}") from None
    body = table.string("body_contains", empty=False)
    return Matchers(
        url=_pattern(table, "url"),
        host=_pattern(table, "host", ignore_case=True),
        path=_pattern(table, "path"),
        methods=methods,
        headers=tuple(headers),
        body_contains=body.encode() if body is not None else None,
    )


def _status(table: Table, default: int) -> int:
    return table.integer("status", default, 200, 599)


def _body(table: Table, key: str) -> tuple[bytes | None, str | None]:
    """A body given as a string (sent as it is) or as a table/array (sent as JSON)."""
    value = table.get(key)
    if value is None:
        return None, None
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    if isinstance(value, (Mapping, list)):
        return json.dumps(value).encode(), "application/json"
    raise table.expected(key, "a string, or a table/array (sent as JSON)")


def _existing(table: Table, key: str, base: Path, *, directory_ok: bool) -> Path:
    text = table.string(key, empty=False)
    assert text is not None
    path = (base / text).expanduser().resolve()
    if not path.exists():
        raise table.fail(key, f"{path}: no such file" + (" or folder" if directory_ok else ""))
    if path.is_dir() and not directory_ok:
        raise table.fail(key, f"{path} is a folder, not a file")
    return path


def _mock(table: Table, base: Path) -> Mock:
    if "body" in table and "body_file" in table:
        raise ConfigError(f"{table.where}: body and body_file cannot be combined")
    body, content_type = _body(table, "body")
    headers = table.headers("headers")
    if content_type and not any(name.lower() == "content-type" for name, _ in headers):
        headers += (("Content-Type", content_type),)
    body_file = (_existing(table, "body_file", base, directory_ok=False)
                 if "body_file" in table else None)
    return Mock(status=_status(table, 200), headers=headers, body=body, body_file=body_file,
                delay_ms=table.number("delay_ms", 0))


def _block(rule: Table) -> Block | None:
    value = rule.get("block")
    if isinstance(value, bool):
        return Block(403, "") if value else None
    table = rule.table("block", ("status", "body"))
    return Block(_status(table, 403), table.string("body", "") or "")


def _delay(rule: Table) -> Delay:
    if isinstance(rule.get("delay"), (int, float)) and not isinstance(rule.get("delay"), bool):
        return Delay(rule.number("delay", 0), 0.0)
    if not isinstance(rule.get("delay"), Mapping):
        raise rule.expected("delay", "a number of milliseconds or a table {ms, variance_ms}")
    table = rule.table("delay", ("ms", "variance_ms"))
    if "ms" not in table:
        raise ConfigError(f"{table.where}: ms is required")
    return Delay(table.number("ms", 0), table.number("variance_ms", 0))


def _throttle(table: Table) -> Throttle:
    if "bytes_per_second" not in table:
        raise ConfigError(f"{table.where}: bytes_per_second is required")
    return Throttle(table.number("bytes_per_second", 0, positive=True),
                    table.number("latency_ms", 0))


def _map_remote(rule: Table) -> MapRemote:
    if isinstance(rule.get("map_remote"), str):
        table, key, keep = rule, "map_remote", True
    else:
        table = rule.table("map_remote", ("url", "keep_path"))
        key, keep = "url", table.boolean("keep_path", True)
        if "url" not in table:
            raise ConfigError(f"{table.where}: url is required")
    url = table.string(key, empty=False)
    assert url is not None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise table.fail(key, f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise table.fail(key, f"expected an absolute http(s) URL without #fragment, got {url!r}")
    return MapRemote(url, keep)


def _map_local(rule: Table, base: Path) -> MapLocal:
    if isinstance(rule.get("map_local"), str):
        root = _existing(rule, "map_local", base, directory_ok=True)
        return MapLocal(root=root, is_dir=root.is_dir(), strip_prefix="", index="index.html",
                        headers=())
    table = rule.table("map_local", ("path", "strip_prefix", "index", "headers"))
    if "path" not in table:
        raise ConfigError(f"{table.where}: path is required")
    root = _existing(table, "path", base, directory_ok=True)
    index = table.string("index", "index.html", empty=False) or "index.html"
    if "/" in index or "\\" in index or index in (".", ".."):
        raise table.fail("index", f"expected a file name, got {index!r}")
    return MapLocal(root=root, is_dir=root.is_dir(), strip_prefix=table.string("strip_prefix", "")
                    or "", index=index, headers=table.headers("headers"))


def _modify(table: Table) -> Modify:
    body = None
    if "body" in table:
        body, _ = _body(table, "body")
    replacements = []
    items = table.get("replace") or []
    if not isinstance(items, list):
        raise table.expected("replace", "an array of tables {find, replace, regex}")
    for n, item in enumerate(items, 1):
        entry = Table(item, f"{table.where}: replace {n}", ("find", "replace", "regex"))
        find = entry.string("find", empty=False)
        replace = entry.string("replace")
        if find is None or replace is None:
            raise ConfigError(f"{entry.where}: find and replace are required")
        regex = None
        if entry.boolean("regex", False):
            try:
                regex = re.compile(find)
            except re.error as exc:
                raise entry.fail("find", f"invalid regular expression {find!r}: {exc}") from None
            try:
                regex.sub(replace, "")  # checks the group references in the replacement
            except (re.error, IndexError) as exc:
                raise entry.fail("replace", f"invalid replacement {replace!r}: {exc}") from None
        replacements.append(Replacement(find, replace, regex))
    status = _status(table, 0) if "status" in table else None
    return Modify(
        set_headers=table.headers("set_headers"),
        remove_headers=table.header_names("remove_headers"),
        set_query=table.string_map("set_query"),
        remove_query=table.strings("remove_query"),
        status=status,
        body=body,
        replace=tuple(replacements),
    )
