"""The filter language: one syntax for the API, the UI, breakpoints and ``sessions export``.

    host:api.example.com and status:4xx and not method:OPTIONS
    ~d example.com & ~c 404                      (mitmproxy's spelling is accepted too)
    (type:json or type:xml) header:x-debug tag:login "checkout"

A small tokenizer feeds a recursive-descent parser (no regular-expression soup), whose
grammar, loosest first, is::

    expr     := or_expr END
    or_expr  := and_expr (("or" | "|" | "||") and_expr)*
    and_expr := not_expr (("and" | "&" | "&&")? not_expr)*     adjacent terms mean "and"
    not_expr := ("not" | "!") not_expr | primary
    primary  := "(" or_expr ")" | term

A term is ``field:value``, a mitmproxy ``~x [value]``, or a bare word (the URL contains it).
Quotes ("..." or '...', with ``\\"`` and ``\\\\`` inside) make spaces, parentheses and operator
words literal, anywhere in a word: ``header:x-note="a b"``. Every term is checked while parsing,
so a mistake is a :class:`FilterError` carrying the character position (0-based).

A parsed :class:`Filter` compiles to an SQL ``WHERE`` fragment with ``?`` parameters over
``flows AS f`` (:meth:`Filter.sql`) and to a Python test of a record (:meth:`Filter.matches`);
the two halves of every term live together in :mod:`nectoproxy.store.filterterms`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from nectoproxy.store import filterterms as t
from nectoproxy.store.records import MARK_COLOURS


class FilterError(ValueError):
    """A filter expression that does not parse; ``position`` is where (0-based)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at {position}")
        self.message = message
        self.position = position


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word", "and", "or", "not", "(", ")", "end"
    pos: int
    text: str = ""
    #: For words: the part before the first unquoted ':' when that part has no quotes.
    head: str | None = None
    end: int = 0


