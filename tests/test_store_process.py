"""ProcessWriter: capture's calls written by a child process, with CaptureWriter's contract."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import time
from http import HTTPStatus
from pathlib import Path

import pytest

from nectoproxy.store import (
    CaptureWriter,
    FlowRecord,
    ProcessWriter,
    SQLiteStore,
    capturewire,
    new_flow_id,
    process,
)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "flows.db")
    store.start_run()
    return store


def started(flow_id: str, n: int = 0) -> FlowRecord:
    return FlowRecord(id=flow_id, method="GET", url=f"http://x.test/{n}", host="x.test",
                      path=f"/{n}", started_at=time.time())


def test_flows_bodies_and_finish_reach_the_store(store: SQLiteStore) -> None:
    body = os.urandom(3 * 1024**2 + 17)
    with ProcessWriter(store.path) as writer:
        ids = [new_flow_id() for _ in range(500)]
        for n, flow_id in enumerate(ids):
            writer.flow_started(started(flow_id, n))
            writer.body_chunk(flow_id, "response", f"body {n}".encode())
            writer.flow_finished(flow_id, {"status": 200, "response_size": len(f"body {n}")})
        big = new_flow_id()
        writer.flow_started(started(big))
        for start in range(0, len(body), 65536):
            writer.body_chunk(big, "response", body[start:start + 65536])
        writer.flow_finished(big, {"status": 201})
        assert writer.flush(30)
        assert writer.stats.flows_written == 501
        assert writer.pid is not None
    flows, _ = store.list_flows(limit=1000, order="oldest")
    assert [f.id for f in flows] == [*ids, big]
    assert store.get_body(ids[7], "response") == (b"body 7", False)
    got = store.get_body(big, "response")
    assert got is not None and hashlib.sha256(got[0]).digest() == hashlib.sha256(body).digest()
    assert writer._process.returncode == 0  # closed: the child wrote everything and ended


def test_a_body_beyond_the_queue_is_truncated_never_holed(store: SQLiteStore) -> None:
    with ProcessWriter(store.path, max_queued_bytes=100_000, batch_seconds=0.2) as writer:
        flow_id = new_flow_id()
        writer.flow_started(started(flow_id))
        for _ in range(50):  # 500 kB within one batch window: 9 chunks fit beside the record
            writer.body_chunk(flow_id, "response", b"x" * 10_000)
        writer.flow_finished(flow_id, {"status": 200})
        assert writer.flush(30)
        assert writer.stats.chunks_dropped == 41
    body = store.get_body(flow_id, "response")
    assert body == (b"x" * 90_000, True)
    record = store.get_flow(flow_id)
    assert record is not None and record.response_truncated


def test_flows_beyond_the_queue_are_dropped_and_counted(store: SQLiteStore) -> None:
    """A child that falls behind costs stored flows, never the proxy's memory."""
    with ProcessWriter(store.path, max_queued_bytes=50 * 1024, batch_seconds=0.3) as writer:
        for n in range(200):  # within one batch window: 50 records fit in the budget
            writer.flow_started(started(new_flow_id(), n))
        assert writer.flush(30)
        assert writer.stats.messages_dropped == 150
    assert len(store.list_flows(limit=500)[0]) == 50


