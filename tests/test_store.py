"""The flow store: schema and migrations, sessions, pages, search, annotations, the changes
feed, retention. Real SQLite files in tmp_path; the writer thread is in test_store_writer.py."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
import threading
import time

import pytest

from nectoproxy.store import (
    SCHEMA_VERSION,
    CaptureWriter,
    FlowRecord,
    SchemaVersionError,
    SessionNotFound,
    SQLiteStore,
    StoreError,
    maintenance,
    schema,
)


def record(n: int, **fields: object) -> FlowRecord:
    host = str(fields.pop("host", f"h{n % 3}.test"))
    defaults: dict[str, object] = {
        "method": "GET", "scheme": "https", "host": host, "port": 443, "path": f"/item/{n}",
        "url": f"https://{host}/item/{n}", "status": 200, "started_at": 1_700_000_000.0 + n,
        "request_headers": [("Host", host), ("X-Seq", str(n))],
        "response_headers": [("Content-Type", "application/json")],
        "content_type": "application/json",
    }
    return FlowRecord(id=f"flow{n:04d}", **{**defaults, **fields})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    s.start_run()
    yield s
    s.close()


def fill(store: SQLiteStore, count: int, body: bytes = b"", start: int = 0,
         **fields: object) -> list[str]:
    return [store.save_flow(record(n, **fields), response_body=body).id
            for n in range(start, start + count)]


def test_files_are_owner_only_from_the_start(tmp_path):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.start_run()
        with CaptureWriter(path) as writer:
            writer.tunnel(record(1, kind="tunnel"))
            assert writer.flush()
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["store.db", "store.db-shm", "store.db-wal"]
        for p in tmp_path.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_settings_wal_foreign_keys_busy_timeout(store):
    conn = schema.connect(store.path, busy_timeout=2.5)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_store_of_schema_1_migrates_on_open(tmp_path):
    """A file as the first release wrote it: no tombstones, no search index."""
    path = tmp_path / "old.db"
    conn = schema.connect(path)
    schema.migrate(conn, target=1)
    conn.execute("INSERT INTO sessions (id, name, created_at, active) VALUES (7, 'old', 1, 1)")
    conn.execute("INSERT INTO flows (id, session_id, version, method, url, host, path, status, "
                 "started_at) VALUES ('old1', 7, 1, 'GET', 'https://legacy.test/a', "
                 "'legacy.test', '/a', 200, 1)")
    conn.execute("INSERT INTO flow_details (seq, request_headers) VALUES (1, '[[\"X-Old\",\"1\"]]')")
    conn.execute("INSERT INTO bodies (flow_seq, direction, seq, data) VALUES (1, 1, 0, ?)",
                 (b"ancient needle",))
    conn.execute("UPDATE flows SET response_stored = 14")
    conn.close()

    with SQLiteStore(path) as store:
        assert schema.user_version(store._conn) == SCHEMA_VERSION
        assert store.get_flow("old1").request_headers == [("X-Old", "1")]
        assert store.get_body("old1", "response") == (b"ancient needle", False)
        assert store.list_sessions()[0].flow_count == 1
        assert store.index_pending() == 1  # the migration queued it for the search index
        assert [f.id for f in store.list_flows(search="ancient need")[0]] == ["old1"]
        assert [f.id for f in store.list_flows(filter="body:needle")[0]] == ["old1"]
        marker = store.current_marker()
        assert store.delete_flow("old1")
        assert store.changes_since(marker).deleted == ["old1"]  # tombstones work too
    with SQLiteStore(path) as store:  # and opening again migrates nothing
        assert schema.migrate(store._conn) == SCHEMA_VERSION


def test_a_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        SQLiteStore(path)


def test_another_sqlite_file_is_not_taken_over(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.close()
    with pytest.raises(SchemaVersionError, match="not a NectoProxy flow store"):
        SQLiteStore(path)


def test_each_run_is_a_new_active_session_unless_continued(tmp_path):
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        first = store.start_run()
        assert first.name.startswith("Run ") and first.active
        second = store.start_run()
        assert second.id != first.id and second.name != first.name  # same minute: "(2)"
        assert [s.id for s in store.list_sessions() if s.active] == [second.id]
        store.rename_session(first.id, "login bug")
    with SQLiteStore(path) as store:
        assert store.start_run(continue_session="login bug").id == first.id
        assert store.active_session().id == first.id
        assert store.start_run(continue_session=second.id).id == second.id
        assert store.start_run(continue_session=str(first.id)).id == first.id
        with pytest.raises(SessionNotFound):
            store.start_run(continue_session="no such session")


def test_sessions_count_their_flows_and_bytes(store):
    other = store.create_session("other")
    assert not other.active and other.flow_count == 0
    fill(store, 3, body=b"x" * 100)
    store.save_flow(record(9, session_id=other.id), response_body=b"y" * 7)
    counts = {s.name: (s.flow_count, s.stored_bytes) for s in store.list_sessions()}
    assert counts == {store.active_session().name: (3, 300), "other": (1, 7)}
    assert store.get_session(other.id).to_json() == {
        "id": other.id, "name": "other", "createdAt": other.created_at, "active": False,
        "flowCount": 1, "storedBytes": 7}
    assert store.list_flows(session_id=other.id)[0][0].id == "flow0009"
    with pytest.raises(StoreError):
        store.rename_session(other.id, "  ")
    with pytest.raises(SessionNotFound):
        store.activate_session(12345)


def test_deleting_a_session_takes_its_flows_and_bodies(store):
    doomed = store.active_session()
    fill(store, 5, body=b"z" * 10)
    keeper = store.create_session("keeper")
    store.save_flow(record(50, session_id=keeper.id), response_body=b"k")
    assert store.delete_session(doomed.id)
    assert store.active_session().id == keeper.id  # capture moved on first
    assert store.get_flow("flow0000") is None and store.get_flow("flow0050") is not None
    rows = store._conn.execute("SELECT count(*) FROM bodies").fetchone()[0]
    assert rows == 1
    assert not store.delete_session(doomed.id)
    assert store.delete_session(keeper.id)
    fresh = store.active_session()  # the last one gone: a new one, so there is always one
    assert fresh.active and fresh.flow_count == 0


def test_pages_newest_and_oldest_first_with_cursors(store):
    ids = fill(store, 25)
    for order, expected in (("newest", ids[::-1]), ("oldest", ids)):
        seen, cursor = [], None
        for _ in range(10):
            page, cursor = store.list_flows(limit=10, cursor=cursor, order=order)
            seen += [f.id for f in page]
            if cursor is None:
                break
        assert seen == expected
    page, cursor = store.list_flows(limit=10)
    store.save_flow(record(100))  # arrives while someone pages: no duplicate, no gap
    rest, _ = store.list_flows(limit=100, cursor=cursor)
    assert [f.id for f in page + rest] == ids[::-1]
    assert store.list_flows(limit=26)[1] is None  # exactly the last page: no cursor
    with pytest.raises(ValueError):
        store.list_flows(order="random")


def test_a_record_round_trips_and_speaks_camel_case(store):
    original = record(
        1, mode="regular", client_addr="127.0.0.1:5000", server_addr="93.184.216.34:443",
        http_version="HTTP/1.1", reason="OK", request_headers=[("host", "a"), ("X-A", "1")],
        request_headers_sent=[("host", "a")], response_headers_sent=[("Server", "x")],
        request_size=3, request_size_decoded=3, response_size=10, response_size_decoded=20,
        response_body_encoding="gzip", duration=12.5,
        timings={"connect": 1.0, "tls_handshake": 3.5, "request_sent": 4.0,
                 "first_byte": 10.0, "complete": 12.5},
        tls_client={"sni": "h1.test", "version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256",
                    "alpn": "http/1.1"},
        tls_server={"version": "TLSv1.3", "subject": "CN=h1.test", "issuer": "CN=CA",
                    "not_after": "2027-01-01T00:00:00Z"},
        modified_by=["rules", "throttle"], replay_of="flow0000", mark="green",
        tags=["a", "b"], comment="note", websocket=True)
    saved = store.save_flow(original, request_body=b"abc")
    assert saved.seq and saved.version and saved.session_id == store.active_session().id
    assert saved == dataclasses.replace(original, seq=saved.seq, version=saved.version,
                                        session_id=saved.session_id, request_stored=3)
    data = saved.to_json()
    assert data["tlsServer"]["notAfter"] == "2027-01-01T00:00:00Z"
    assert data["timings"]["tlsHandshake"] == 3.5
    assert data["requestHeaders"] == [["host", "a"], ["X-A", "1"]]
    summary = store.list_flows()[0][0].to_json()
    assert {"id", "sessionId", "seq", "method", "url", "host", "path", "status", "contentType",
            "requestSize", "responseSize", "startedAt", "duration", "error", "httpVersion",
            "scheme", "mark", "tags"} <= set(summary)
    assert summary["tags"] == ["a", "b"] and summary["sessionId"] == saved.session_id


def test_bodies_come_back_whole_or_in_chunks_and_are_capped(tmp_path):
    with SQLiteStore(tmp_path / "s.db", max_body_size=3 * 1024**2) as store:
        big = bytes(range(256)) * (12 * 1024)  # 3 MiB: stored as three rows
        store.save_flow(record(1), request_body=b"q", response_body=big)
        assert store.get_body("flow0001", "response") == (big, False)
        assert b"".join(store.iter_body("flow0001", "response")) == big
        assert len(list(store.iter_body("flow0001", "response"))) == 3
        store.save_flow(record(2), response_body=big + b"more")
        assert store.get_body("flow0002", "response") == (big, True)
        assert store.get_flow("flow0002").response_truncated
        assert store.get_body("flow0001", "request") == (b"q", False)
        assert store.get_body("nope", "request") is None
        with pytest.raises(ValueError):
            store.get_body("flow0001", "sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("fts", [True, False], ids=["fts", "like"])
def test_search_covers_url_headers_bodies_and_notes(tmp_path, monkeypatch, fts):
    if not fts:
        monkeypatch.setattr(schema, "fts5_available", lambda conn: False)
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.fts is fts
        store.save_flow(record(1, url="https://h.test/needle-in-url"))
        store.save_flow(record(2, request_headers=[("X-Token", "Needle-In-Header")]))
        store.save_flow(record(3), request_body=b"a needle in the request")
        store.save_flow(record(4), response_body=b"the response holds a NEEDLE")
        store.save_flow(record(5, comment="needle noted"))
        store.save_flow(record(6), response_body=b"\x00binary needle")  # not indexed
        store.save_flow(record(7), response_body=b"haystack only")
        found = [f.id for f in store.list_flows(search="needle")[0]]
        assert found == ["flow0005", "flow0004", "flow0003", "flow0002", "flow0001"]
        assert [f.id for f in store.list_flows(search="ee", limit=2)[0]] == [
            "flow0005", "flow0004"]  # shorter than a trigram: a scan, same answers
        page, cursor = store.list_flows(search="needle", limit=2)
        more, _ = store.list_flows(search="needle", limit=10, cursor=cursor)
        assert [f.id for f in page + more] == found
        assert store.list_flows(search="needle", filter="status:404")[0] == []
        assert store.list_flows(search='"; DROP TABLE flows; --')[0] == []


def test_annotations_are_stored_filterable_and_searchable(store):
    fill(store, 3)
    summary = store.annotate("flow0001", mark="purple", tags=["login", " x ", "login"],
                             comment="Suspicious redirect")
    assert summary.mark == "purple" and summary.tags == ["login", "x"]
    assert store.annotate("flow0001", comment="Suspicious redirect!").mark == "purple"
    assert [f.id for f in store.list_flows(filter="mark:purple tag:login")[0]] == ["flow0001"]
    assert [f.id for f in store.list_flows(search="suspicious")[0]] == ["flow0001"]
    assert store.get_flow("flow0001").comment == "Suspicious redirect!"
    store.annotate("flow0001", mark=None, tags=[])
    assert store.list_flows(filter="is:marked")[0] == []
    assert store.list_flows(search="login")[0] == []
    assert store.annotate("missing", mark="red") is None
    with pytest.raises(ValueError):
        store.annotate("flow0001", mark="pink")
    with pytest.raises(ValueError):
        store.annotate("flow0001", tags="notalist")


def test_stats_count_methods_statuses_hosts_types(store):
    fill(store, 6, body=b"12345")
    store.save_flow(record(10, method="POST", status=500, content_type="text/html; charset=x"))
    store.save_flow(record(11, status=None, error="timeout", content_type=None))
    stats = store.stats()
    assert stats.total == 8 and stats.errors == 1 and stats.stored_bytes == 30
    assert stats.methods == {"GET": 7, "POST": 1}
    assert stats.status_classes == {"2xx": 6, "5xx": 1, "none": 1}
    assert stats.hosts[0] == ("h1.test", 3)
    assert stats.content_types == [("application/json", 6), ("text/html", 1)]
    assert stats.to_json()["contentTypes"][0] == {"contentType": "application/json", "count": 6}


def test_stats_counters_kept_by_triggers_agree_with_counting(store):
    """Unfiltered stats come from the kept counters; "is:all" counts rows."""
    fill(store, 6, body=b"abc")
    with CaptureWriter(store.path, batch_messages=1) as writer:  # start and finish apart
        for n in range(20, 24):
            writer.flow_started(record(n, status=None, content_type=None, host="late.test"))
            writer.body_chunk(f"flow{n:04d}", "response", b"12345")
        writer.flow_finished("flow0020", {"status": 404, "content_type": "text/plain",
                                          "response_size": 5})
        writer.flow_finished("flow0021", {"error": "reset", "request_size": 7})
        writer.flow_finished("flow0022", {"method": "PUT", "status": 201})
        assert writer.flush()
    store.delete_flow("flow0001")
    store.enforce_retention(max_age_days=None, max_flows=8, max_bytes=None)
    counted, scanned = store.stats(top=3), store.stats(filter="is:all", top=3)
    assert counted == scanned
    assert counted.total == 8 and counted.errors == 1 and counted.request_bytes == 7
    assert counted.status_classes == {"2xx": 5, "4xx": 1, "none": 2}


def test_a_writer_batch_counts_its_flows_at_once(store):
    """The capture writer counts the rows a batch inserted in one pass at its end, other
    inserts count their row: the counters agree with counting rows, in each session, with
    flows that start and end in one batch, over two, tunnels, and a flow saved alone."""
    other = store.create_session("Other")
    with CaptureWriter(store.path) as writer:  # (one batch: everything within 0.1 s)
        for n in range(40):
            writer.flow_started(record(
                n, host=f"h{n % 4}.test", method="POST" if n % 5 == 0 else "GET",
                status=None, content_type=None,
                session_id=other.id if n % 3 == 0 else None))
            writer.body_chunk(f"flow{n:04d}", "response", b"x" * n)
            writer.flow_finished(f"flow{n:04d}", {
                "status": (200, 404, 503, 301)[n % 4], "response_size": n,
                "content_type": ("text/html; charset=utf-8", "application/json", None)[n % 3],
                **({"error": "reset"} if n == 7 else {})})
        writer.flow_started(record(40, status=None, content_type=None))  # ends a batch later
        writer.tunnel(record(41, kind="tunnel", method="CONNECT", status=None,
                             content_type=None))
        assert writer.flush()
        writer.flow_finished("flow0040", {"status": 204, "request_size": 9})
        assert writer.flush()
    store.save_flow(record(50, status=500, content_type="text/plain"), response_body=b"abc")
    conn = store._read()
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
                        "name = 'flows_counted'").fetchone() == (0,)
    for session in (store.active_session(), other):
        assert session is not None
        counted = store.stats(session_id=session.id, top=10)
        scanned = store.stats(session_id=session.id, filter="is:all", top=10)
        assert counted == scanned and counted.total > 10
        row = conn.execute("SELECT flow_count, stored_bytes FROM sessions WHERE id = ?",
                           (session.id,)).fetchone()
        assert row == conn.execute(
            "SELECT count(*), sum(request_stored + response_stored) FROM flows "
            "WHERE session_id = ?", (session.id,)).fetchone()
    assert store.stats(session_id=other.id).errors == 0
    assert store.stats().errors == 1 and store.stats().request_bytes == 9


def test_changes_feed_sees_every_writer_of_the_file(store):
    start = store.current_marker()
    assert store.changes_since(start).flows == []
    fill(store, 2)
    with SQLiteStore(store.path) as other_process:  # another connection, another "process"
        other_process.annotate("flow0000", tags=["seen"])
        other_process.delete_flow("flow0001")
    changes = store.changes_since(start)
    assert [(f.id, f.tags) for f in changes.flows] == [("flow0000", ["seen"])]
    assert changes.deleted == ["flow0001"] and not changes.reset and not changes.more
    assert store.changes_since(changes.marker).flows == []
    fill(store, 5, start=10)
    first = store.changes_since(changes.marker, limit=2)
    assert first.more and len(first.flows) == 2
    rest = store.changes_since(first.marker, limit=100)
    assert len(first.flows) + len(rest.flows) == 5 and not rest.more


def test_changes_feed_says_reset_when_deletions_were_forgotten(store, monkeypatch):
    monkeypatch.setattr(maintenance, "TOMBSTONES_KEPT", 3)
    fill(store, 10)
    marker = store.current_marker()
    assert store.delete_session_flows(store.active_session().id) == 10
    assert store.changes_since(marker).reset
    assert not store.changes_since(store.current_marker()).reset


def test_retention_by_age_deletes_the_oldest_with_bodies(store):
    fill(store, 10, body=b"b" * 50)
    store._conn.execute("UPDATE sessions SET created_at = 0")  # captured then, not imported
    now = 1_700_000_000.0 + 5 + 86400
    pruned = store.enforce_retention(max_age_days=1, max_flows=None, max_bytes=None, now=now)
    assert pruned.flows == 5 and pruned.bytes == 250  # started at +0 .. +4
    remaining = [f.id for f in store.list_flows(order="oldest")[0]]
    assert remaining == [f"flow{n:04d}" for n in range(5, 10)]
    assert store._conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 5
    assert store.active_session().flow_count == 5 and store.active_session().stored_bytes == 250


def test_retention_by_age_counts_an_imported_flow_from_its_import(store):
    fill(store, 4)  # started in 2023, in a session made now (as a HAR import does)
    assert store.enforce_retention(max_age_days=30, max_flows=None, max_bytes=None).flows == 0
    later = time.time() + 31 * 86400
    assert store.enforce_retention(max_age_days=30, max_flows=None, max_bytes=None,
                                   now=later).flows == 4


def test_retention_by_count_in_small_batches(store):
    fill(store, 23)
    pruned = store.enforce_retention(max_age_days=None, max_flows=5, max_bytes=None, batch=4)
    assert pruned.flows == 18
    assert [f.id for f in store.list_flows(order="oldest")[0]] == [
        f"flow{n:04d}" for n in range(18, 23)]
    assert store.enforce_retention(max_age_days=None, max_flows=5).flows == 0


def test_retention_by_size_keeps_the_newest(store):
    fill(store, 40, body=bytes(8192))
    used = maintenance.used_bytes(store._conn)
    pruned = store.enforce_retention(max_age_days=None, max_flows=None, max_bytes=used // 2)
    assert 10 <= pruned.flows <= 30
    remaining = [f.id for f in store.list_flows(order="oldest", limit=100)[0]]
    assert remaining == [f"flow{n:04d}" for n in range(pruned.flows, 40)]
    assert store.enforce_retention(max_age_days=None, max_bytes=10 * used).flows == 0


def test_reads_run_on_many_threads_while_a_writer_writes(store):
    fill(store, 20)
    errors: list[Exception] = []

    def reader() -> None:
        try:
            for _ in range(30):
                flows, _ = store.list_flows(filter="status:2xx", limit=5)
                assert len(flows) == 5
                store.get_flow(flows[0].id)
        except (AssertionError, sqlite3.Error, StoreError) as exc:  # pragma: no cover
            errors.append(exc)

    with CaptureWriter(store.path) as writer:
        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for n in range(100, 150):
            writer.flow_started(record(n))
            writer.flow_finished(f"flow{n:04d}", {"status": 201})
        for t in threads:
            t.join(60)
        assert writer.flush()
    assert errors == []
    assert store.stats().total == 70
