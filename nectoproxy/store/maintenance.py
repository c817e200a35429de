"""The store's heavier queries and housekeeping: search, stats, the changes feed, retention.

Deleting is always done in small transactions (a few hundred flows, at most
:data:`BATCH_BYTES` of bodies each), with a pause between them, because the capture writers of
every worker process wait on the same write lock: a retention pass or a session delete must
never hold it long enough for their busy timeout to expire.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from nectoproxy.store import filterterms, ingest, schema, textindex
from nectoproxy.store.filters import Filter
from nectoproxy.store.records import Changes, Pruned, Stats

WriteTransaction = Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]]

#: The newest tombstones kept for the changes feed; older markers get ``reset``.
TOMBSTONES_KEPT = 10_000
#: Body bytes deleted per transaction, at most (one flow at least).
BATCH_BYTES = 64 * 1024**2


def search_clause(search: str, fts: bool) -> tuple[str, str, list[object], str]:
    """(FROM source, WHERE clause, parameters, ordering column) of a substring search over
    ``flow_text``.

    With a trigram query the text index drives the loop (``CROSS JOIN`` fixes the order): it
    yields candidate rows newest first by rowid and the page stops after ``limit`` of them.
    Joined the other way round, SQLite would evaluate the MATCH once per flow of the session.
    """
    ctx = filterterms.Context(fts)
    value = filterterms.fold(search)
    query = filterterms.trigram_query(search) if fts else None
    clause = "" if query is None else f"flow_text MATCH {ctx.param(query)} AND "
    clause += "(" + " OR ".join(f"instr(lower(flow_text.{c}), {ctx.param(value)}) > 0"
                                for c in textindex.COLUMNS) + ")"
    if query is None:
        return ("flows AS f JOIN flow_text ON flow_text.rowid = f.seq", clause, ctx.params,
                "f.seq")
    return ("flow_text CROSS JOIN flows AS f ON f.seq = flow_text.rowid", clause, ctx.params,
            "flow_text.rowid")


def stats(conn: sqlite3.Connection, session_id: int, filt: Filter, fts: bool,
          top: int) -> Stats:
    """A session's counts: from the trigger-kept counters when unfiltered (instant at any
    size), else by reading the matching flows."""
    if filt.empty:
        return _counted_stats(conn, session_id, top)
    where, params = filt.sql(fts=fts)
    base = f"FROM flows AS f WHERE f.session_id = ? AND {where}"
    args = (session_id, *params)
    conn.execute("BEGIN")  # one snapshot for all the numbers
    try:
        total, req, resp, stored, errors = conn.execute(
            "SELECT count(*), coalesce(sum(f.request_size), 0), coalesce(sum(f.response_size), 0),"
            " coalesce(sum(f.request_stored + f.response_stored), 0),"
            f" coalesce(sum(f.error IS NOT NULL), 0) {base}", args).fetchone()
        counted = {}
        for dimension, template in schema.COUNTED.items():
            value = template.format(row="f")
            counted[dimension] = conn.execute(
                f"SELECT {value} AS v, count(*) {base} AND v IS NOT NULL GROUP BY v", args
            ).fetchall()
    finally:
        conn.execute("COMMIT")
    return _stats(total, req, resp, stored, errors, counted, top)


def _counted_stats(conn: sqlite3.Connection, session_id: int, top: int) -> Stats:
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT flow_count, request_bytes, response_bytes, stored_bytes, "
                           "errors FROM sessions WHERE id = ?", (session_id,)).fetchone()
        rows = conn.execute("SELECT dimension, value, flows FROM session_counts "
                            "WHERE session_id = ? AND flows > 0", (session_id,)).fetchall()
    finally:
        conn.execute("COMMIT")
    counted: dict[str, list[tuple[str, int]]] = {d: [] for d in schema.COUNTED}
    for dimension, value, flows in rows:
        counted[dimension].append((value, flows))
    total, req, resp, stored, errors = row or (0, 0, 0, 0, 0)
    return _stats(total, req, resp, stored, errors, counted, top)


def _stats(total: int, req: int, resp: int, stored: int, errors: int,
           counted: dict[str, list[tuple[str, int]]], top: int) -> Stats:
    def ranked(dimension: str) -> list[tuple[str, int]]:
        return sorted(((str(v), int(n)) for v, n in counted[dimension]),
                      key=lambda item: (-item[1], item[0]))

    return Stats(total=total, methods=dict(ranked("method")),
                 status_classes=dict(sorted(ranked("status"))),
                 hosts=ranked("host")[:top], content_types=ranked("type")[:top],
                 request_bytes=req, response_bytes=resp, stored_bytes=stored, errors=errors)


def changes_since(conn: sqlite3.Connection, marker: int, limit: int) -> Changes:
    """Summaries of flows whose version is above ``marker`` and ids of flows deleted since,
    merged in version order, from one snapshot."""
    conn.execute("BEGIN")
    try:
        now = int(conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])
        floor = int(conn.execute(
            "SELECT value FROM meta WHERE key = 'tombstone_floor'").fetchone()[0])
        rows = conn.execute(f"SELECT {ingest.SUMMARY_SQL} FROM flows AS f WHERE f.version > ? "
                            "ORDER BY f.version LIMIT ?", (marker, limit + 1)).fetchall()
        gone = conn.execute("SELECT version, flow_id FROM tombstones WHERE version > ? "
                            "ORDER BY version LIMIT ?", (marker, limit + 1)).fetchall()
    finally:
        conn.execute("COMMIT")
    events: list[tuple[int, Any]] = [(s.version, s) for s in map(ingest.summary_from_row, rows)]
    events += [(int(v), str(flow_id)) for v, flow_id in gone]
    events.sort(key=lambda e: e[0])
    taken = events[:limit]
    return Changes(flows=[e for _, e in taken if not isinstance(e, str)],
                   deleted=[e for _, e in taken if isinstance(e, str)],
                   marker=taken[-1][0] if taken else min(marker, now),
                   reset=marker < floor or marker > now, more=len(events) > limit)


def prune_tombstones(conn: sqlite3.Connection, keep: int | None = None) -> None:
    keep = TOMBSTONES_KEPT if keep is None else keep
    row = conn.execute("SELECT version FROM tombstones ORDER BY version DESC LIMIT 1 OFFSET ?",
                       (keep,)).fetchone()
    if row is not None:
        conn.execute("DELETE FROM tombstones WHERE version <= ?", row)
        conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'tombstone_floor'", row)


def _delete(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    conn.execute(f"DELETE FROM flows WHERE seq IN ({', '.join('?' for _ in seqs)})", seqs)


def _pick(rows: Sequence[Any], cutoff: float | None = None,
          extra_flows: int | None = None) -> tuple[list[int], int]:
    """The first of ``rows`` (seq, started_at, stored bytes; oldest first) to delete: those
    started before ``cutoff``, and enough to shed ``extra_flows`` flows (None: all rows),
    stopping at :data:`BATCH_BYTES` of bodies."""
    chosen: list[int] = []
    size = 0
    for seq, started, stored in rows:
        if chosen and size + stored > BATCH_BYTES:
            break
        old = cutoff is not None and started < cutoff
        if extra_flows is not None and not (old or len(chosen) < extra_flows):
            break
        chosen.append(seq)
        size += stored
    return chosen, size


def _total_flows(write: WriteTransaction) -> int:
    with write() as conn:
        return int(conn.execute("SELECT coalesce(sum(flow_count), 0) FROM sessions").fetchone()[0])


def delete_batches(write: WriteTransaction, select: str, params: Sequence[object],
                   batch: int = 500) -> Pruned:
    """Delete the flows ``select`` yields (seq, stored bytes; ``LIMIT ?`` last), in batches."""
    flows = size = 0
    for _ in range(_total_flows(write) + 1):
        with write() as conn:
            rows = [(seq, 0.0, stored) for seq, stored in
                    conn.execute(select, (*params, batch)).fetchall()]
            chosen, chosen_size = _pick(rows)
            if not chosen:
                break
            _delete(conn, chosen)
            prune_tombstones(conn)
        flows, size = flows + len(chosen), size + chosen_size
        time.sleep(0.001)  # let the writers of other processes take the lock
    _tidy(write, flows)
    return Pruned(flows=flows, bytes=size)


def used_bytes(conn: sqlite3.Connection) -> int:
    """The size of the store's pages in use (the file minus its free pages)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])