def test_a_writer_process_that_dies_is_reported_once_and_capture_goes_on(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    writer = ProcessWriter(store.path)
    try:
        writer.flow_started(started(new_flow_id()))
        assert writer.flush(30)
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer._process.wait(10)
        with caplog.at_level(logging.ERROR, "nectoproxy.store"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not writer._dead:
                flow_id = new_flow_id()
                writer.flow_started(started(flow_id))  # never raises, never blocks
                writer.body_chunk(flow_id, "request", b"data")
                writer.flow_finished(flow_id, {"status": 200})
                time.sleep(0.02)
            for _ in range(100):
                writer.flow_started(started(new_flow_id()))
        assert writer._dead
        assert not writer.flush(1)
        errors = [r for r in caplog.records if "writer process ended" in r.getMessage()]
        assert len(errors) == 1
    finally:
        writer.close(5)
    assert len(store.list_flows()[0]) == 1


def test_the_child_writes_what_it_has_when_the_proxy_is_killed(tmp_path: Path) -> None:
    """The proxy's process dies (kill -9): what reached the child is still written."""
    import subprocess
    import sys

    path = tmp_path / "flows.db"
    SQLiteStore(path).start_run()
    script = f"""
import sys, time
from nectoproxy.store import ProcessWriter, FlowRecord, new_flow_id
writer = ProcessWriter({str(path)!r})
for n in range(200):
    flow_id = new_flow_id()
    writer.flow_started(FlowRecord(id=flow_id, method="GET", url="http://x.test/", host="x.test",
                                   path=f"/{{n}}", started_at=time.time()))
    writer.flow_finished(flow_id, {{"status": 200}})
writer.flush(30)
print(writer.pid, flush=True)
time.sleep(60)
"""
    proxy = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proxy.stdout is not None
    child = int(proxy.stdout.readline())
    proxy.kill()
    proxy.wait(10)
    proxy.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the writer process outlived the proxy")
    with SQLiteStore(path) as store:
        assert len(store.list_flows(limit=500)[0]) == 200


def test_the_writer_enforces_retention_between_its_batches(store: SQLiteStore) -> None:
    limits = {"max_age_days": None, "max_flows": 10, "max_bytes": None}
    with ProcessWriter(store.path, retention=limits, retention_seconds=0.2) as writer:
        for n in range(50):
            flow_id = new_flow_id()
            writer.flow_started(started(flow_id, n))
            writer.body_chunk(flow_id, "response", b"b" * 1000)
            writer.flow_finished(flow_id, {"status": 200})
        assert writer.flush(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(store.list_flows(limit=100)[0]) > 10:
            time.sleep(0.1)
    flows, _ = store.list_flows(limit=100, order="oldest")
    assert [f.path for f in flows] == [f"/{n}" for n in range(40, 50)]  # the newest kept


def _head(flow_id: str, n: int, headers: list[tuple[str, str]]) -> capturewire.Head:
    return (flow_id, "regular", "127.0.0.1:5000", "https", "POST", f"https://x.test/{n}",
            "x.test", 443, f"/{n}", "HTTP/1.1", headers, 1_700_000_000.0,
            ("x.test", "TLSv1.3", "TLS_AES_128_GCM_SHA256", None), None)


def _end(status: int, sent: list[tuple[str, str]] | None) -> capturewire.End:
    start = 1_700_000_000.0
    return (start, (None, None, start + 0.001, start + 0.0025, start + 0.004), "127.0.0.1:443",
            None, None, ["rules"], False, None, sent, "", 3,
            (status, "OK", [("Content-Type", "text/plain")], [("Content-Type", "text/plain")],
             5), (False, False, -1, -1), (None, [("grpc-status", "0")]))


def test_heads_and_ends_are_mapped_in_the_child_as_in_a_thread_writer(
        store: SQLiteStore, tmp_path: Path) -> None:
    """Capture's plain tuples (marshalled to the child) give the rows CaptureWriter gives;
    a value marshal cannot carry (an IntEnum status) sends its batch pickled instead."""
    received = [("Host", "x.test"), ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("Connection", "keep-alive")]
    sent = [("Host", "x.test")]
    plain, enum = new_flow_id(), new_flow_id()
    with ProcessWriter(store.path) as writer:
        writer.flow_head(_head(plain, 1, received))
        writer.body_chunk(plain, "request", b"abc")
        writer.body_chunk(plain, "response", b"hello")
        writer.flow_end(plain, _end(200, sent))
        assert writer.flush(30)
        writer.flow_head(_head(enum, 2, received))
        writer.flow_end(enum, _end(HTTPStatus.CREATED, None))
        assert writer.flush(30)
    other = SQLiteStore(tmp_path / "thread.db")
    other.start_run()
    with CaptureWriter(other.path) as thread_writer:
        thread_writer.flow_head(_head(plain, 1, received))
        thread_writer.body_chunk(plain, "request", b"abc")
        thread_writer.body_chunk(plain, "response", b"hello")
        thread_writer.flow_end(plain, _end(200, sent))
        assert thread_writer.flush(30)
    record, expected = store.get_flow(plain), other.get_flow(plain)
    assert record is not None and expected is not None
    assert dataclasses.replace(record, session_id=None, seq=None, version=None) == \
        dataclasses.replace(expected, session_id=None, seq=None, version=None)
    assert record.request_headers[1] == ("Proxy-Authorization", "[redacted]")
    assert record.request_headers_sent == sent
    assert record.timings == {"request_sent": 1.0, "first_byte": 2.5, "complete": 4.0}
    assert record.tls_client == {"sni": "x.test", "version": "TLSv1.3",
                                 "cipher": "TLS_AES_128_GCM_SHA256"}
    assert (record.status, record.duration, record.modified_by) == (200, 4.0, ["rules"])
    assert (record.request_stored, record.response_stored) == (3, 5)
    assert (record.request_trailers, record.response_trailers) == (None, [("grpc-status", "0")])
    assert store.get_body(plain, "response") == (b"hello", False)
    # The search text the writer made while storing has the trailers' lines, as one made
    # from the stored flow does.
    for searched, expected_ids in ((store, {plain, enum}), (other, {plain})):
        found, _ = searched.list_flows(search="grpc-status: 0")
        assert {f.id for f in found} == expected_ids
    created = store.get_flow(enum)
    assert created is not None and created.status == 201
    # (Which format each batch went in.)
    plain_batch = [("h", _head(plain, 1, received)), ("e", plain, _end(200, sent), (0, 0))]
    assert process._dumps(plain_batch)[:1] != b"\x80"  # marshal
    assert process._loads(process._dumps(plain_batch)) == plain_batch
    enum_batch = [("e", enum, _end(HTTPStatus.CREATED, None), (0, 0))]
    assert process._dumps(enum_batch)[:1] == b"\x80"  # pickle
    assert process._loads(process._dumps(enum_batch)) == enum_batch


def test_an_end_marks_the_bodies_whose_chunks_this_side_dropped(store: SQLiteStore) -> None:
    with ProcessWriter(store.path, max_queued_bytes=100_000, batch_seconds=0.2) as writer:
        flow_id = new_flow_id()
        writer.flow_head(_head(flow_id, 1, [("Host", "x.test")]))
        for _ in range(50):
            writer.body_chunk(flow_id, "response", b"x" * 10_000)
        writer.flow_end(flow_id, _end(200, None))
        assert writer.flush(30)
    record = store.get_flow(flow_id)
    assert record is not None
    assert record.response_truncated and not record.request_truncated
    assert 0 < record.response_stored < 500_000
