"""The store's schema as numbered migrations, and how every connection to a store is opened.

``PRAGMA user_version`` is the schema version; ``MIGRATIONS[n - 1]`` takes a store from version
``n - 1`` to ``n`` (sqlite-utils' ``migrate``, Django's numbered migrations). Opening a store
applies the missing ones in one write transaction, so last month's file opens in today's build
and two processes opening a store at once cannot both migrate it. A migration, once released,
is never edited: a change is a new migration at the end. A store newer than this code is
refused with :class:`SchemaVersionError` rather than half-understood.

A migration is a list of SQL statements, or a function of the connection (for work SQL alone
cannot do, such as asking this SQLite whether it has FTS5).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nectoproxy.store import wsframes

log = logging.getLogger("nectoproxy.store")

#: ``PRAGMA application_id`` of a NectoProxy store ("NPXS"), so a stranger's SQLite file is not
#: "migrated" into one.
APPLICATION_ID = 0x4E505853


class StoreError(Exception):
    """The store cannot do what was asked (the file, a missing session, a bad argument)."""


class SchemaVersionError(StoreError):
    """The file is a store from a newer NectoProxy, or not a NectoProxy store at all."""


Migration = Sequence[str] | Callable[[sqlite3.Connection], None]

#: The dimensions of ``session_counts`` and the SQL of a row's value in each ({row}: new/old).
#: Migration 1's triggers are written from it, as ``count_inserted``'s pass is: a change here
#: needs a migration that recreates them (and recounts), never an edit that only new stores
#: would get.
COUNTED = {
    "method": "{row}.method",
    "status": "CASE WHEN {row}.status IS NULL THEN 'none' ELSE ({row}.status / 100) || 'xx' END",
    "host": "{row}.host",
    "type": ("lower(trim(substr({row}.content_type, 1, "
             "instr({row}.content_type || ';', ';') - 1)))"),
}


def _totals(sign: str, row: str) -> str:
    return (f"UPDATE sessions SET flow_count = flow_count {sign} 1, "
            f"stored_bytes = stored_bytes {sign} ({row}.request_stored + {row}.response_stored), "
            f"request_bytes = request_bytes {sign} coalesce({row}.request_size, 0), "
            f"response_bytes = response_bytes {sign} coalesce({row}.response_size, 0), "
            f"errors = errors {sign} ({row}.error IS NOT NULL) WHERE id = {row}.session_id;")


def _count(row: str, sign: str) -> str:
    """Trigger statements moving ``row``'s value of each dimension by one."""
    statements = []
    for dimension, template in COUNTED.items():
        value = template.format(row=row)
        if sign == "+":
            known = f"{row}.content_type IS NOT NULL" if dimension == "type" else "1"
            statements.append(
                f"INSERT INTO session_counts (session_id, dimension, value, flows) "
                f"SELECT {row}.session_id, '{dimension}', {value}, 1 WHERE {known} "
                "ON CONFLICT (session_id, dimension, value) DO UPDATE SET flows = flows + 1;")
        else:
            statements.append(
                f"UPDATE session_counts SET flows = flows - 1 WHERE session_id = "
                f"{row}.session_id AND dimension = '{dimension}' AND value = {value};")
    return "\n        ".join(statements)


