"""The shapes the store hands out and takes in: sessions, flow records, summaries, stats.

They are plain dataclasses so capture code, the API and tests can build and compare them without
a database. Field names are the column names of ``flows`` (snake_case); ``to_json()`` gives the
camelCase keys the REST API returns, so the API never renames anything by hand and the UI's
types (generated from the API schema) follow the store.

Units, once for all: ``started_at`` and ``created_at`` are Unix time in seconds; ``duration``
and every ``timings`` value are milliseconds, the timings being offsets from ``started_at``.
Sizes are bytes.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Direction = Literal["request", "response"]
DIRECTIONS: tuple[Direction, Direction] = ("request", "response")

#: Header fields in order, names with the case they had on the wire; names may repeat.
HeaderList = list[tuple[str, str]]

#: The colours a flow can be marked with (as in mitmweb and HTTP Toolkit).
MARK_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "grey")


class Timings(TypedDict, total=False):
    """Milliseconds from ``started_at`` to the end of each phase; absent when it did not happen
    (no ``connect`` on a reused origin connection, no ``tls_handshake`` for plain HTTP)."""

    connect: float
    tls_handshake: float
    request_sent: float
    first_byte: float
    complete: float


class TlsInfo(TypedDict, total=False):
    """One side of a TLS connection. ``subject``, ``issuer`` and ``not_after`` (ISO 8601) are
    the origin certificate's, so they only appear on the server side."""

    sni: str
    version: str
    cipher: str
    alpn: str
    subject: str
    issuer: str
    not_after: str


def new_flow_id() -> str:
    """A new flow id in the engine's format (``Flow.id``): 32 hex digits, random."""
    return os.urandom(16).hex()


@dataclass(kw_only=True, slots=True)
class FlowRecord:
    """Everything the store knows about one flow except its bodies.

    ``kind`` is ``"http"`` for a request/response exchange, ``"tunnel"`` for a connection relayed
    untouched (pass-through TLS): then ``host``, ``port``, ``bytes_up``, ``bytes_down`` and
    ``duration`` are what matters and ``url`` is the authority, ``host:port``.
    ``session_id`` None means "the active session at the moment the row is written", which is
    how capture follows a session switch made in another process.
    """

    id: str
    session_id: int | None = None
    seq: int | None = None
    version: int | None = None
    kind: str = "http"
    mode: str = "regular"
    client_addr: str | None = None
    server_addr: str | None = None
    scheme: str = "http"
    method: str = ""
    url: str = ""
    host: str = ""
    port: int | None = None
    path: str = ""
    http_version: str = "HTTP/1.1"
    status: int | None = None
    reason: str | None = None
    #: As received from the client; ``_sent`` is what went to the origin (None: unchanged).
    request_headers: HeaderList = field(default_factory=list)
    request_headers_sent: HeaderList | None = None
    #: As received from the origin; ``_sent`` is what went to the client (None: unchanged).
    response_headers: HeaderList | None = None
    response_headers_sent: HeaderList | None = None
    #: Trailer fields (after a chunked or HTTP/2 body; gRPC's status is there) as received
    #: from the client and from the origin; None when the message had none.
    request_trailers: HeaderList | None = None
    response_trailers: HeaderList | None = None
    content_type: str | None = None
    #: Body sizes on the wire (content-encoded) and decoded; None when not known yet.
    request_size: int | None = None
    request_size_decoded: int | None = None
    response_size: int | None = None
    response_size_decoded: int | None = None
    #: The content-coding of the body bytes given to the store ("" = identity); the search
    #: index decodes gzip and deflate, and skips other codings.
    request_body_encoding: str = ""
    response_body_encoding: str = ""
    #: Body bytes actually stored, and whether bytes were dropped (the cap, a full queue).
    request_stored: int = 0
    response_stored: int = 0
    request_truncated: bool = False
    response_truncated: bool = False
    started_at: float = 0.0
    duration: float | None = None
    timings: Timings = field(default_factory=lambda: Timings())
    tls_client: TlsInfo | None = None
    tls_server: TlsInfo | None = None
    error: str | None = None
    modified_by: list[str] = field(default_factory=list)
    replay_of: str | None = None
    mark: str | None = None
    tags: list[str] = field(default_factory=list)
    comment: str = ""
    websocket: bool = False
    bytes_up: int | None = None
    bytes_down: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


