"""The terms of the filter language, each compiled twice: to SQL and to a Python test.

Both halves of a term sit side by side in one class so they cannot drift apart; the tests run
every expression of a table through both and compare. Rules both halves keep:

- Every SQL fragment is 0 or 1, never NULL (``NOT`` of a NULL would drop a row that the Python
  ``not`` keeps), hence the ``coalesce`` and ``IS NOT NULL`` guards.
- Case-insensitive means ASCII case folding, because that is what SQLite's ``lower()`` and
  ``LIKE`` do; :func:`fold` is the Python half of it.
- User input only ever reaches SQL as a ``?`` parameter; column names come from this module.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from nectoproxy.store import schema, textindex

_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """ASCII lower case, exactly like SQLite's ``lower()``."""
    return text.translate(_FOLD)


class Context:
    """Collects the parameters of one SQL compilation."""

    def __init__(self, fts: bool) -> None:
        self.fts = fts
        self.params: list[object] = []

    def param(self, value: object) -> str:
        self.params.append(value)
        return "?"


def get(record: Any, name: str) -> Any:
    """A field of a record given as a dataclass (FlowRecord), any object, or a mapping."""
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _headers(record: Any, name: str) -> Sequence[Sequence[str]]:
    value = get(record, name)
    if isinstance(value, str):
        value = json.loads(value)
    return value or ()


#: The header lists a ``header:`` term reads per direction: trailers are header fields too
#: (gRPC's ``grpc-status`` is one), so ``resheader:grpc-status=2`` finds failed calls.
HEADER_COLUMNS = {
    "request": ("request_headers", "request_headers_sent", "request_trailers"),
    "response": ("response_headers", "response_headers_sent", "response_trailers"),
}


def header_columns(directions: Sequence[str]) -> list[str]:
    return [c for d in directions for c in HEADER_COLUMNS[d]]


class Term:
    """One test on a flow."""

    def sql(self, ctx: Context) -> str:
        raise NotImplementedError

    def test(self, record: Any) -> bool:
        raise NotImplementedError


#: Columns the store writes in lower case, so a case-insensitive comparison needs no
#: ``lower()`` in SQL and can use their index.
STORED_FOLDED = frozenset({"host", "scheme"})


def _column_sql(column: str, nocase: bool) -> str:
    return f"lower(f.{column})" if nocase and column not in STORED_FOLDED else f"f.{column}"


@dataclasses.dataclass(frozen=True)
class Equals(Term):
    """Exact match; ``nocase`` compares without case (the value is folded already)."""

    column: str
    value: str
    nocase: bool = False

    def sql(self, ctx: Context) -> str:
        if self.column in ("host", "method"):  # NOT NULL columns: keep any index usable
            return f"{_column_sql(self.column, self.nocase)} = {ctx.param(self.value)}"
        return f"coalesce({_column_sql(self.column, self.nocase)} = {ctx.param(self.value)}, 0)"

    def test(self, record: Any) -> bool:
        value = get(record, self.column)
        if value is None:
            return False
        return (fold(str(value)) if self.nocase else str(value)) == self.value


@dataclasses.dataclass(frozen=True)
class Contains(Term):
    """Case-insensitive substring (the value is folded already)."""

    column: str
    value: str

    def sql(self, ctx: Context) -> str:
        return f"coalesce(instr(lower(f.{self.column}), {ctx.param(self.value)}), 0) > 0"

    def test(self, record: Any) -> bool:
        value = get(record, self.column)
        return value is not None and self.value in fold(str(value))


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything; every other character is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def sqlite_glob(pattern: str) -> str:
    """The same pattern for SQLite's GLOB, whose ``?`` and ``[`` must be made literal."""
    return pattern.replace("[", "[[]").replace("?", "[?]")


@dataclasses.dataclass(frozen=True)
class Glob(Term):
    """A ``*`` wildcard pattern over the whole value (path: without its query string)."""

    column: str
    pattern: str
    nocase: bool = False

    def _value_sql(self) -> str:
        if self.column == "path":
            return "substr(f.path, 1, instr(f.path || '?', '?') - 1)"
        return _column_sql(self.column, self.nocase)

    def sql(self, ctx: Context) -> str:
        return f"coalesce({self._value_sql()} GLOB {ctx.param(sqlite_glob(self.pattern))}, 0)"

    def test(self, record: Any) -> bool:
        value = get(record, self.column)
        if value is None:
            return False
        value = fold(str(value)) if self.nocase else str(value)
        if self.column == "path":
            value = value.split("?", 1)[0]
        return glob_regex(self.pattern).fullmatch(value) is not None


@dataclasses.dataclass(frozen=True)
class Regex(Term):
    """A case-insensitive regular expression search (Python's ``re``, also in SQL)."""

    column: str
    pattern: str

    def sql(self, ctx: Context) -> str:
        return f"regexp({ctx.param(self.pattern)}, f.{self.column})"

    def test(self, record: Any) -> bool:
        return schema._regexp(self.pattern, get(record, self.column))


@dataclasses.dataclass(frozen=True)
class StatusRange(Term):
    low: int
    high: int

    def sql(self, ctx: Context) -> str:
        if self.low == self.high:
            return f"(f.status IS NOT NULL AND f.status = {ctx.param(self.low)})"
        return (f"(f.status IS NOT NULL AND f.status BETWEEN {ctx.param(self.low)} "
                f"AND {ctx.param(self.high)})")

    def test(self, record: Any) -> bool:
        status = get(record, "status")
        return status is not None and self.low <= int(status) <= self.high