def enforce_retention(write: WriteTransaction, max_age_days: float | None,
                      max_flows: int | None, max_bytes: int | None, *, now: float,
                      batch: int = 500) -> Pruned:
    """Delete the oldest flows while any is older than ``max_age_days``, or there are more
    than ``max_flows``, or the file's pages in use exceed ``max_bytes``.

    How many flows the byte limit costs is worked out once, from the average size of a flow,
    not re-measured after each batch: deleting frees b-tree pages only as they empty (and the
    text index's pages only when it merges), so re-measuring would keep deleting.
    """
    cutoff = None if max_age_days is None else now - max_age_days * 86400
    with write() as conn:
        count = int(conn.execute("SELECT coalesce(sum(flow_count), 0) FROM sessions")
                    .fetchone()[0])
        keep = count if max_flows is None else min(count, max_flows)
        used = used_bytes(conn)
        if max_bytes is not None and used > max_bytes and count:
            keep = min(keep, int(count * max_bytes / used))
    flows = size = 0
    for _ in range(count + 1):
        with write() as conn:
            # A flow's age runs from its start, or from when its session was made if that
            # is later: a HAR of last year's traffic imported today is not deleted at once.
            rows = conn.execute("SELECT f.seq, max(f.started_at, s.created_at), "
                                "f.request_stored + f.response_stored FROM flows AS f "
                                "JOIN sessions AS s ON s.id = f.session_id "
                                "ORDER BY f.seq LIMIT ?", (batch,)).fetchall()
            chosen, chosen_size = _pick(rows, cutoff, count - flows - keep)
            if not chosen:
                break
            _delete(conn, chosen)
            prune_tombstones(conn)
        flows, size = flows + len(chosen), size + chosen_size
        time.sleep(0.001)
    _tidy(write, flows)
    return Pruned(flows=flows, bytes=size)


def _tidy(write: WriteTransaction, deleted: int) -> None:
    """After deleting: forget old tombstones, and hand free pages back to the file system
    (a few MiB per transaction) when the store was created with incremental auto-vacuum."""
    if not deleted:
        return
    with write() as conn:
        prune_tombstones(conn)
        incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    for _ in range(256 if incremental else 0):
        with write() as conn:
            if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
                break
            conn.execute("PRAGMA incremental_vacuum(2048)").fetchall()