_RECORD_NAMES = tuple(f.name for f in dataclasses.fields(FlowRecord))
_record_values = operator.attrgetter(*_RECORD_NAMES)


#: The slots' own setters: calling them skips the attribute lookup by name (half the cost of
#: unpickling a record in the writer process).
_RECORD_SETTERS = tuple(getattr(FlowRecord, name).__set__ for name in _RECORD_NAMES)


def _record_from_values(values: tuple[Any, ...]) -> FlowRecord:
    record = FlowRecord.__new__(FlowRecord)
    for set_value, value in zip(_RECORD_SETTERS, values, strict=True):
        set_value(record, value)
    return record


def _reduce_record(self: FlowRecord) -> tuple[Any, ...]:
    """Pickled as one tuple of values, read in C (capture pickles thousands a second for the
    writer process; the dataclass's own state methods are Python loops)."""
    return (_record_from_values, (_record_values(self),))


FlowRecord.__reduce__ = _reduce_record  # type: ignore[method-assign,assignment]


#: Fields ``flow_finished`` may update (everything but identity and annotations).
UPDATABLE_FIELDS = frozenset(
    f.name for f in dataclasses.fields(FlowRecord)
) - {"id", "session_id", "seq", "version", "mark", "tags", "comment",
     "request_stored", "response_stored"}


@dataclass(kw_only=True, slots=True)
class FlowSummary:
    """The columns a flow list shows; read without touching headers or bodies."""

    id: str
    session_id: int
    seq: int
    version: int
    kind: str
    method: str
    url: str
    host: str
    path: str
    scheme: str
    http_version: str
    status: int | None
    reason: str | None
    content_type: str | None
    request_size: int | None
    response_size: int | None
    started_at: float
    duration: float | None
    error: str | None
    mark: str | None
    tags: list[str]
    comment: str
    websocket: bool

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(FlowSummary))


@dataclass(kw_only=True, slots=True, frozen=True)
class Session:
    """A named group of flows; exactly one is active (new flows go to it)."""

    id: int
    name: str
    created_at: float
    active: bool
    flow_count: int
    stored_bytes: int

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(kw_only=True, slots=True)
class Stats:
    """Counts over one session (optionally filtered), for the UI's overview panel."""

    total: int
    methods: dict[str, int]
    #: "1xx".."5xx", and "none" for flows without a status (tunnels, in flight, failed).
    status_classes: dict[str, int]
    hosts: list[tuple[str, int]]
    content_types: list[tuple[str, int]]
    request_bytes: int
    response_bytes: int
    stored_bytes: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        data = _to_json(self)
        data["hosts"] = [{"host": h, "count": n} for h, n in self.hosts]
        data["contentTypes"] = [{"contentType": t, "count": n} for t, n in self.content_types]
        return data


@dataclass(kw_only=True, slots=True)
class Changes:
    """What ``changes_since`` found: flows added or updated and flows deleted since a marker.

    ``reset`` is True when the marker is older than the deletions the store still remembers
    (it forgets all but the newest ones): the caller should reload its list instead.
    ``more`` is True when the answer was cut at the limit; call again with ``marker``.
    """

    flows: list[FlowSummary]
    deleted: list[str]
    marker: int
    reset: bool = False
    more: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"flows": [f.to_json() for f in self.flows], "deleted": list(self.deleted),
                "marker": self.marker, "reset": self.reset, "more": self.more}


@dataclass(kw_only=True, slots=True, frozen=True)
class Pruned:
    """What ``enforce_retention`` deleted."""

    flows: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


def camel(name: str) -> str:
    """``request_size_decoded`` -> ``requestSizeDecoded``: the API's spelling of a field."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {camel(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _to_json(obj: Any) -> dict[str, Any]:
    return {camel(f.name): _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
