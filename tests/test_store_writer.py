"""The capture writer: batching, caps, bounded memory, failures that never reach the caller,
several processes on one file, and a kill -9 in the middle of capture."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from nectoproxy.store import CaptureWriter, FlowRecord, SQLiteStore
from nectoproxy.store import writer as writer_module


def record(flow_id: str, **fields: object) -> FlowRecord:
    defaults: dict[str, object] = {"method": "GET", "scheme": "http", "host": "w.test",
                                   "path": f"/{flow_id}", "url": f"http://w.test/{flow_id}",
                                   "started_at": 1_700_000_000.0}
    return FlowRecord(id=flow_id, **{**defaults, **fields})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    s.start_run()
    yield s
    s.close()


def store_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nectoproxy.store" and r.levelno >= logging.ERROR]


def test_a_flow_goes_in_as_started_chunks_finished(store):
    with CaptureWriter(store.path, start=False) as writer:
        writer.flow_started(record("a", request_headers=[("Host", "w.test")]))
        writer.body_chunk("a", "request", b"hello ")
        writer.body_chunk("a", "request", memoryview(b"world"))
        for part in (b"x" * 700_000, b"y" * 700_000, b"z"):
            writer.body_chunk("a", "response", part)
        writer.start()  # everything queued so far is one batch
        assert writer.flush()
        pending = store.get_flow("a")
        assert pending.status is None and pending.request_headers == [("Host", "w.test")]
        writer.flow_finished("a", {"status": 200, "reason": "OK", "response_size": 1_400_001,
                                   "response_headers": [("Content-Type", "text/plain")],
                                   "timings": {"first_byte": 3.0, "complete": 9.0}})
        writer.tunnel(record("t", kind="tunnel", host="pinned.test", port=443,
                             url="pinned.test:443", bytes_up=10, bytes_down=20, duration=5.0))
        assert writer.flush()
    flow = store.get_flow("a")
    assert flow.status == 200 and flow.timings == {"first_byte": 3.0, "complete": 9.0}
    assert flow.response_headers == [("Content-Type", "text/plain")]
    assert store.get_body("a", "request") == (b"hello world", False)
    body, truncated = store.get_body("a", "response")
    assert body == b"x" * 700_000 + b"y" * 700_000 + b"z" and not truncated
    assert flow.response_stored == len(body) and store.active_session().stored_bytes == 1_400_012
    rows = store._conn.execute("SELECT count(*), max(length(data)) FROM bodies "
                               "WHERE direction = 1").fetchone()
    assert rows == (2, 1024**2)  # chunks of one batch joined, rows of at most 1 MiB
    assert [f.id for f in store.list_flows(filter="is:tunnel")[0]] == ["t"]
    assert [f.id for f in store.list_flows(search="world")[0]] == ["a"]
    assert writer.stats.flows_written == 2


def test_started_and_finished_in_separate_batches(store):
    with CaptureWriter(store.path, batch_messages=1) as writer:
        writer.flow_started(record("b"))
        writer.body_chunk("b", "response", b"12345")
        writer.flow_finished("b", {"status": 204})
        assert writer.flush()
    assert store.get_flow("b").status == 204
    assert store.get_body("b", "response") == (b"12345", False)


def test_the_search_text_made_while_storing_is_the_one_read_back(store):
    """Flows stored complete in one batch are indexed from what the writer held; the text
    must be what the store reads back (gzip decoded, capped bodies, sent headers, notes)."""
    import gzip

    from nectoproxy.store import textindex

    page = b"<p>" + b"needle-in-gzip " * 200 + b"</p>"
    with CaptureWriter(store.path, start=False, max_body_size=1000) as writer:
        writer.flow_started(record("gz", request_headers=[("Host", "w.test")], tags=["t1"],
                                   comment="look here"))
        writer.body_chunk("gz", "request", b'{"q": "posted"}')
        packed = gzip.compress(page)
        writer.body_chunk("gz", "response", packed[:500])
        writer.body_chunk("gz", "response", packed[500:])
        writer.flow_finished("gz", {
            "status": 200, "response_body_encoding": "gzip",
            "request_headers_sent": [("Host", "w.test"), ("X-Added", "by-a-plugin")],
            "response_headers": [("Content-Encoding", "gzip")]})
        writer.flow_started(record("big"))
        writer.body_chunk("big", "response", b"A" * 900 + b"B" * 900)  # capped at 1000
        writer.flow_finished("big", {"status": 200})
        writer.tunnel(record("tun", kind="tunnel", url="pinned.test:443"))
        writer.flow_started(record("late"))  # finishes in a later batch: read back
        writer.start()
        assert writer.flush()
        writer.body_chunk("late", "response", b"late body")
        writer.flow_finished("late", {"status": 201})
        assert writer.flush()
    conn = store._conn
    rows = {seq: tuple(text) for seq, *text in conn.execute(
        "SELECT rowid, url, headers, request_body, response_body, notes FROM flow_text")}
    seqs = dict(conn.execute("SELECT id, seq FROM flows"))
    assert sorted(rows) == sorted(seqs.values())
    for flow_id, seq in seqs.items():
        assert rows[seq] == textindex._stored_text(conn, seq, textindex.INDEX_BODY_BYTES), flow_id
    assert "X-Added: by-a-plugin" in rows[seqs["gz"]][1]
    assert rows[seqs["big"]][3] == "A" * 900 + "B" * 100
    assert [f.id for f in store.list_flows(search="needle-in-gzip")[0]] == ["gz"]
    assert [f.id for f in store.list_flows(search="look here")[0]] == ["gz"]


def test_the_body_cap_truncates_as_chunks_arrive(store):
    with CaptureWriter(store.path, max_body_size=1000, batch_messages=2) as writer:
        writer.flow_started(record("c"))
        for _ in range(3):
            writer.body_chunk("c", "response", b"q" * 600)
        writer.flow_finished("c", {"status": 200, "response_size": 1800})
        assert writer.flush()
    assert store.get_body("c", "response") == (b"q" * 1000, True)
    flow = store.get_flow("c")
    assert flow.response_truncated and flow.response_stored == 1000 and flow.response_size == 1800
    assert [f.id for f in store.list_flows(filter="is:truncated")[0]] == ["c"]


def test_queued_bytes_past_the_cap_are_dropped_not_waited_for(store):
    writer = CaptureWriter(store.path, max_queued_bytes=1000, start=False)
    try:
        writer.flow_started(record("d"))
        writer.flow_started(record("e"))
        for _ in range(5):
            writer.body_chunk("d", "response", b"d" * 400)  # 2 fit, then the queue is "full"
        writer.body_chunk("e", "request", b"e" * 100)
        assert writer.queued_bytes == 900
        assert writer.stats.chunks_dropped == 3 and writer.stats.bytes_dropped == 1200
        writer.flow_finished("d", {"status": 200})
        writer.flow_finished("e", {"status": 200})
        writer.start()
        assert writer.flush()
        assert writer.queued_bytes == 0
    finally:
        writer.close()
    assert store.get_body("d", "response") == (b"d" * 800, True)  # what got in, then nothing
    assert store.get_body("e", "request") == (b"e" * 100, False)


def test_messages_past_the_cap_are_dropped(store):
    writer = CaptureWriter(store.path, max_queued_messages=3, start=False)
    try:
        for n in range(5):
            writer.tunnel(record(f"m{n}", kind="tunnel"))
        assert writer.stats.messages_dropped == 2
        writer.start()
        assert writer.flush()
    finally:
        writer.close()
    assert store.stats().total == 3


def test_a_locked_database_is_logged_once_and_capture_resumes(store, caplog):
    caplog.set_level(logging.INFO, logger="nectoproxy.store")
    blocker = sqlite3.connect(store.path, isolation_level=None)
    with CaptureWriter(store.path, busy_timeout=0.05) as writer:
        assert writer.flush()  # connected
        blocker.execute("BEGIN EXCLUSIVE")
        for n in range(4):
            writer.flow_started(record(f"l{n}"))
            writer.flow_finished(f"l{n}", {"status": 200})
            assert writer.flush()  # returns: the failure is not the caller's business
        assert writer.stats.batches_failed >= 4
        assert len(store_errors(caplog)) == 1
        assert "cannot write" in store_errors(caplog)[0].getMessage()
        blocker.execute("ROLLBACK")
        writer.flow_started(record("after"))
        writer.flow_finished("after", {"status": 200})
        assert writer.flush()
    blocker.close()
    assert [f.id for f in store.list_flows()[0]] == ["after"]
    assert any("writes work again (" in r.getMessage() for r in caplog.records)
    assert len(store_errors(caplog)) == 1


def test_a_full_disk_is_logged_once_and_capture_resumes(store, caplog, monkeypatch):
    """SQLITE_FULL, as a full disk gives it, from a page limit on the writer's connection."""
    monkeypatch.setattr(writer_module, "REOPEN_SECONDS", 0.0)  # the next batch reconnects
    with CaptureWriter(store.path) as writer:
        assert writer.flush()
        pages = writer._conn.execute("PRAGMA page_count").fetchone()[0]  # the thread is idle
        writer._conn.execute(f"PRAGMA max_page_count = {pages}")
        writer.flow_started(record("big"))
        writer.body_chunk("big", "response", bytes(1024**2))
        writer.flow_finished("big", {"status": 200})
        assert writer.flush()
        assert writer.stats.batches_failed == 1
        writer.tunnel(record("small", kind="tunnel"))  # a new connection, no limit
        assert writer.flush()
    errors = store_errors(caplog)
    assert len(errors) == 1 and "full" in errors[0].getMessage()
    assert [f.id for f in store.list_flows()[0]] == ["small"]
    assert any("writes work again (" in r.getMessage() for r in caplog.records)


