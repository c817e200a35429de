"""``SQLiteStore``: the flow store in one SQLite file, shared by every process of a run.

One write connection behind a lock for the API's own changes (sessions, annotations,
deletes, retention) and one read connection per thread for queries, the way Datasette does it:
the API calls these methods through ``anyio.to_thread``, and in WAL mode readers see committed
snapshots and never wait for writers. Capture does not write through here but through a
:class:`~nectoproxy.store.writer.CaptureWriter` per process.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nectoproxy.store import ingest, maintenance, schema, sorting, textindex, wsframes
from nectoproxy.store.base import (
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FLOWS,
    UNSET,
    FlowStore,
    Order,
    Unset,
)
from nectoproxy.store.filters import Filter, parse_filter
from nectoproxy.store.records import (
    MARK_COLOURS,
    Changes,
    Direction,
    FlowRecord,
    FlowSummary,
    Pruned,
    Session,
    Stats,
)
from nectoproxy.store.schema import StoreError
from nectoproxy.store.sorting import SortCursor
from nectoproxy.store.wsframes import WebSocketEvent

log = logging.getLogger("nectoproxy.store")

_SESSION_SQL = "SELECT id, name, created_at, active, flow_count, stored_bytes FROM sessions"
MAX_PAGE = 1000


class SessionNotFound(StoreError, LookupError):
    """No session has that id or name."""


def _session(row: Any) -> Session:
    id_, name, created, active, count, stored = row
    return Session(id=int(id_), name=str(name), created_at=float(created), active=bool(active),
                   flow_count=int(count), stored_bytes=int(stored))


class SQLiteStore(FlowStore):
    """The store at ``path`` (created owner-only and migrated when opened)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0,
                 max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.max_body_size = max_body_size
        self._conn = schema.open_store(self.path, busy_timeout=busy_timeout)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self.fts = bool(self._conn.execute(
            "SELECT value FROM meta WHERE key = 'fts'").fetchone()[0])

    # -- connections ---------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path, busy_timeout=self.busy_timeout, readonly=True)
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the write lock is taken at BEGIN, not at the first write."""
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            self._conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # -- sessions ------------------------------------------------------------------------------

    def create_session(self, name: str) -> Session:
        with self._write() as conn:
            return self._create(conn, name)

    def _create(self, conn: sqlite3.Connection, name: str, active: bool = False) -> Session:
        name = _session_name(name)
        if active:
            conn.execute("UPDATE sessions SET active = 0 WHERE active = 1")
        cursor = conn.execute("INSERT INTO sessions (name, created_at, active) VALUES (?, ?, ?)",
                              (name, time.time(), int(active)))
        row = conn.execute(f"{_SESSION_SQL} WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _session(row)

    def list_sessions(self) -> list[Session]:
        return [_session(r) for r in self._read().execute(f"{_SESSION_SQL} ORDER BY id DESC")]

    def get_session(self, session_id: int) -> Session | None:
        row = self._read().execute(f"{_SESSION_SQL} WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else _session(row)

    def find_session(self, ref: int | str) -> Session | None:
        if isinstance(ref, int):
            return self.get_session(ref)
        row = self._read().execute(f"{_SESSION_SQL} WHERE name = ? ORDER BY id DESC LIMIT 1",
                                   (ref.strip(),)).fetchone()
        if row is not None:
            return _session(row)
        return self.get_session(int(ref)) if ref.strip().isdigit() else None

    def _require(self, session_id: int) -> Session:
        found = self.get_session(session_id)
        if found is None:
            raise SessionNotFound(f"no session {session_id}")
        return found

    def rename_session(self, session_id: int, name: str) -> Session:
        with self._write() as conn:
            conn.execute("UPDATE sessions SET name = ? WHERE id = ?",
                         (_session_name(name), session_id))
        return self._require(session_id)

    def activate_session(self, session_id: int) -> Session:
        with self._write() as conn:
            found = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if found is None:
                raise SessionNotFound(f"no session {session_id}")
            conn.execute("UPDATE sessions SET active = 0 WHERE active = 1 AND id != ?",
                         (session_id,))
            conn.execute("UPDATE sessions SET active = 1 WHERE id = ?", (session_id,))
        return self._require(session_id)

    def active_session(self) -> Session:
        row = self._read().execute(f"{_SESSION_SQL} WHERE active = 1").fetchone()
        if row is not None:
            return _session(row)
        with self._write() as conn:
            session_id = ingest.ensure_active_session(conn)
        return self._require(session_id)

    def start_run(self, continue_session: int | str | None = None) -> Session:
        if continue_session is None:
            with self._write() as conn:
                name = ingest.run_name()
                taken = {r[0] for r in conn.execute("SELECT name FROM sessions")}
                unique = next(n for i in range(1, len(taken) + 2)
                              if (n := name if i == 1 else f"{name} ({i})") not in taken)
                session = self._create(conn, unique, active=True)
            log.info("flow store: new session %d %r", session.id, session.name)
            return session
        found = self.find_session(continue_session)
        if found is None:
            raise SessionNotFound(f"no session {continue_session!r} to continue")
        log.info("flow store: continuing session %d %r", found.id, found.name)
        return self.activate_session(found.id)

    def delete_session(self, session_id: int) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT active FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return False
            if row[0]:
                # First move capture elsewhere, so no writer adds flows to a dying session.
                conn.execute("UPDATE sessions SET active = 0 WHERE id = ?", (session_id,))
                other = conn.execute("SELECT id FROM sessions WHERE id != ? ORDER BY id DESC "
                                     "LIMIT 1", (session_id,)).fetchone()
                if other is None:
                    self._create(conn, ingest.run_name(), active=True)
                else:
                    conn.execute("UPDATE sessions SET active = 1 WHERE id = ?", other)
        self.delete_session_flows(session_id)
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return True

    # -- flows ---------------------------------------------------------------------------------

    def save_flow(self, record: FlowRecord, request_body: bytes | None = None,
                  response_body: bytes | None = None) -> FlowRecord:
        with self._write() as conn:
            if record.session_id is None:
                ingest.ensure_active_session(conn)
            clock = ingest.VersionClock(conn)
            seq = ingest.insert_flow(conn, record, clock.next())
            stored: dict[str, object] = {}
            for direction, body in (("request", request_body), ("response", response_body)):
                if body:
                    kept = body[: self.max_body_size]
                    for n, start in enumerate(range(0, len(kept), 1 << 20)):
                        ingest.append_body(conn, seq, textindex.direction_code(direction), n,
                                           kept[start:start + (1 << 20)])
                    stored[f"{direction}_stored"] = len(kept)
                    if len(kept) < len(body):
                        stored[f"{direction}_truncated"] = True
            if stored:
                ingest.update_flow(conn, seq, stored, clock.next())
            textindex.index_flow(conn, seq)
            clock.save()
        saved = self.get_flow(record.id)
        assert saved is not None
        return saved

    def _session_id(self, session_id: int | None) -> int:
        return self.active_session().id if session_id is None else session_id

    def list_flows(self, session_id: int | None = None, filter: str | Filter | None = None,
                   search: str | None = None, limit: int = 100, cursor: int | None = None,
                   order: Order = "newest") -> tuple[list[FlowSummary], int | None]:
        if order not in ("newest", "oldest"):
            raise ValueError("order must be 'newest' or 'oldest'")
        limit = max(1, min(int(limit), MAX_PAGE))
        newest = order == "newest"
        search = (search or "").strip()
        parsed = filter if isinstance(filter, Filter) else parse_filter(filter)
        source, order_by = "flows AS f", "f.seq"
        clauses: list[str] = []
        args: list[object] = []
        if search:
            source, clause, text_args, order_by = maintenance.search_clause(search, self.fts)
            clauses.append(clause)
            args.extend(text_args)
        where, params = parsed.sql(fts=self.fts)
        clauses += ["f.session_id = ?", where]
        args += [self._session_id(session_id), *params]
        if cursor is not None:
            clauses.append(f"{order_by} {'<' if newest else '>'} ?")
            args.append(int(cursor))
        sql = (f"SELECT {ingest.SUMMARY_SQL} FROM {source} WHERE {' AND '.join(clauses)} "
               f"ORDER BY {order_by} {'DESC' if newest else 'ASC'} LIMIT ?")
        rows = self._read().execute(sql, (*args, limit + 1)).fetchall()
        flows = [ingest.summary_from_row(r) for r in rows[:limit]]
        return flows, (flows[-1].seq if len(rows) > limit else None)

    def list_sorted(self, sort: str, session_id: int | None = None,
                    filter: str | Filter | None = None, search: str | None = None,
                    limit: int = 100, cursor: SortCursor | None = None,
                    order: Order = "newest", position: int | None = None,
                    ) -> tuple[list[FlowSummary], SortCursor | None]:
        key = sorting.sort_key(sort)
        if order not in ("newest", "oldest"):
            raise ValueError("order must be 'newest' or 'oldest'")
        limit = max(1, min(int(limit), MAX_PAGE))
        descending = order == "newest"
        search = (search or "").strip()
        parsed = filter if isinstance(filter, Filter) else parse_filter(filter)
        source = "flows AS f"
        clauses: list[str] = []
        args: list[object] = []
        if search:  # (the matches are collected, then sorted)
            source, clause, text_args, _ = maintenance.search_clause(search, self.fts)
            clauses.append(clause)
            args.extend(text_args)
        where, params = parsed.sql(fts=self.fts)
        clauses += ["f.session_id = ?", where]
        args += [self._session_id(session_id), *params]
        direction = "DESC" if descending else "ASC"
        if position is not None:  # a jump: OFFSET walks the index (rows are read only for
            # a filter), then the caller pages on from the rows with their cursors
            sql = (f"SELECT {ingest.SUMMARY_SQL} FROM {source} WHERE {' AND '.join(clauses)} "
                   f"ORDER BY {key} {direction}, f.seq {direction} LIMIT ? OFFSET ?")
            jumped = self._read().execute(sql, (*args, limit + 1, max(0, int(position))))
            return self._sorted_page(sort, jumped.fetchall(), limit)
        parts: list[tuple[str, list[Any], str]] = [
            ("1", [], f"{key} {direction}, f.seq {direction}")]
        if cursor is not None:
            parts = sorting.after(sort, sorting.check_cursor(sort, cursor), descending)
        selects, all_args = [], []
        for clause, part_args, order_by in parts:  # each part a subquery: LIMIT inside it
            selects.append(f"SELECT * FROM (SELECT {ingest.SUMMARY_SQL}, {key} AS sort_key "
                           f"FROM {source} WHERE {' AND '.join([*clauses, clause])} "
                           f"ORDER BY {order_by} LIMIT ?)")
            all_args += [*args, *part_args, limit + 1]
        # One statement, so one snapshot however rows change meanwhile; the outer ORDER BY
        # sorts at most two pages.
        sql = (" UNION ALL ".join(selects) +
               f" ORDER BY sort_key {direction}, seq {direction} LIMIT ?")
        rows = [r[:-1] for r in self._read().execute(sql, (*all_args, limit + 1)).fetchall()]
        return self._sorted_page(sort, rows, limit)

    @staticmethod
    def _sorted_page(sort: str, rows: list[Any], limit: int,
                     ) -> tuple[list[FlowSummary], SortCursor | None]:
        flows = [ingest.summary_from_row(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return flows, None
        return flows, sorting.cursor_of(sort, flows[-1].to_json())

    def get_flow(self, flow_id: str) -> FlowRecord | None:
        row = self._read().execute(
            f"SELECT {ingest.RECORD_SQL} FROM flows AS f LEFT JOIN flow_details AS d "
            "ON d.seq = f.seq WHERE f.id = ?", (flow_id,)).fetchone()
        return None if row is None else ingest.record_from_row(row)

    def _body_info(self, conn: sqlite3.Connection, flow_id: str,
                   direction: Direction) -> tuple[int, bool] | None:
        textindex.direction_code(direction)  # rejects anything but the two directions
        row = conn.execute(f"SELECT seq, {direction}_truncated FROM flows WHERE id = ?",
                           (flow_id,)).fetchone()
        return None if row is None else (int(row[0]), bool(row[1]))

    def get_body(self, flow_id: str, direction: Direction) -> tuple[bytes, bool] | None:
        conn = self._read()
        info = self._body_info(conn, flow_id, direction)
        if info is None:
            return None
        rows = conn.execute("SELECT data FROM bodies WHERE flow_seq = ? AND direction = ? "
                            "ORDER BY seq", (info[0], textindex.direction_code(direction)))
        return b"".join(bytes(r[0]) for r in rows.fetchall()), info[1]

    def iter_body(self, flow_id: str, direction: Direction) -> Iterator[bytes]:
        conn = self._read()
        info = self._body_info(conn, flow_id, direction)
        if info is None:
            return
        chunk = 0
        while True:  # one short statement per chunk, so no read transaction stays open
            row = conn.execute("SELECT data, seq FROM bodies WHERE flow_seq = ? AND direction = ?"
                               " AND seq >= ? ORDER BY seq LIMIT 1",
                               (info[0], textindex.direction_code(direction), chunk)).fetchone()
            if row is None:
                return
            yield bytes(row[0])
            chunk = int(row[1]) + 1

    def delete_flow(self, flow_id: str) -> bool:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM flows WHERE id = ?", (flow_id,)).rowcount > 0
        if deleted:
            with self._write() as conn:
                maintenance.prune_tombstones(conn)
        return deleted

    def delete_session_flows(self, session_id: int) -> int:
        return maintenance.delete_batches(
            self._write, "SELECT seq, request_stored + response_stored FROM flows "
            "WHERE session_id = ? ORDER BY seq LIMIT ?", (session_id,)).flows

    def annotate(self, flow_id: str, *, mark: str | None | Unset = UNSET,
                 tags: Sequence[str] | Unset = UNSET,
                 comment: str | Unset = UNSET) -> FlowSummary | None:
        fields: dict[str, object] = {}
        if mark is not UNSET:
            if mark is not None and mark not in MARK_COLOURS:
                raise ValueError(f"mark must be one of {', '.join(MARK_COLOURS)} or None")
            fields["mark"] = mark
        if not isinstance(tags, Unset):
            if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
                raise ValueError("tags must be a list of strings")
            fields["tags"] = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
        if not isinstance(comment, Unset):
            fields["comment"] = str(comment)
        with self._write() as conn:
            row = conn.execute("SELECT seq, tags, comment FROM flows WHERE id = ?",
                               (flow_id,)).fetchone()
            if row is None:
                return None
            if fields:
                names = sorted(fields)
                conn.execute(f"UPDATE flows SET {''.join(f'{n} = ?, ' for n in names)}version = ? "
                             "WHERE seq = ?", (*(ingest.encode(n, fields[n]) for n in names),
                                               ingest.bump_version(conn), row[0]))
                new = conn.execute("SELECT tags, comment FROM flows WHERE seq = ?",
                                   (row[0],)).fetchone()
                textindex.update_notes(conn, row[0], ingest.decode("tags", new[0]), new[1])
            summary = conn.execute(f"SELECT {ingest.SUMMARY_SQL} FROM flows AS f WHERE f.seq = ?",
                                   (row[0],)).fetchone()
        return ingest.summary_from_row(summary)

    def stats(self, session_id: int | None = None, filter: str | Filter | None = None,
              top: int = 10) -> Stats:
        parsed = filter if isinstance(filter, Filter) else parse_filter(filter)
        return maintenance.stats(self._read(), self._session_id(session_id), parsed, self.fts,
                                 top)

    # -- live changes and housekeeping ----------------------------------------------------------

    def index_pending(self, max_flows: int = 1_000_000) -> int:
        """Index the search text of flows waiting for it (writers do this while idle; a
        process without a writer, or a test, can catch up here). Returns how many."""
        total = 0
        while total < max_flows:
            with self._write() as conn:
                done = textindex.index_pending(conn, min(256, max_flows - total))
            total += done
            if done < 256:
                break
        return total

    # -- WebSocket connections -----------------------------------------------------------------

    def websocket_messages(self, flow_id: str, *, direction: str | None = None,
                           type_: str | None = None, after: int = 0, limit: int = 100
                           ) -> list[WebSocketEvent] | None:
        return wsframes.list_messages(self._read(), flow_id, direction=direction, type_=type_,
                                      after=int(after), limit=min(max(1, int(limit)), MAX_PAGE))

    def websocket_message_count(self, flow_id: str, *, direction: str | None = None,
                                type_: str | None = None) -> int | None:
        return wsframes.count_messages(self._read(), flow_id, direction=direction, type_=type_)

    def websocket_event(self, flow_id: str, event_id: int) -> WebSocketEvent | None:
        return wsframes.get_event(self._read(), flow_id, int(event_id))

    def websocket_marker(self) -> int:
        return wsframes.marker(self._read())

    def websocket_events_since(self, after: int, limit: int = 1000
                               ) -> list[tuple[WebSocketEvent, int]]:
        return wsframes.events_since(self._read(), int(after), max(1, int(limit)))

    def current_marker(self) -> int:
        row = self._read().execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def changes_since(self, marker: int, limit: int = 1000) -> Changes:
        return maintenance.changes_since(self._read(), int(marker), max(1, int(limit)))

    def enforce_retention(self, max_age_days: float | None = DEFAULT_MAX_AGE_DAYS,
                          max_flows: int | None = DEFAULT_MAX_FLOWS,
                          max_bytes: int | None = DEFAULT_MAX_BYTES,
                          *, now: float | None = None, batch: int = 500) -> Pruned:
        pruned = maintenance.enforce_retention(self._write, max_age_days, max_flows, max_bytes,
                                               now=time.time() if now is None else now,
                                               batch=batch)
        if pruned.flows:
            log.info("flow store: retention deleted %d flows (%d body bytes)", pruned.flows,
                     pruned.bytes)
        return pruned


def _session_name(name: str) -> str:
    name = str(name).strip()
    if not name or len(name) > 200:
        raise StoreError("a session name must have 1 to 200 characters")
    return name
