"""Rows in and out of ``flows`` and ``bodies``: shared by the writer thread and the store.

One place turns a :class:`FlowRecord` into column values (JSON for nested parts, host and
scheme in lower case so filters compare them through an index) and back, so the writer and
``SQLiteStore.save_flow`` cannot store the same flow two ways.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nectoproxy.store import schema
from nectoproxy.store.records import (
    SUMMARY_FIELDS,
    UPDATABLE_FIELDS,
    FlowRecord,
    FlowSummary,
)

RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(FlowRecord))
JSON_COLUMNS = frozenset({"request_headers", "request_headers_sent", "response_headers",
                          "response_headers_sent", "request_trailers", "response_trailers",
                          "timings", "tls_client", "tls_server", "modified_by", "tags"})
#: JSON columns that are NOT NULL, with what None is stored as.
_JSON_EMPTY = {"request_headers": "[]", "timings": "{}", "modified_by": "[]", "tags": "[]"}
BOOL_COLUMNS = frozenset({"request_truncated", "response_truncated", "websocket"})
_FOLDED = frozenset({"host", "scheme"})
_HEADER_COLUMNS = frozenset({"request_headers", "request_headers_sent", "response_headers",
                             "response_headers_sent", "request_trailers", "response_trailers"})
#: Columns of ``flow_details`` (the rest of a record is in ``flows``).
DETAIL_COLUMNS = ("request_headers", "request_headers_sent", "response_headers",
                  "response_headers_sent", "timings", "tls_client", "tls_server",
                  "request_trailers", "response_trailers")
_INSERTED = tuple(n for n in RECORD_FIELDS
                  if n not in ("seq", "version", "session_id", *DETAIL_COLUMNS))
_INSERT_SQL = (f"INSERT INTO flows ({', '.join(_INSERTED)}, session_id, version, text_pending)"
               f" VALUES ({', '.join('?' for _ in _INSERTED)}, "
               "coalesce(?, (SELECT id FROM sessions WHERE active = 1)), ?, ?)")
_INSERT_DETAILS_SQL = (f"INSERT INTO flow_details (seq, {', '.join(DETAIL_COLUMNS)}) VALUES "
                       f"(?, {', '.join('?' for _ in DETAIL_COLUMNS)})")
#: ``SELECT`` list of a whole record (``flows AS f`` joined to ``flow_details AS d``).
RECORD_SQL = ", ".join([*(f"f.{n}" for n in RECORD_FIELDS if n not in DETAIL_COLUMNS),
                        *(f"d.{n}" for n in DETAIL_COLUMNS)])
RECORD_SQL_FIELDS = (*(n for n in RECORD_FIELDS if n not in DETAIL_COLUMNS), *DETAIL_COLUMNS)
#: What ``update_flow`` may set: the record's updatable fields and the writer's own columns.
WRITABLE = UPDATABLE_FIELDS | {"request_stored", "response_stored", "text_pending"}

SUMMARY_SQL = ", ".join(f"f.{name}" for name in SUMMARY_FIELDS)


def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON in ASCII (lone surrogates survive). CPython's C encoder made once and
    reused: ``JSONEncoder.encode`` builds a new one per call, which was half the cost of
    encoding a flow's header lists."""
    plain = json.JSONEncoder(separators=(",", ":"))
    try:
        iterencode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
            None, plain.default, json.encoder.encode_basestring_ascii, None, ":", ",", False,
            False, True)

        def encode(value: Any) -> str:
            return "".join(iterencode(value, 0))

        sample = [("N\u00e9", "\ud800"), {"t": 1.5, "n": None, "b": True}]
        if encode(sample) == plain.encode(sample):
            return encode
    except (AttributeError, TypeError):  # not CPython, or another signature
        pass
    return plain.encode


_json = _json_encoder()


def _json_column(name: str) -> Callable[[Any], Any]:
    empty = _JSON_EMPTY.get(name)
    return lambda value: empty if value is None else _json(value)