def test_a_store_that_cannot_be_created_is_logged_once(tmp_path, caplog):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with CaptureWriter(not_a_directory / "store.db") as writer:
        for n in range(3):
            writer.flow_started(record(f"x{n}"))
            writer.body_chunk(f"x{n}", "response", b"body")
            writer.flow_finished(f"x{n}", {"status": 200})
            assert writer.flush()
    assert len(store_errors(caplog)) == 1
    assert writer.stats.flows_written == 0


def test_a_read_only_store_is_logged_once(store, caplog):
    """chmod for other users; root writes through modes, so it gets an immutable file."""
    store.close()
    as_root = os.geteuid() == 0
    if as_root:  # (a requirement of the suite as root, like curl and certutil: no skip)
        assert shutil.which("chattr"), "chattr (e2fsprogs) is needed to test a read-only store"
        subprocess.run(["chattr", "+i", str(store.path)], check=True, capture_output=True)
    try:
        if not as_root:
            store.path.chmod(0o400)
        with CaptureWriter(store.path) as writer:
            for n in range(3):
                writer.tunnel(record(f"r{n}", kind="tunnel"))
                assert writer.flush()
        assert writer.stats.flows_written == 0 and writer.stats.messages_lost == 3
        assert len(store_errors(caplog)) == 1
        assert "readonly" in store_errors(caplog)[0].getMessage()
        assert not any("writes work again (" in r.getMessage() for r in caplog.records)
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(store.path)], check=True)
        else:
            store.path.chmod(0o600)