_OPERATORS = {"and": "and", "&": "and", "&&": "and", "or": "or", "|": "or", "||": "or",
              "not": "not", "!": "not"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            tokens.append(Token(c, i, c, end=i + 1))
            i += 1
        elif c == "!":
            tokens.append(Token("not", i, c, end=i + 1))
            i += 1
        else:
            token, i = _word(text, i)
            tokens.append(token)
    tokens.append(Token("end", n, end=n))
    return tokens


def _word(text: str, start: int) -> tuple[Token, int]:
    i, n = start, len(text)
    out: list[str] = []
    head: str | None = None
    quoted = False
    while i < n and not text[i].isspace() and text[i] not in "()":
        c = text[i]
        if c in "\"'":
            quoted = True
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n and text[j + 1] in (c, "\\"):
                    j += 1
                out.append(text[j])
                j += 1
            if j >= n:
                raise FilterError("unterminated quoted string", i)
            i = j + 1
            continue
        if c == ":" and head is None and not quoted:
            head = "".join(out)
        out.append(c)
        i += 1
    word = "".join(out)
    if not quoted and head is None and word.lower() in _OPERATORS:
        return Token(_OPERATORS[word.lower()], start, word, end=i), i
    return Token("word", start, word, head=head, end=i), i


# -- the tree ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    item: Node


Node = And | Or | Not | t.Term


# -- terms ------------------------------------------------------------------------------------

def _status(value: str, pos: int) -> t.Term:
    v = value.strip().lower()
    m = re.fullmatch(r"([1-5])xx", v)
    if m:
        return t.StatusRange(int(m[1]) * 100, int(m[1]) * 100 + 99)
    m = re.fullmatch(r"(\d{3})-(\d{3})", v)
    if m and int(m[1]) <= int(m[2]):
        return t.StatusRange(int(m[1]), int(m[2]))
    m = re.fullmatch(r"(>=|<=|>|<|=)?(\d{3})", v)
    if m:
        n, op = int(m[2]), m[1] or "="
        low, high = {"=": (n, n), ">=": (n, 999), ">": (n + 1, 999), "<=": (0, n),
                     "<": (0, n - 1)}[op]
        return t.StatusRange(low, high)
    raise FilterError(f"invalid status {value!r}: expected 404, 4xx, >=400 or 400-499", pos)


def _regex(value: str, pos: int) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise FilterError(f"invalid regular expression {value!r} ({exc})", pos) from None
    return value


def _header(directions: tuple[str, ...]) -> Callable[[str, int], t.Term]:
    def build(value: str, pos: int) -> t.Term:
        name, eq, wanted = value.partition("=")
        if not name:
            raise FilterError("expected a header name", pos)
        return t.Header(directions, t.fold(name), t.fold(wanted) if eq else None)
    return build


def _mark(value: str, pos: int) -> t.Term:
    colour = value.lower()
    if colour not in MARK_COLOURS:
        raise FilterError(f"unknown mark {value!r}: expected one of {', '.join(MARK_COLOURS)}",
                          pos)
    return t.Equals("mark", colour)


def _flag(value: str, pos: int) -> t.Term:
    name = value.lower()
    if name not in t.FLAGS:
        raise FilterError(f"unknown flag 'is:{value}': expected one of {', '.join(t.FLAGS)}",
                          pos)
    return t.Flag(name)


def _host(value: str, pos: int) -> t.Term:
    value = t.fold(value)
    return t.Glob("host", value, nocase=True) if "*" in value else t.Equals("host", value, True)


def _path(value: str, pos: int) -> t.Term:
    return t.Glob("path", value if "*" in value else value + "*")


def _body(directions: tuple[str, ...]) -> Callable[[str, int], t.Term]:
    return lambda value, pos: t.Body(directions, t.fold(value), value)


_BOTH = ("request", "response")
Builder = Callable[[str, int], t.Term]

#: ``field:value`` terms.
FIELDS: dict[str, Builder] = {
    "host": _host,
    "method": lambda v, p: t.Equals("method", v.upper()),
    "status": _status,
    "url": lambda v, p: t.Regex("url", _regex(v, p)),
    "path": _path,
    "header": _header(_BOTH),
    "reqheader": _header(("request",)),
    "resheader": _header(("response",)),
    "body": _body(_BOTH),
    "reqbody": _body(("request",)),
    "resbody": _body(("response",)),
    "type": lambda v, p: t.Contains("content_type", t.fold(v)),
    "error": lambda v, p: t.Contains("error", t.fold(v)),
    "mark": _mark,
    "marked": _mark,
    "tag": lambda v, p: t.Tag(t.fold(v)),
    "comment": lambda v, p: t.Contains("comment", t.fold(v)),
    "scheme": lambda v, p: t.Equals("scheme", t.fold(v), nocase=True),
    "kind": lambda v, p: t.Equals("kind", t.fold(v), nocase=True),
    "mode": lambda v, p: t.Equals("mode", t.fold(v), nocase=True),
    "client": lambda v, p: t.Contains("client_addr", t.fold(v)),
    "server": lambda v, p: t.Contains("server_addr", t.fold(v)),
    "is": _flag,
}

#: mitmproxy's ``~x value`` terms (regexes where mitmproxy has them, except ``~m``, ``~b*`` and
#: ``~t``, which match as ``method:``, ``body:`` and ``type:`` do).
ALIASES: dict[str, Builder] = {
    "~d": lambda v, p: t.Regex("host", _regex(v, p)),
    "~m": FIELDS["method"],
    "~c": _status,
    "~u": FIELDS["url"],
    "~h": lambda v, p: t.HeaderRegex(_BOTH, _regex(v, p)),
    "~hq": lambda v, p: t.HeaderRegex(("request",), _regex(v, p)),
    "~hs": lambda v, p: t.HeaderRegex(("response",), _regex(v, p)),
    "~b": FIELDS["body"],
    "~bq": FIELDS["reqbody"],
    "~bs": FIELDS["resbody"],
    "~t": FIELDS["type"],
    "~marker": _mark,
    "~comment": FIELDS["comment"],
    "~src": FIELDS["client"],
    "~dst": FIELDS["server"],
}

#: mitmproxy's ``~x`` terms without a value.
FLAG_ALIASES = {"~e": "error", "~marked": "marked", "~q": "unanswered", "~s": "answered",
                "~all": "all", "~websocket": "websocket", "~replay": "replay", "~http": "http",
                "~tcp": "tunnel"}


# -- the parser -------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect_operand(self, after: Token) -> None:
        if self.peek().kind not in ("word", "not", "("):
            raise FilterError(f"expected a term after {after.text!r}", self.peek().pos)

    def parse(self) -> Node | None:
        if self.peek().kind == "end":
            return None
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            raise FilterError(f"unexpected {token.text!r}", token.pos)
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.peek().kind == "or":
            self.expect_operand(self.take())
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while True:
            kind = self.peek().kind
            if kind == "and":
                self.expect_operand(self.take())
            elif kind not in ("word", "not", "("):
                break
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.peek().kind == "not":
            self.expect_operand(self.take())
            return Not(self.not_expr())
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.or_expr()
            if self.peek().kind != ")":
                raise FilterError("unclosed '('", token.pos)
            self.take()
            return node
        if token.kind == "word":
            return self.term(token)
        if token.kind == "end":
            raise FilterError("expected a term", token.pos)
        raise FilterError(f"unexpected {token.text!r}", token.pos)

    def term(self, token: Token) -> Node:
        word = token.text
        if token.head is not None and token.head.lower() in FIELDS:
            value_pos = token.pos + len(token.head) + 1
            value = word[len(token.head) + 1:]
            if not value and self.text[value_pos:value_pos + 1] not in ("'", '"'):
                raise FilterError(f"expected a value after '{token.head}:'", value_pos)
            return FIELDS[token.head.lower()](value, value_pos)
        alias = word.lower()
        if token.head is None and alias in FLAG_ALIASES:
            return t.Flag(FLAG_ALIASES[alias])
        if token.head is None and alias in ALIASES:
            value_token = self.peek()
            if value_token.kind != "word":
                raise FilterError(f"expected a value after '{word}'", value_token.pos)
            self.take()
            return ALIASES[alias](value_token.text, value_token.pos)
        if word.startswith("~") and token.head is None and len(word) > 1:
            raise FilterError(f"unknown filter {word!r}", token.pos)
        return t.Contains("url", t.fold(word))


# -- the result -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Filter:
    """A parsed filter: ``sql()`` for the store, ``matches()`` for a record in memory.

    ``matches`` takes a :class:`~nectoproxy.store.records.FlowRecord`, any object with the same
    attribute names, or a mapping with the same keys; ``body:`` terms read ``request_body`` and
    ``response_body`` (bytes or str) from it when present.
    """

    text: str
    node: Node | None

    @property
    def empty(self) -> bool:
        return self.node is None

    def sql(self, *, fts: bool = True) -> tuple[str, list[object]]:
        """A WHERE fragment over ``flows AS f``, and its parameters (``fts``: whether the
        store's ``flow_text`` is an FTS5 table)."""
        ctx = t.Context(fts)
        return ("1" if self.node is None else _sql(self.node, ctx)), ctx.params

    def matches(self, record: Any) -> bool:
        return True if self.node is None else _test(self.node, record)


def _sql(node: Node, ctx: t.Context) -> str:
    if isinstance(node, And):
        return "(" + " AND ".join(_sql(n, ctx) for n in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(_sql(n, ctx) for n in node.items) + ")"
    if isinstance(node, Not):
        return f"NOT ({_sql(node.item, ctx)})"
    return node.sql(ctx)


def _test(node: Node, record: Any) -> bool:
    if isinstance(node, And):
        return all(_test(n, record) for n in node.items)
    if isinstance(node, Or):
        return any(_test(n, record) for n in node.items)
    if isinstance(node, Not):
        return not _test(node.item, record)
    return node.test(record)


def parse_filter(text: str | None) -> Filter:
    """Parse ``text`` (None or blank: match everything); raises :class:`FilterError`."""
    text = text or ""
    return Filter(text, _Parser(text).parse())