def _folded(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


#: How each column's value is stored, where it is not stored as it is.
_ENCODERS: dict[str, Callable[[Any], Any]] = {
    **{name: _json_column(name) for name in JSON_COLUMNS},
    **{name: lambda value: int(bool(value)) for name in BOOL_COLUMNS},
    **{name: _folded for name in _FOLDED}}
_INSERTED_VALUES = operator.attrgetter(*_INSERTED)
_INSERTED_ENCODED = [(index, _ENCODERS[name]) for index, name in enumerate(_INSERTED)
                     if name in _ENCODERS]
_DETAIL_VALUES = operator.attrgetter(*DETAIL_COLUMNS)
_DETAIL_ENCODERS = [_ENCODERS[name] for name in DETAIL_COLUMNS]


def encode(name: str, value: Any) -> Any:
    encoder = _ENCODERS.get(name)
    return value if encoder is None else encoder(value)


def decode(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _HEADER_COLUMNS:
        return [(str(n), str(v)) for n, v in json.loads(value)]
    if name in JSON_COLUMNS:
        return json.loads(value)
    if name in BOOL_COLUMNS:
        return bool(value)
    return value


class VersionClock:
    """Hands out the changes feed's versions inside one write transaction.

    Reads the counter once and writes it back once (per transaction, not per row). Only valid
    under ``BEGIN IMMEDIATE`` (the write lock keeps other processes from moving the counter) and
    in transactions that delete no flows (the tombstone trigger moves it in SQL).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.start = self.value = int(
            conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])

    def next(self) -> int:
        self.value += 1
        return self.value

    def save(self) -> None:
        if self.value != self.start:
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (self.value,))


def bump_version(conn: sqlite3.Connection) -> int:
    """One new version, for a single update outside the writer (annotations)."""
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
    return int(conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])


def run_name(now: float | None = None) -> str:
    """The name of the session a proxy run starts: "Run 2026-12-01 21:27" (local time)."""
    return time.strftime("Run %Y-%m-%d %H:%M", time.localtime(now))


def ensure_active_session(conn: sqlite3.Connection) -> int:
    """The active session's id, creating and activating a new run session when there is none.
    Call inside a write transaction (two processes must not both create one)."""
    row = conn.execute("SELECT id FROM sessions WHERE active = 1").fetchone()
    if row is not None:
        return int(row[0])
    cursor = conn.execute("INSERT INTO sessions (name, created_at, active) VALUES (?, ?, 1)",
                          (run_name(), time.time()))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def insert_flow(conn: sqlite3.Connection, record: FlowRecord, version: int,
                text_pending: bool = False, counted: bool = True) -> int:
    """Insert ``record`` (into the active session when its ``session_id`` is None); its seq.
    ``text_pending``: the flow is complete and its search text should be indexed.
    ``counted``: add it to its session's counters now; False for a caller that counts what it
    inserted before it commits (``schema.count_inserted``). Every flow is inserted here."""
    values = list(_INSERTED_VALUES(record))
    for index, encoder in _INSERTED_ENCODED:
        values[index] = encoder(values[index])
    cursor = conn.execute(_INSERT_SQL, (*values, record.session_id, version, int(text_pending)))
    seq = cursor.lastrowid
    assert seq is not None
    conn.execute(_INSERT_DETAILS_SQL,
                 (seq, *map(lambda encoder, value: encoder(value), _DETAIL_ENCODERS,
                            _DETAIL_VALUES(record))))
    if counted:
        schema.count_inserted(conn, seq, seq)
    return seq


def update_flow(conn: sqlite3.Connection, seq: int, fields: Mapping[str, Any],
                version: int) -> None:
    unknown = set(fields) - WRITABLE
    if unknown:
        raise ValueError(f"not updatable flow fields: {', '.join(sorted(unknown))}")
    names = sorted(n for n in fields if n not in DETAIL_COLUMNS)
    assignments = "".join(f"{name} = ?, " for name in names)
    conn.execute(f"UPDATE flows SET {assignments}version = ? WHERE seq = ?",
                 (*(encode(n, fields[n]) for n in names), version, seq))
    details = sorted(n for n in fields if n in DETAIL_COLUMNS)
    if details:
        conn.execute(f"UPDATE flow_details SET {', '.join(f'{n} = ?' for n in details)} "
                     "WHERE seq = ?", (*(encode(n, fields[n]) for n in details), seq))


def append_body(conn: sqlite3.Connection, seq: int, direction: int, chunk: int,
                data: bytes) -> None:
    conn.execute("INSERT INTO bodies (flow_seq, direction, seq, data) VALUES (?, ?, ?, ?)",
                 (seq, direction, chunk, data))


def body_state(conn: sqlite3.Connection, seq: int, direction: int) -> tuple[int, int]:
    """(bytes stored, next chunk number) of a body, from the table (the writer's cache
    missed)."""
    row = conn.execute("SELECT coalesce(sum(length(data)), 0), coalesce(max(seq) + 1, 0) "
                       "FROM bodies WHERE flow_seq = ? AND direction = ?",
                       (seq, direction)).fetchone()
    return int(row[0]), int(row[1])


def record_from_row(row: Iterable[Any]) -> FlowRecord:
    """A record from a row of ``SELECT {RECORD_SQL}``."""
    values = {name: decode(name, value)
              for name, value in zip(RECORD_SQL_FIELDS, row, strict=True)}
    known = {name: values[name] for name in RECORD_FIELDS if name in values}
    for name, empty in (("timings", {}), ("modified_by", []), ("tags", []),
                        ("request_headers", [])):
        if known.get(name) is None:
            known[name] = empty
    return FlowRecord(**known)


def summary_from_row(row: Iterable[Any]) -> FlowSummary:
    values = dict(zip(SUMMARY_FIELDS, row, strict=True))
    values["tags"] = json.loads(values["tags"] or "[]")
    values["websocket"] = bool(values["websocket"])
    return FlowSummary(**values)