def test_calls_that_can_never_work_raise_at_once(store):
    with CaptureWriter(store.path) as writer:
        with pytest.raises(ValueError, match="sideways"):
            writer.body_chunk("a", "sideways", b"x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not updatable flow fields: seq"):
            writer.flow_finished("a", {"status": 200, "seq": 5})


def test_a_bad_flow_fails_alone(store, caplog):
    with CaptureWriter(store.path) as writer:
        writer.flow_started(record("dup"))
        writer.flow_started(record("dup"))  # the same id twice: the second is refused
        writer.flow_started(record("bad", port=object()))  # SQLite cannot store this
        writer.flow_started(record("good"))
        writer.flow_finished("good", {"status": 200})
        assert writer.flush()
    assert writer.stats.messages_rejected == 2 and len(store_errors(caplog)) == 1
    assert {f.id for f in store.list_flows()[0]} == {"dup", "good"}


def test_capture_follows_a_session_switch_made_elsewhere(store):
    with CaptureWriter(store.path) as writer:
        writer.tunnel(record("before", kind="tunnel"))
        assert writer.flush()
        other = store.create_session("elsewhere")
        store.activate_session(other.id)
        writer.tunnel(record("after", kind="tunnel"))
        assert writer.flush()
    assert store.get_flow("after").session_id == other.id
    assert store.get_flow("before").session_id != other.id


