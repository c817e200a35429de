"""What one batch of capture messages does to the database (the writer thread's half).

:class:`Batches` applies the messages :class:`~nectoproxy.store.writer.CaptureWriter` queued
to a connection, inside the transaction the writer opened. It keeps a cache of open flows (row
id and body counters), so a chunk costs one INSERT and no lookup; on a miss the counters are
read back from the tables, so the cache can be dropped at any time (it is, after a failed
batch). Chunks of one body that arrive in the same batch are joined into rows of at most
:data:`ROW_BYTES`; the per-body cap is applied as they arrive.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any, Protocol

from nectoproxy.store import ingest, schema, textindex, wsframes
from nectoproxy.store.records import FlowRecord

log = logging.getLogger("nectoproxy.store")

ROW_BYTES = 1024**2
#: Open flows whose row id and body counters are cached.
OPEN_FLOWS_CACHED = 10_000
#: Search texts made while storing, kept for the index at most (count, and characters).
READY_TEXTS = 20_000
READY_CHARS = 16 * 1024**2
_DIRECTIONS = ("request", "response")


@dataclasses.dataclass(slots=True)
class Started:
    record: FlowRecord


@dataclasses.dataclass(slots=True)
class Chunk:
    flow_id: str
    direction: int
    data: bytes


@dataclasses.dataclass(slots=True)
class Finished:
    flow_id: str
    fields: dict[str, Any]


@dataclasses.dataclass(slots=True)
class Tunnel:
    record: FlowRecord


class Done(Protocol):
    """What a :class:`Control` message signals: a ``threading.Event``, or the child writer's
    answer to its parent (see ``store.process``)."""

    def set(self) -> None: ...


@dataclasses.dataclass(slots=True)
class Control:
    """Flush (set ``done`` once everything before it is written) or close."""

    done: Done
    close: bool = False


Message = Started | Chunk | Finished | Tunnel | Control | wsframes.WebSocketEvent


@dataclasses.dataclass(slots=True)
class _Body:
    stored: int = 0
    chunks: int = 0
    truncated: bool = False


@dataclasses.dataclass(slots=True)
class _Open:
    seq: int
    bodies: tuple[_Body, _Body]


@dataclasses.dataclass(slots=True)
class _Unwritten:
    """Chunks of one body received in this batch, written joined at its end."""

    body: _Body
    parts: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0


class Batches:
    def __init__(self, max_body_size: int,
                 index_body_bytes: int = textindex.INDEX_BODY_BYTES) -> None:
        self.max_body_size = max_body_size
        self.open: collections.OrderedDict[str, _Open] = collections.OrderedDict()
        self.flows_written = 0
        self.rejected = 0
        self._pending: dict[tuple[int, int], _Unwritten] = {}
        self._complete: dict[str, dict[str, Any]] = {}
        self._bodies: dict[tuple[str, int], list[bytes]] = {}
        self._refused: set[str] = set()
        #: Search texts of flows stored complete (their parts were at hand), by seq: the
        #: index takes them instead of reading each flow back (``take_text``).
        self._texts: dict[int, textindex.Text] = {}
        self._text_chars = 0
        self.index_body_bytes = index_body_bytes
        #: The first and last seq this batch inserted.
        self._inserted: list[int | None] = [None, None]

    def _completed_here(self, messages: list[Message]) -> dict[str, dict[str, Any]]:
        """Final fields of the flows that start and finish in this batch (most flows last
        less than a batch): their row is inserted once, complete, instead of inserted and then
        updated, which halves the row writes. Their body counters are worked out here, by the
        same cap ``_chunk`` applies."""
        finished = {m.flow_id: m.fields for m in messages if isinstance(m, Finished)}
        self._bodies = {}
        if not finished:
            return {}
        started = {m.record.id for m in messages if isinstance(m, Started)}
        complete = {flow_id: dict(finished[flow_id]) for flow_id in started & finished.keys()}
        bodies = self._bodies = {}
        for m in messages:
            if isinstance(m, Chunk) and m.flow_id in complete:
                bodies.setdefault((m.flow_id, m.direction), []).append(m.data)
        for flow_id, fields in complete.items():
            for code, direction in enumerate(_DIRECTIONS):
                total = sum(map(len, bodies.get((flow_id, code), ())))
                fields[f"{direction}_stored"] = min(total, self.max_body_size)
                fields[f"{direction}_truncated"] = bool(
                    fields.get(f"{direction}_truncated") or total > self.max_body_size)
        return complete

    def write(self, conn: sqlite3.Connection, messages: list[Message]) -> None:
        """Apply ``messages`` inside the caller's write transaction."""
        clock = ingest.VersionClock(conn)
        self._pending = {}
        self._complete = self._completed_here(messages)
        self._refused = set()
        # The rows inserted here are counted at the end, all at once. None of them changes
        # before that: a flow that starts and ends in this batch is inserted complete, and
        # only flows inserted by earlier batches are updated (``_finish``).
        self._inserted = [None, None]
        for message in messages:
            self._apply(conn, clock, message)
        for key in list(self._pending):
            self._flush_body(conn, key)
        schema.count_inserted(conn, *self._inserted)
        clock.save()

    def committed(self) -> None:
        while len(self.open) > OPEN_FLOWS_CACHED:
            self.open.popitem(last=False)
        self._bodies = {}

    def rolled_back(self) -> None:
        self.open.clear()  # it may describe rows that no longer exist
        self._texts.clear()
        self._text_chars = 0
        self._pending = {}
        self._bodies = {}

    def _keep_text(self, seq: int, record: FlowRecord) -> None:
        """Make the search text of a flow stored complete from what this batch holds: the
        same text ``textindex`` would read back, without reading it back (what made
        indexing cost twice what storing did)."""
        if len(self._texts) >= READY_TEXTS or self._text_chars >= READY_CHARS:
            return  # the index reads these back from the store instead
        flow_id = record.id
        text = textindex.flow_text(
            record.url, (record.request_headers, record.request_headers_sent,
                         record.response_headers, record.response_headers_sent,
                         record.request_trailers, record.response_trailers),
            (self._stored(flow_id, 0), self._stored(flow_id, 1)),
            (record.request_body_encoding, record.response_body_encoding), record.tags,
            record.comment, self.index_body_bytes)
        self._texts[seq] = text
        self._text_chars += sum(map(len, text))

    def _stored(self, flow_id: str, direction: int) -> Iterator[bytes]:
        """A body's chunks in this batch as far as they are stored (``max_body_size``)."""
        room = self.max_body_size
        for data in self._bodies.get((flow_id, direction), ()):
            if room <= 0:
                return
            yield data[:room]
            room -= len(data)

    def take_text(self, seq: int) -> textindex.Text | None:
        """The search text ``_keep_text`` made for flow ``seq`` (forgotten now), or None."""
        text = self._texts.pop(seq, None)
        if text is not None:
            self._text_chars -= sum(map(len, text))
        return text

    def _apply(self, conn: sqlite3.Connection, clock: ingest.VersionClock,
               message: Message) -> None:
        """One message. One that can never be stored (a duplicate id, a value SQLite cannot
        bind) fails alone: SQLite undoes just that statement and the batch goes on."""
        try:
            if isinstance(message, Started):
                record, complete = message.record, self._complete.get(message.record.id)
                if complete is not None:
                    for name, value in complete.items():  # the record is this writer's now
                        setattr(record, name, value)
                seq = ingest.insert_flow(conn, record, clock.next(),
                                         text_pending=complete is not None, counted=False)
                self._was_inserted(seq)
                self.open[record.id] = _Open(seq, (_Body(), _Body()))
                if complete is not None:
                    self._keep_text(seq, record)
            elif isinstance(message, Tunnel):
                seq = ingest.insert_flow(conn, message.record, clock.next(), text_pending=True,
                                         counted=False)
                self._was_inserted(seq)
                self._keep_text(seq, message.record)
                self.flows_written += 1
            elif isinstance(message, Chunk):
                self._chunk(conn, message)
            elif isinstance(message, Finished):
                self._finish(conn, clock, message)
            elif isinstance(message, wsframes.WebSocketEvent):
                state = self._state(conn, message.flow_id)
                if state is not None:  # (under the flow's row: deleted with it)
                    wsframes.insert(conn, state.seq, message)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                TypeError, ValueError) as exc:
            if isinstance(message, Started | Tunnel):
                self._refused.add(message.record.id)  # not another flow's chunks, if a dup
            self.rejected += 1
            if self.rejected == 1:
                log.error("flow store: a flow could not be stored (%s: %s); further such "
                          "failures are only counted", type(exc).__name__, exc)

    def _was_inserted(self, seq: int) -> None:
        """Widen the seq range this batch inserted (under the write lock nobody else inserts
        meanwhile, so every seq in it is this batch's)."""
        inserted = self._inserted
        if inserted[0] is None:
            inserted[0] = seq
        inserted[1] = seq

    def _state(self, conn: sqlite3.Connection, flow_id: str) -> _Open | None:
        if flow_id in self._refused:
            return None
        state = self.open.get(flow_id)
        if state is not None:
            self.open.move_to_end(flow_id)
            return state
        row = conn.execute("SELECT seq, request_truncated, response_truncated FROM flows "
                           "WHERE id = ?", (flow_id,)).fetchone()
        if row is None:
            return None  # its start was dropped or failed: nothing to add to
        bodies = []
        for code in (0, 1):
            stored, chunks = ingest.body_state(conn, row[0], code)
            bodies.append(_Body(stored, chunks, bool(row[1 + code])))
        state = self.open[flow_id] = _Open(row[0], (bodies[0], bodies[1]))
        return state

    def _chunk(self, conn: sqlite3.Connection, message: Chunk) -> None:
        state = self._state(conn, message.flow_id)
        if state is None:
            return
        body = state.bodies[message.direction]
        room = max(self.max_body_size - body.stored, 0)
        data = message.data if len(message.data) <= room else message.data[:room]
        if len(data) < len(message.data) and not body.truncated:
            body.truncated = True  # stored at once: the cache may be dropped before the end
            conn.execute(f"UPDATE flows SET {_DIRECTIONS[message.direction]}_truncated = 1 "
                         "WHERE seq = ?", (state.seq,))
        if not data:
            return
        body.stored += len(data)
        key = (state.seq, message.direction)
        unwritten = self._pending.get(key)
        if unwritten is None:
            unwritten = self._pending[key] = _Unwritten(body)
        unwritten.parts.append(data)
        unwritten.size += len(data)
        if unwritten.size >= ROW_BYTES:
            self._flush_body(conn, key, whole_rows_only=True)

    def _flush_body(self, conn: sqlite3.Connection, key: tuple[int, int],
                    whole_rows_only: bool = False) -> None:
        """Write a body's unwritten chunks as rows of ROW_BYTES (the last one shorter, unless
        ``whole_rows_only``: then the rest waits for more chunks)."""
        unwritten = self._pending.pop(key, None)
        if unwritten is None:
            return
        parts, body = unwritten.parts, unwritten.body
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        end = len(data) - len(data) % ROW_BYTES if whole_rows_only else len(data)
        for start in range(0, end, ROW_BYTES):
            ingest.append_body(conn, key[0], key[1], body.chunks, data[start:start + ROW_BYTES])
            body.chunks += 1
        if end < len(data):
            self._pending[key] = _Unwritten(body, [data[end:]], len(data) - end)

    def _finish(self, conn: sqlite3.Connection, clock: ingest.VersionClock,
                message: Finished) -> None:
        state = self._state(conn, message.flow_id)
        if state is None:
            return
        for code in (0, 1):
            self._flush_body(conn, (state.seq, code))
        del self.open[message.flow_id]
        self.flows_written += 1
        if message.flow_id in self._complete:
            return  # inserted complete
        fields = message.fields
        for code, direction in enumerate(_DIRECTIONS):
            body = state.bodies[code]
            fields[f"{direction}_stored"] = body.stored
            fields[f"{direction}_truncated"] = bool(fields.get(f"{direction}_truncated")
                                                    or body.truncated)
        fields["text_pending"] = 1
        ingest.update_flow(conn, state.seq, fields, clock.next())
