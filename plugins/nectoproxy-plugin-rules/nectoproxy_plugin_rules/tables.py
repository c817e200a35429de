"""Reading TOML tables strictly: unknown keys and wrong types are errors that say where."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nectoproxy import ConfigError

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name characters
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, Mapping) else "a table"


class Table:
    """One TOML table; ``where`` (e.g. ``rules.toml: rule 3 (name 'x'): mock``) starts every
    error message, followed by the key."""

    def __init__(self, data: Any, where: str, known: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table, got {_describe(data)}")
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        self.data: Mapping[str, Any] = data
        self.where = where

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {message}")

    def expected(self, key: str, what: str) -> ConfigError:
        return self.fail(key, f"expected {what}, got {_describe(self.data[key])}")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def string(self, key: str, default: str | None = None, *, empty: bool = True) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise self.expected(key, "a string")
        if not empty and not value:
            raise self.fail(key, "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.expected(key, "true or false")
        return value

    def integer(self, key: str, default: int, low: int | None = None,
                high: int | None = None) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.expected(key, "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(key, f"{value} is not between {low} and {high}")
        return value

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self.data.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.expected(key, "a number")
        if value < 0 or (positive and value == 0):
            raise self.fail(key, f"must be {'greater than' if positive else 'at least'} 0, "
                                 f"got {value}")
        return float(value)

    def strings(self, key: str, *, single: bool = False) -> tuple[str, ...]:
        """A list of strings (or, with ``single``, one string standing for a list of one)."""
        value = self.data.get(key, [])
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.expected(key, "a string or a list of strings" if single
                                else "a list of strings")
        return tuple(value)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise self.expected(key, "a table of strings")
        return tuple((str(k), v) for k, v in value.items())

    def headers(self, key: str) -> tuple[tuple[str, str], ...]:
        """A table of header name -> value, both checked so they cannot break the framing."""
        pairs = self.string_map(key)
        for name, value in pairs:
            if not _TOKEN.fullmatch(name):
                raise self.fail(key, f"{name!r} is not a valid header name")
            if _BAD_VALUE_CHARS.search(value):
                raise self.fail(key, f"the value of {name!r} contains a line break or NUL")
        return pairs

    def header_names(self, key: str) -> tuple[str, ...]:
        names = self.strings(key)
        for name in names:
            if not _TOKEN.fullmatch(name):
                raise self.fail(key, f"{name!r} is not a valid header name")
        return names

    def table(self, key: str, known: Sequence[str]) -> Table:
        return Table(self.data[key], f"{self.where}: {key}", known)