CHILD = textwrap.dedent("""
    import hashlib, sys, time
    from nectoproxy.store import CaptureWriter, FlowRecord
    path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    writer = CaptureWriter(path, batch_seconds=0.005)
    for i in range(count):
        flow_id = f"{prefix}{i:08d}"
        writer.flow_started(FlowRecord(id=flow_id, method="GET", host="k.test",
                                       url=f"http://k.test/{i}", path=f"/{i}", started_at=i))
        body = hashlib.sha256(flow_id.encode()).digest() * (50 + i % 50)
        for k in range(0, len(body), 1000):
            writer.body_chunk(flow_id, "response", body[k:k + 1000])
        writer.flow_finished(flow_id, {"status": 200, "response_size": len(body)})
        for _ in range(1000):  # stay within the queue's bounds: nothing dropped
            if writer.queued_messages < 200:
                break
            time.sleep(0.002)
    writer.close(timeout=60)
""")


def _expected_body(flow_id: str) -> bytes:
    i = int(flow_id[-8:])
    return hashlib.sha256(flow_id.encode()).digest() * (50 + i % 50)


def _check_bodies(store: SQLiteStore) -> int:
    rows = store._conn.execute("SELECT id, response_stored, response_truncated FROM flows "
                               "WHERE status IS NOT NULL").fetchall()
    for flow_id, stored, truncated in rows:
        body, body_truncated = store.get_body(flow_id, "response")
        expected = _expected_body(flow_id)
        assert not truncated and not body_truncated
        assert stored == len(expected)
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest(), flow_id
    return len(rows)


def test_kill_9_mid_capture_loses_nothing_committed(store):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.path), "k", "100000"])
    try:
        reader = sqlite3.connect(store.path)
        for _ in range(6000):  # until 300 flows are committed (bounded)
            done = reader.execute("SELECT count(*) FROM flows WHERE status IS NOT NULL")
            if done.fetchone()[0] >= 300 or child.poll() is not None:
                break
            time.sleep(0.01)
        reader.close()
        assert child.poll() is None, "the writer finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    store.close()
    with SQLiteStore(store.path) as reopened:
        assert reopened._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert _check_bodies(reopened) >= 300
        assert reopened.active_session().flow_count >= 300


def test_several_processes_write_one_file(store):
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(store.path), p, "150"])
                for p in ("p", "q")]
    try:
        for child in children:
            assert child.wait(90) == 0
    finally:
        for child in children:
            child.kill()
            child.wait(30)
    assert _check_bodies(store) == 300
    flows, _ = store.list_flows(limit=1000, order="oldest")
    seqs = [f.seq for f in flows]
    assert len(flows) == 300 and seqs == sorted(set(seqs))
    assert len(store.changes_since(0, limit=1000).flows) == 300