@dataclasses.dataclass(frozen=True)
class Header(Term):
    """A header ``name`` (folded) is present, and when ``value`` is given, contains it."""

    directions: tuple[str, ...]
    name: str
    value: str | None = None

    def sql(self, ctx: Context) -> str:
        parts = []
        for column in header_columns(self.directions):
            cond = f"lower(json_extract(h.value, '$[0]')) = {ctx.param(self.name)}"
            if self.value is not None:
                cond += (f" AND instr(lower(json_extract(h.value, '$[1]')), "
                         f"{ctx.param(self.value)}) > 0")
            parts.append(f"EXISTS (SELECT 1 FROM flow_details AS d, json_each(d.{column}) AS h "
                         f"WHERE d.seq = f.seq AND {cond})")
        return "(" + " OR ".join(parts) + ")"

    def test(self, record: Any) -> bool:
        for column in header_columns(self.directions):
            for name, value in _headers(record, column):
                if fold(name) == self.name and (self.value is None or self.value in fold(value)):
                    return True
        return False


@dataclasses.dataclass(frozen=True)
class HeaderRegex(Term):
    """mitmproxy's ``~h``: a regex over ``Name: value`` lines."""

    directions: tuple[str, ...]
    pattern: str

    def sql(self, ctx: Context) -> str:
        parts = [f"EXISTS (SELECT 1 FROM flow_details AS d, json_each(d.{column}) AS h "
                 f"WHERE d.seq = f.seq AND regexp({ctx.param(self.pattern)}, "
                 "json_extract(h.value, '$[0]') || ': ' || json_extract(h.value, '$[1]')))"
                 for column in header_columns(self.directions)]
        return "(" + " OR ".join(parts) + ")"

    def test(self, record: Any) -> bool:
        return any(schema._regexp(self.pattern, f"{name}: {value}")
                   for column in header_columns(self.directions)
                   for name, value in _headers(record, column))


def trigram_query(text: str, limit: int = 24) -> str | None:
    """An FTS5 query that every row containing ``text`` matches: all its trigrams (some, for
    long text). A superset only; the caller checks the substring itself. None below 3
    characters, where a trigram index cannot help."""
    grams: list[str] = []
    for i in range(len(text) - 2):
        gram = text[i:i + 3]
        if gram not in grams:
            grams.append(gram)
    if not grams:
        return None
    step = max(1, len(grams) // limit)
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams[::step][:limit])


def text_match_sql(ctx: Context, columns: Sequence[str], value: str, original: str) -> str:
    """Rows of ``flow_text`` whose ``columns`` contain ``value`` (folded; ``original`` feeds
    the trigram index, which folds case itself)."""
    query = trigram_query(original) if ctx.fts else None
    match = "" if query is None else f"flow_text MATCH {ctx.param(query)} AND "
    checks = " OR ".join(f"instr(lower({c}), {ctx.param(value)}) > 0" for c in columns)
    return f"SELECT rowid FROM flow_text WHERE {match}({checks})"


@dataclasses.dataclass(frozen=True)
class Body(Term):
    """The indexed text of the request or response body contains ``value``."""

    directions: tuple[str, ...]
    value: str
    original: str

    def sql(self, ctx: Context) -> str:
        columns = [f"{d}_body" for d in self.directions]
        return f"f.seq IN ({text_match_sql(ctx, columns, self.value, self.original)})"

    def test(self, record: Any) -> bool:
        for direction in self.directions:
            text = textindex.body_text(get(record, f"{direction}_body"),
                                       get(record, f"{direction}_body_encoding") or "")
            if self.value in fold(text):
                return True
        return False


@dataclasses.dataclass(frozen=True)
class Tag(Term):
    value: str

    def sql(self, ctx: Context) -> str:
        return (f"EXISTS (SELECT 1 FROM json_each(f.tags) AS t "
                f"WHERE lower(t.value) = {ctx.param(self.value)})")

    def test(self, record: Any) -> bool:
        tags = get(record, "tags") or ()
        if isinstance(tags, str):
            tags = json.loads(tags)
        return any(fold(t) == self.value for t in tags)


#: ``is:NAME`` flags: the SQL, and the Python test over a record.
FLAGS: dict[str, tuple[str, Any]] = {
    "marked": ("f.mark IS NOT NULL", lambda r: get(r, "mark") is not None),
    "error": ("f.error IS NOT NULL", lambda r: get(r, "error") is not None),
    "pending": ("(f.kind = 'http' AND f.status IS NULL AND f.error IS NULL)",
                lambda r: (get(r, "kind") or "http") == "http" and get(r, "status") is None
                and get(r, "error") is None),
    "unanswered": ("(f.kind = 'http' AND f.status IS NULL)",
                   lambda r: (get(r, "kind") or "http") == "http" and get(r, "status") is None),
    "answered": ("f.status IS NOT NULL", lambda r: get(r, "status") is not None),
    "websocket": ("f.websocket = 1", lambda r: bool(get(r, "websocket"))),
    "tunnel": ("f.kind = 'tunnel'", lambda r: get(r, "kind") == "tunnel"),
    "http": ("f.kind = 'http'", lambda r: (get(r, "kind") or "http") == "http"),
    "replay": ("f.replay_of IS NOT NULL", lambda r: get(r, "replay_of") is not None),
    "modified": ("f.modified_by != '[]'", lambda r: bool(get(r, "modified_by"))),
    "truncated": ("(f.request_truncated = 1 OR f.response_truncated = 1)",
                  lambda r: bool(get(r, "request_truncated") or get(r, "response_truncated"))),
    "all": ("1", lambda r: True),
}


@dataclasses.dataclass(frozen=True)
class Flag(Term):
    name: str

    def sql(self, ctx: Context) -> str:
        return str(FLAGS[self.name][0])

    def test(self, record: Any) -> bool:
        return bool(FLAGS[self.name][1](record))