_V1_CORE = [
    # The changes feed's clock: every insert or update of a flow takes the next value, so one
    # indexed query finds what changed since any earlier value, whichever process wrote it.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('version', 0)",
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 0,
        flow_count INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        request_bytes INTEGER NOT NULL DEFAULT 0,
        response_bytes INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX sessions_one_active ON sessions (active) WHERE active = 1",
    # seq is the rowid: AUTOINCREMENT never reuses a value, and rows are only inserted under
    # SQLite's single write lock, so seq grows in commit order across processes. The row holds
    # what lists and most filters read; headers and other bulky details live in flow_details,
    # so a scan of flows reads ~10 rows per page instead of 2.
    """CREATE TABLE flows (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL DEFAULT 'http',
        mode TEXT NOT NULL DEFAULT 'regular',
        client_addr TEXT, server_addr TEXT,
        scheme TEXT NOT NULL DEFAULT '', method TEXT NOT NULL DEFAULT '',
        url TEXT NOT NULL DEFAULT '', host TEXT NOT NULL DEFAULT '', port INTEGER,
        path TEXT NOT NULL DEFAULT '', http_version TEXT NOT NULL DEFAULT '',
        status INTEGER, reason TEXT,
        content_type TEXT,
        request_size INTEGER, request_size_decoded INTEGER,
        response_size INTEGER, response_size_decoded INTEGER,
        request_body_encoding TEXT NOT NULL DEFAULT '',
        response_body_encoding TEXT NOT NULL DEFAULT '',
        request_stored INTEGER NOT NULL DEFAULT 0, response_stored INTEGER NOT NULL DEFAULT 0,
        request_truncated INTEGER NOT NULL DEFAULT 0,
        response_truncated INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL, duration REAL,
        error TEXT, modified_by TEXT NOT NULL DEFAULT '[]', replay_of TEXT,
        mark TEXT, tags TEXT NOT NULL DEFAULT '[]', comment TEXT NOT NULL DEFAULT '',
        websocket INTEGER NOT NULL DEFAULT 0,
        bytes_up INTEGER, bytes_down INTEGER
    )""",
    """CREATE TABLE flow_details (
        seq INTEGER PRIMARY KEY REFERENCES flows (seq) ON DELETE CASCADE,
        request_headers TEXT NOT NULL DEFAULT '[]', request_headers_sent TEXT,
        response_headers TEXT, response_headers_sent TEXT,
        timings TEXT NOT NULL DEFAULT '{}', tls_client TEXT, tls_server TEXT
    )""",
    # Lists page newest-first by seq inside a session; an equality on host keeps that order
    # through its index. Other filters scan newest-first and stop after a page: an index on a
    # low-cardinality column such as status only tempts the planner into sorting.
    "CREATE INDEX flows_session ON flows (session_id, seq)",
    "CREATE INDEX flows_host ON flows (session_id, host, seq)",
    "CREATE INDEX flows_version ON flows (version)",
    "CREATE INDEX flows_marked ON flows (session_id, seq) WHERE mark IS NOT NULL",
    """CREATE TABLE bodies (
        rowid INTEGER PRIMARY KEY,
        flow_seq INTEGER NOT NULL REFERENCES flows (seq) ON DELETE CASCADE,
        direction INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX bodies_flow ON bodies (flow_seq, direction, seq)",
    # Per-session counters kept by triggers (and, since migration 7, by the inserting code for
    # inserts: count_inserted), so listing sessions, checking the byte budget and
    # a session's overview (counts by method, status class, host, content type) never read a
    # million rows.
    """CREATE TABLE session_counts (
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        dimension TEXT NOT NULL,
        value TEXT NOT NULL,
        flows INTEGER NOT NULL,
        PRIMARY KEY (session_id, dimension, value)
    ) WITHOUT ROWID""",
    f"""CREATE TRIGGER flows_counted AFTER INSERT ON flows BEGIN
        {_totals("+", "new")}
        {_count("new", "+")}
    END""",
    f"""CREATE TRIGGER flows_uncounted AFTER DELETE ON flows BEGIN
        {_totals("-", "old")}
        {_count("old", "-")}
    END""",
    """CREATE TRIGGER flows_sized AFTER UPDATE OF request_stored, response_stored,
            request_size, response_size, error ON flows BEGIN
        UPDATE sessions SET
            stored_bytes = stored_bytes + new.request_stored + new.response_stored
                - old.request_stored - old.response_stored,
            request_bytes = request_bytes + coalesce(new.request_size, 0)
                - coalesce(old.request_size, 0),
            response_bytes = response_bytes + coalesce(new.response_size, 0)
                - coalesce(old.response_size, 0),
            errors = errors + (new.error IS NOT NULL) - (old.error IS NOT NULL)
        WHERE id = new.session_id;
    END""",
    f"""CREATE TRIGGER flows_recounted AFTER UPDATE OF method, status, host, content_type
            ON flows BEGIN
        {_count("old", "-")}
        {_count("new", "+")}
    END""",
]

_V2_TOMBSTONES = [
    # Deleted flows, so the changes feed can tell other processes what disappeared. Only the
    # newest are kept (see sqlite.TOMBSTONES_KEPT); 'tombstone_floor' says what was forgotten.
    "CREATE TABLE tombstones (version INTEGER PRIMARY KEY, flow_id TEXT NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('tombstone_floor', 0)",
    """CREATE TRIGGER flows_tombstone AFTER DELETE ON flows BEGIN
        UPDATE meta SET value = value + 1 WHERE key = 'version';
        INSERT INTO tombstones (version, flow_id)
            VALUES ((SELECT value FROM meta WHERE key = 'version'), old.id);
    END""",
]


def _v3_search_index(conn: sqlite3.Connection) -> None:
    """The search text of each finished flow: an FTS5 trigram table when this SQLite has FTS5
    (substring search through an index), else a plain table searched with LIKE-style scans.

    Filling it is deferred: ``text_pending`` marks flows whose text is not indexed yet, and
    writers index them while capture is idle (tokenizing is five times the cost of storing a
    flow), so this migration only marks the flows stored before it.
    """
    from nectoproxy.store import textindex

    fts = fts5_available(conn)
    columns = ", ".join(textindex.COLUMNS)
    if fts:
        conn.execute(f"CREATE VIRTUAL TABLE flow_text USING fts5({columns}, "
                     "tokenize='trigram', detail=none)")
    else:
        conn.execute(f"CREATE TABLE flow_text (rowid INTEGER PRIMARY KEY, {columns})")
    conn.execute("INSERT INTO meta (key, value) VALUES ('fts', ?)", (int(fts),))
    conn.execute("""CREATE TRIGGER flows_unindexed AFTER DELETE ON flows BEGIN
        DELETE FROM flow_text WHERE rowid = old.seq;
    END""")
    conn.execute("ALTER TABLE flows ADD COLUMN text_pending INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX flows_text_pending ON flows (seq) WHERE text_pending = 1")
    conn.execute("UPDATE flows SET text_pending = 1 "
                 "WHERE status IS NOT NULL OR error IS NOT NULL OR kind != 'http'")


# Sorted lists (nectoproxy.store.sorting) read these in order and stop after a page. The keys
# are the same coalesce() expressions the queries use (an expression index serves only its own
# expression), so filters on status and the others never pick these up instead of seq order.
_V4_SORT_INDEXES = [
    "CREATE INDEX flows_sort_status ON flows (session_id, coalesce(status, -1), seq)",
    "CREATE INDEX flows_sort_size ON flows (session_id, coalesce(response_size, -1), seq)",
    "CREATE INDEX flows_sort_duration ON flows (session_id, coalesce(duration, -1.0), seq)",
    "CREATE INDEX flows_sort_method ON flows (session_id, method, seq)",
]

# Inserted flows are counted by the code that inserts them (``ingest.insert_flow``, the one
# insert path, or a capture writer's batch at its end: :func:`count_inserted`), no longer by a
# trigger: its five statements per row were a tenth of the writer's work, and even a trigger
# that does nothing costs a sub-program per row. Deletes and updates keep their triggers.
_V7_COUNTED_BY_INSERTERS = ["DROP TRIGGER flows_counted"]

#: One pass over a seq range: its rows grouped by session and by each counted value (the
#: expressions the delete and update triggers use, so that they take away what was added),
#: with the totals.
_VALUES_OF_RANGE = (
    "SELECT f.session_id, f.content_type IS NOT NULL, "
    + ", ".join(template.format(row="f") for template in COUNTED.values())
    + ", count(*), sum(f.request_stored + f.response_stored), sum(coalesce(f.request_size, 0)),"
    " sum(coalesce(f.response_size, 0)), sum(f.error IS NOT NULL) FROM flows AS f "
    "WHERE f.seq BETWEEN ? AND ? GROUP BY 1, 2, "
    + ", ".join(str(column) for column in range(3, 3 + len(COUNTED))))
_ADD_TOTALS = ("UPDATE sessions SET flow_count = flow_count + ?, stored_bytes = stored_bytes + ?, "
               "request_bytes = request_bytes + ?, response_bytes = response_bytes + ?, "
               "errors = errors + ? WHERE id = ?")
_ADD_COUNT = ("INSERT INTO session_counts (session_id, dimension, value, flows) "
              "VALUES (?, ?, ?, ?) ON CONFLICT (session_id, dimension, value) "
              "DO UPDATE SET flows = flows + excluded.flows")


def count_inserted(conn: sqlite3.Connection, first: int | None, last: int | None) -> None:
    """Add flows ``first`` to ``last`` (seqs, all inserted in this transaction and not changed
    since) to their sessions' counters (``flow_count`` and the totals, ``session_counts``).
    Nothing when ``first`` is None."""
    if first is not None and last is not None:
        totals: dict[int, list[int]] = {}
        counts: dict[tuple[int, str, Any], int] = {}
        dimensions = tuple(COUNTED)
        for row in conn.execute(_VALUES_OF_RANGE, (first, last)).fetchall():
            session_id, typed, values, sums = row[0], row[1], row[2:-5], row[-5:]
            total = totals.setdefault(session_id, [0, 0, 0, 0, 0])
            for index, value in enumerate(sums):
                total[index] += value
            for dimension, value in zip(dimensions, values, strict=True):
                if dimension != "type" or typed:
                    key = (session_id, dimension, value)
                    counts[key] = counts.get(key, 0) + sums[0]
        conn.executemany(_ADD_TOTALS, ((*total, session_id)
                                       for session_id, total in totals.items()))
        conn.executemany(_ADD_COUNT, ((*key, flows) for key, flows in counts.items()))


# Trailer fields (gRPC's status): JSON header lists beside the heads.
_V6_TRAILERS = [
    "ALTER TABLE flow_details ADD COLUMN request_trailers TEXT",
    "ALTER TABLE flow_details ADD COLUMN response_trailers TEXT",
]

MIGRATIONS: list[Migration] = [_V1_CORE, _V2_TOMBSTONES, _v3_search_index, _V4_SORT_INDEXES,
                               # WebSocket connections' openings, messages and closes.
                               wsframes.MIGRATION, _V6_TRAILERS, _V7_COUNTED_BY_INSERTERS]
SCHEMA_VERSION = len(MIGRATIONS)


def fts5_available(conn: sqlite3.Connection) -> bool:
    """Whether this sqlite3 build has FTS5 with the trigram tokenizer (SQLite >= 3.34)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp._fts5_probe")
    return True


def _regexp(pattern: str, value: object) -> bool:
    """SQLite's REGEXP operator: ``value REGEXP pattern``, a case-insensitive search."""
    if value is None:
        return False
    return _compiled(pattern).search(str(value)) is not None


_patterns: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _patterns.get(pattern)
    if compiled is None:
        if len(_patterns) > 256:
            _patterns.clear()
        compiled = _patterns[pattern] = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return compiled


def create_private_file(path: Path) -> None:
    """Create ``path`` owner-only (0600) if it does not exist: the store holds cookies, tokens
    and bodies. ``os.open`` creates it with that mode at once (a umask can only remove bits),
    and SQLite gives the -wal and -shm files the mode of the database file
    (``findCreateFileMode`` in its unix VFS), so they are private from birth too.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        if path.is_file() and path.stat().st_mode & 0o077:
            log.warning("flow store %s is readable by other users (mode %o)", path,
                        path.stat().st_mode & 0o777)
        return
    os.close(fd)


#: Page cache of a connection that inserts flows (the writer's), and of the others, in KiB.
WRITER_CACHE_KIB = 32768
CACHE_KIB = 2048
#: Past this size the writer checkpoints the write-ahead log back into the file and
#: truncates it (SQLite's own checkpoints cannot shrink it while others keep writing).
WAL_LIMIT = 64 * 1024**2


def connect(path: str | Path, *, busy_timeout: float = 5.0,
            readonly: bool = False, cache_kib: int = CACHE_KIB) -> sqlite3.Connection:
    """Open a connection with the store's settings (not migrating; see :func:`open_store`).

    Autocommit mode (``isolation_level=None``): callers write ``BEGIN IMMEDIATE`` themselves, so
    a transaction takes the write lock up front instead of failing halfway on a busy database.
    ``check_same_thread=False`` because the owner may be closed from another thread; every
    connection is still used by one thread at a time (per-thread readers, a locked writer).
    """
    path = Path(path)
    if not readonly:
        create_private_file(path)
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        if not readonly and conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only possible before the first table: incremental auto-vacuum lets retention hand
            # pages back to the file system; 8 KiB pages hold bodies and the search text's
            # ~2 KB rows with less waste than 4 KiB ones (and write faster).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA page_size = 8192")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal" and not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        # Inserts touch random pages of the flow id index; past the default 2 MiB of cache
        # each one is a read from the file system cache (the writer gets WRITER_CACHE_KIB).
        conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        if not readonly:
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.create_function("regexp", 2, _regexp, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the store to schema ``target`` (default: this code's); return the version it had.

    Runs in one ``BEGIN IMMEDIATE`` transaction, and reads the version again once it holds the
    write lock, so a process that lost the race to migrate finds nothing left to do.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"no schema version {target}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _check_identity(conn)
        for number in range(found + 1, target + 1):
            step = MIGRATIONS[number - 1]
            if callable(step):
                step(conn)
            else:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        if found == 0 and target > 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if found < target:
        log.info("flow store: schema version %d -> %d", found, target)
    return found


def _check_identity(conn: sqlite3.Connection) -> int:
    version = user_version(conn)
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables or app_id not in (0, APPLICATION_ID):
            raise SchemaVersionError("the file is an SQLite database but not a NectoProxy "
                                     "flow store")
    elif app_id != APPLICATION_ID:
        raise SchemaVersionError("the file is an SQLite database but not a NectoProxy flow store")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the flow store has schema version {version}, newer than this NectoProxy "
            f"understands ({SCHEMA_VERSION}): upgrade NectoProxy or use another store file")
    return version


def open_store(path: str | Path, *, busy_timeout: float = 5.0,
               cache_kib: int = CACHE_KIB) -> sqlite3.Connection:
    """A write connection to the store at ``path``, created and migrated as needed."""
    conn = connect(path, busy_timeout=busy_timeout, cache_kib=cache_kib)
    try:
        if user_version(conn) != SCHEMA_VERSION or conn.execute(
                "PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn
