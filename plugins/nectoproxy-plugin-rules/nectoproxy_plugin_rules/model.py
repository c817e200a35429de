"""What a validated rule is: its matchers and its actions, as frozen dataclasses.

Rules are built by :mod:`nectoproxy_plugin_rules.schema` from TOML tables and never change
afterwards; a reload builds a new :class:`RuleSet` and swaps it in whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nectoproxy import Headers
from nectoproxy_plugin_rules.patterns import Pattern

HeaderPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RequestView:
    """The request as the client sent it: every rule is matched against this."""

    method: str
    url: str
    host: str
    path: str  # without the query string
    headers: Headers


@dataclass(frozen=True)
class Matchers:
    """All the conditions of a rule; the ones left as None/empty always hold."""

    url: Pattern | None = None
    host: Pattern | None = None
    path: Pattern | None = None
    methods: frozenset[str] | None = None
    headers: tuple[tuple[str, Pattern], ...] = ()
    body_contains: bytes | None = None

    def match_head(self, request: RequestView) -> bool:
        """Whether everything except ``body_contains`` holds."""
        if self.methods is not None and request.method not in self.methods:
            return False
        if self.host is not None and not self.host.matches(request.host):
            return False
        if self.path is not None and not self.path.matches(request.path):
            return False
        if self.url is not None and not self.url.matches(request.url):
            return False
        for name, pattern in self.headers:
            value = request.headers.get(name)
            if value is None or not pattern.matches(value):
                return False
        return True

    def match_body(self, body: bytes | None) -> bool:
        if self.body_contains is None:
            return True
        return body is not None and self.body_contains in body


@dataclass(frozen=True)
class Mock:
    status: int
    headers: HeaderPairs
    body: bytes | None
    body_file: Path | None
    delay_ms: float


@dataclass(frozen=True)
class Block:
    status: int
    body: str


@dataclass(frozen=True)
class Delay:
    ms: float
    variance_ms: float


@dataclass(frozen=True)
class Throttle:
    bytes_per_second: float
    latency_ms: float


@dataclass(frozen=True)
class MapRemote:
    url: str  # scheme://authority[/path][?query]
    keep_path: bool


@dataclass(frozen=True)
class MapLocal:
    root: Path  # a folder, or one file
    is_dir: bool
    strip_prefix: str
    index: str
    headers: HeaderPairs


@dataclass(frozen=True)
class Replacement:
    find: str
    replace: str
    regex: re.Pattern[str] | None  # None: plain text


@dataclass(frozen=True)
class Modify:
    set_headers: HeaderPairs = ()
    remove_headers: tuple[str, ...] = ()
    set_query: HeaderPairs = ()
    remove_query: tuple[str, ...] = ()
    status: int | None = None  # responses only
    body: bytes | None = None
    replace: tuple[Replacement, ...] = ()

    @property
    def changes_body(self) -> bool:
        return self.body is not None or bool(self.replace)


@dataclass(frozen=True)
class Rule:
    name: str
    source: str  # where it was defined, for messages
    priority: int
    matchers: Matchers
    enabled: bool = True
    mock: Mock | None = None
    block: Block | None = None
    delay: Delay | None = None
    throttle: Throttle | None = None
    map_remote: MapRemote | None = None
    map_local: MapLocal | None = None
    modify_request: Modify | None = None
    modify_response: Modify | None = None

    @property
    def needs_request_body(self) -> bool:
        return self.matchers.body_contains is not None

    @property
    def answers(self) -> bool:
        """Whether the rule answers the request itself (the origin is never contacted)."""
        return self.mock is not None or self.block is not None or self.map_local is not None


@dataclass(frozen=True)
class RuleSet:
    """The enabled rules in the order they apply: higher priority first, ties in file order."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, rules: list[Rule]) -> RuleSet:
        enabled = [rule for rule in rules if rule.enabled]
        return cls(tuple(sorted(enabled, key=lambda rule: -rule.priority)))  # sorted() is stable
