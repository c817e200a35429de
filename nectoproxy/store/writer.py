"""``CaptureWriter``: capture hands flows to a thread that writes them; it never waits for it.

The proxy's event loop calls :meth:`~CaptureWriter.flow_started`,
:meth:`~CaptureWriter.body_chunk`, :meth:`~CaptureWriter.flow_finished` and
:meth:`~CaptureWriter.tunnel`; each puts a message on a queue and returns (a
``SimpleQueue.put`` and a few additions under a lock). A daemon thread owns its own connection,
drains the queue and writes everything it finds in one transaction (up to ``batch_messages``
messages or ``batch_seconds`` after the first), which is what makes thousands of flows a second
cheap for SQLite. When the queue is empty it indexes the search text of finished flows, a few
hundred per transaction, so tokenizing never slows capture down.

Memory is bounded, not the proxy: past ``max_queued_bytes`` of body bytes waiting to be
written, further chunks of a body are dropped (all further ones, so a body never has a hole)
and the body is marked truncated; past ``max_queued_messages`` whole messages are dropped. A
slow disk therefore costs stored data, never proxy latency.

When writing fails (disk full, a read-only file, a database locked past the busy timeout) the
batch is dropped, the failure is logged once, then counted at most once a minute, and capture
carries on without storing until a write works again. Nothing is raised to the caller, except
``ValueError`` for a call that can never work (an unknown direction or field name).
Create one writer per process (threads do not survive ``fork``), after the store was opened
once with :class:`~nectoproxy.store.sqlite.SQLiteStore`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, Self

from nectoproxy.store import batch, capturewire, ingest, maintenance, schema, textindex, wsframes
from nectoproxy.store.base import DEFAULT_MAX_BODY_SIZE
from nectoproxy.store.records import UPDATABLE_FIELDS, Direction, FlowRecord

log = logging.getLogger("nectoproxy.store")

DEFAULT_MAX_QUEUED_BYTES = 32 * 1024**2
DEFAULT_MAX_QUEUED_MESSAGES = 100_000
#: Flows indexed per transaction (FTS5 writes a segment per transaction and merges them: steps
#: of 128 flows made that merging half of the indexing time); about 0.1 s of work.
INDEX_STEP = 1024
#: Indexing waits for this long a pause in capture, or for this many flows to wait for it.
INDEX_DELAY = 0.25
INDEX_LAG = 5000
#: How often a writer given retention limits applies them.
RETENTION_SECONDS = 10.0
REPORT_SECONDS = 60.0
REOPEN_SECONDS = 2.0


@dataclasses.dataclass(slots=True)
class WriterStats:
    """Counters for tests, a status endpoint and the log."""

    flows_written: int = 0
    chunks_dropped: int = 0
    bytes_dropped: int = 0
    messages_dropped: int = 0
    messages_lost: int = 0
    batches_failed: int = 0
    messages_rejected: int = 0
    flows_indexed: int = 0


class MessageSource(Protocol):
    """Where the writing loop takes messages from: its queue, or (``serve``) another source;
    ``queue.Empty`` when none came in time."""

    def get(self, block: bool = True, timeout: float | None = None) -> batch.Message: ...

    def get_nowait(self) -> batch.Message: ...


class FlowWriter(Protocol):
    """What capture needs of a writer: :class:`CaptureWriter` (a thread) or
    :class:`~nectoproxy.store.process.ProcessWriter` (a child process)."""

    max_queued_bytes: int
    stats: WriterStats

    @property
    def queued_bytes(self) -> int: ...

    def flow_started(self, record: FlowRecord) -> None: ...

    def flow_head(self, head: capturewire.Head) -> None: ...

    def flow_end(self, flow_id: str, end: capturewire.End) -> None: ...

    def tunnel(self, record: FlowRecord) -> None: ...

    def body_chunk(self, flow_id: str, direction: Direction,
                   data: bytes | bytearray | memoryview) -> None: ...

    def flow_finished(self, flow_id: str, fields: Mapping[str, Any]) -> None: ...

    def websocket(self, event: wsframes.WebSocketEvent) -> None: ...

    def flush(self, timeout: float = 10.0) -> bool: ...

    def close(self, timeout: float = 10.0) -> None: ...


class CaptureWriter:
    def __init__(self, path: str | Path, *, max_body_size: int = DEFAULT_MAX_BODY_SIZE,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
                 max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
                 batch_messages: int = 2000, batch_seconds: float = 0.02,
                 busy_timeout: float = 5.0, index_body_bytes: int = textindex.INDEX_BODY_BYTES,
                 index_delay: float = INDEX_DELAY, index_lag: int = INDEX_LAG,
                 retention: Mapping[str, Any] | None = None,
                 retention_seconds: float = RETENTION_SECONDS, start: bool = True) -> None:
        self.path = Path(path)
        self.max_queued_bytes = max_queued_bytes
        self.max_queued_messages = max_queued_messages
        self.batch_messages = batch_messages
        self.batch_seconds = batch_seconds
        self.busy_timeout = busy_timeout
        self.index_body_bytes = index_body_bytes
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[batch.Message] = queue.SimpleQueue()
        self._source: MessageSource = self._queue
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._queued_messages = 0
        self._dropped: dict[tuple[str, int], None] = {}
        self._dropping_reported_at = -REPORT_SECONDS
        self._closed = False
        self._thread: threading.Thread | None = None
        # Owned by the writer thread:
        self._batches = batch.Batches(max_body_size, index_body_bytes)
        self._conn: sqlite3.Connection | None = None
        self._reopen_at = 0.0
        self._backlog = True  # flows may be waiting to be indexed (from an earlier run too)
        #: Flows written and (as far as this writer knows) not indexed yet.
        self._unindexed = 0
        self._wal_checked_at = 0.0
        #: ``enforce_retention``'s limits, applied by this thread every ``retention_seconds``
        #: (first right away): the one writer of flows deletes old ones between batches, so
        #: retention never waits for the write lock, however fast capture writes.
        self.retention = dict(retention) if retention is not None else None
        self.retention_seconds = retention_seconds
        self._retention_at = 0.0
        self.index_delay = index_delay
        self.index_lag = index_lag
        self._failing: str | None = None
        self._unreported = 0
        self._reported_at = 0.0
        if start:
            self.start()

    def start(self) -> None:
        """Start the writing thread (the constructor does, unless ``start=False``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nectoproxy-store-writer",
                                            daemon=True)
            self._thread.start()

    # -- the capture side: called from the event loop, never blocks -----------------------------

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def queued_messages(self) -> int:
        return self._queued_messages

    def flow_started(self, record: FlowRecord) -> None:
        """A flow whose request head is in. The writer owns ``record`` from now on (it may
        complete it in place with what ``flow_finished`` brings): do not change or reuse it."""
        self._put(batch.Started(record))

    def flow_head(self, head: capturewire.Head) -> None:
        """As :meth:`flow_started`, from capture's plain values (``capturewire``)."""
        self.flow_started(capturewire.record_from_head(head))

    def flow_end(self, flow_id: str, end: capturewire.End) -> None:
        """As :meth:`flow_finished`, from capture's plain values (``capturewire``)."""
        self.flow_finished(flow_id, capturewire.fields_from_end(end))

    def tunnel(self, record: FlowRecord) -> None:
        """A pass-through tunnel, stored complete once it has ended."""
        self._put(batch.Tunnel(record))

    def body_chunk(self, flow_id: str, direction: Direction,
                   data: bytes | bytearray | memoryview) -> None:
        code = textindex.direction_code(direction)
        size = len(data)
        if not size:
            return
        key = (flow_id, code)
        with self._lock:
            if self._closed:
                return
            if key in self._dropped or (self._queued_bytes + size > self.max_queued_bytes
                                        or self._queued_messages >= self.max_queued_messages):
                self._drop(key, size)
                return
            self._queued_bytes += size
            self._queued_messages += 1
        self._queue.put(batch.Chunk(flow_id, code, bytes(data)))

    def websocket(self, event: wsframes.WebSocketEvent) -> None:
        """A WebSocket connection of a flow opened or closed, or it relayed a message. Its
        content counts against ``max_queued_bytes`` like a body chunk: past it, the message
        is stored without its content (marked truncated)."""
        with self._lock:
            if self._closed:
                return
            if self._queued_messages >= self.max_queued_messages:
                self.stats.messages_dropped += 1
                self._report_dropping()
                return
            if event.data and self._queued_bytes + len(event.data) > self.max_queued_bytes:
                self.stats.bytes_dropped += len(event.data)
                event.data, event.truncated = b"", True
            self._queued_bytes += len(event.data)
            self._queued_messages += 1
        self._queue.put(event)

    def flow_finished(self, flow_id: str, fields: Mapping[str, Any]) -> None:
        """The flow is over: ``fields`` are FlowRecord fields to set (status, response headers,
        sizes, timings, error...)."""
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"not updatable flow fields: {', '.join(sorted(unknown))}")
        update = dict(fields)
        with self._lock:
            for code, direction in enumerate(("request", "response")):
                if (flow_id, code) in self._dropped:
                    del self._dropped[flow_id, code]
                    update[f"{direction}_truncated"] = True
        self._put(batch.Finished(flow_id, update))

    def _put(self, message: batch.Message) -> None:
        with self._lock:
            if self._closed:
                return
            if self._queued_messages >= self.max_queued_messages:
                self.stats.messages_dropped += 1
                self._report_dropping()
                return
            self._queued_messages += 1
        self._queue.put(message)

    def _drop(self, key: tuple[str, int], size: int) -> None:
        """(Under the lock.) Every later chunk of this body is dropped too: no holes."""
        if key not in self._dropped:
            self._dropped[key] = None
            if len(self._dropped) > batch.OPEN_FLOWS_CACHED:
                del self._dropped[next(iter(self._dropped))]
        self.stats.chunks_dropped += 1
        self.stats.bytes_dropped += size
        self._report_dropping()

    def _report_dropping(self) -> None:
        now = time.monotonic()
        if now - self._dropping_reported_at >= REPORT_SECONDS:
            self._dropping_reported_at = now
            log.warning("flow store %s: writes are behind capture; dropping body bytes and "
                        "flows (%d bytes, %d messages so far)", self.path,
                        self.stats.bytes_dropped, self.stats.messages_dropped)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed) and the search index
        has caught up; False on timeout or when the thread is not running."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(batch.Control(done))
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread; later calls are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._close_connection()
            return
        self._queue.put(batch.Control(threading.Event(), close=True))
        thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve(self, source: MessageSource) -> None:
        """Write what ``source`` gives, in the calling thread, until a close message: for a
        process whose only job is writing (``ProcessWriter``'s child), which needs neither
        this writer's queue nor a second thread taking turns with it for the GIL. The
        writer must have been made with ``start=False``; its capture-side methods are not
        used then (the caller bounds what it queues)."""
        if self._thread is not None:
            raise RuntimeError("serve() is for a writer made with start=False")
        self._source = source
        try:
            self._run()
        finally:
            self._close_connection()

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._maybe_retain()
            messages = self._collect()
            try:
                if messages is None:
                    self._index_step()
                    continue
                if not self._handle(messages):
                    return
            except Exception as exc:  # a bug must not end capture's writer for good
                log.exception("flow store %s: the writer failed", self.path)
                self._failure(exc, 0)
                self._backlog = False

    def _handle(self, messages: list[batch.Message]) -> bool:
        """Write one batch, then answer its flushes; False once closed."""
        work: list[batch.Message] = [m for m in messages if not isinstance(m, batch.Control)]
        try:
            if work:
                self._write(work)
        except Exception as exc:  # a bug, not the disk: still answer the flushes below
            log.exception("flow store %s: the writer failed", self.path)
            self._failure(exc, len(work))
        finally:
            if self._source is self._queue:  # counted in by the capture-side methods
                queued = sum(len(m.data) for m in work
                             if isinstance(m, batch.Chunk | wsframes.WebSocketEvent))
                with self._lock:
                    self._queued_messages -= len(work)
                    self._queued_bytes -= queued
        for message in messages:
            if isinstance(message, batch.Control):
                if message.close:
                    self._close_connection()
                    message.done.set()
                    return False
                for _ in range(1_000_000):  # a flush also waits for the index
                    if not self._index_step():
                        break
                message.done.set()
        return True

    def _collect(self) -> list[batch.Message] | None:
        """The next batch; None when the queue is empty and indexing is waiting."""
        if self._backlog:
            # Index in the quiet moments: a busy capture writes first and indexes once
            # traffic pauses for ``index_delay``, or once enough flows wait (so search lags
            # a busy capture by that many flows at most).
            delay = 0.0 if self._unindexed >= self.index_lag else self.index_delay
            try:
                first = self._source.get(timeout=delay) if delay else self._source.get_nowait()
            except queue.Empty:
                return None
        elif self.retention is not None:
            try:
                first = self._source.get(timeout=self.retention_seconds)
            except queue.Empty:
                return None
        else:
            first = self._source.get()
        messages = [first]
        deadline = time.monotonic() + self.batch_seconds
        while len(messages) < self.batch_messages and not isinstance(messages[-1],
                                                                     batch.Control):
            remaining = deadline - time.monotonic()
            try:
                messages.append(self._source.get(timeout=remaining) if remaining > 0
                                else self._source.get_nowait())
            except queue.Empty:
                break
        return messages

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None and time.monotonic() >= self._reopen_at:
            try:
                conn = schema.open_store(self.path, busy_timeout=self.busy_timeout,
                                         cache_kib=schema.WRITER_CACHE_KIB)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    ingest.ensure_active_session(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            except (sqlite3.Error, OSError, schema.StoreError) as exc:
                self._reopen_at = time.monotonic() + REOPEN_SECONDS
                self._failure(exc, 0)
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _transaction(self, work: Callable[[sqlite3.Connection], bool]) -> bool:
        """Run ``work(conn)`` in one write transaction; False (logged, never raised) if it
        failed. ``work`` says whether it wrote anything: only a write proves writes work."""
        conn = self._connection()
        if conn is None:
            return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            wrote = work(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._batches.rolled_back()
            if not isinstance(exc, sqlite3.OperationalError) or "locked" not in str(exc):
                # Reopen later, not at once: the file may be replaced or fixed meanwhile.
                self._close_connection()
                self._reopen_at = time.monotonic() + REOPEN_SECONDS
            self._failure(exc, 0)
            return False
        if wrote and self._failing is not None:
            log.warning("flow store %s: writes work again (%d messages were not stored)",
                        self.path, self._unreported)
            self._failing, self._unreported = None, 0
        return True

    def _write(self, work: list[batch.Message]) -> None:
        def apply(conn: sqlite3.Connection) -> bool:
            self._batches.write(conn, work)
            return True

        if self._transaction(apply):
            self._batches.committed()
            self._check_wal()
            self._unindexed += self._batches.flows_written - self.stats.flows_written
            self.stats.flows_written = self._batches.flows_written
            self.stats.messages_rejected = self._batches.rejected
            self._backlog = True
        else:
            self.stats.batches_failed += 1
            self.stats.messages_lost += len(work)
            self._unreported += len(work)

    def _maybe_retain(self) -> None:
        if self.retention is None or time.monotonic() < self._retention_at:
            return
        self._retention_at = time.monotonic() + self.retention_seconds
        conn = self._connection()
        if conn is None:
            return

        @contextlib.contextmanager
        def write() -> Iterator[sqlite3.Connection]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            pruned = maintenance.enforce_retention(write, now=time.time(), **self.retention)
        except sqlite3.Error as exc:
            log.warning("flow store %s: retention failed: %s", self.path, exc)
            return
        finally:
            self._batches.rolled_back()  # deleted flows may have been in its cache
        if pruned.flows:
            log.info("flow store: retention deleted %d flows (%d body bytes)", pruned.flows,
                     pruned.bytes)
            self._check_wal(force=True)

    def _check_wal(self, force: bool = False) -> None:
        """Keep the write-ahead log small: with other connections reading and writing all
        the time, SQLite's automatic checkpoints copy pages back but never restart the log,
        so it would grow as long as capture runs. Looked at once a second at most."""
        now = time.monotonic()
        if (now < self._wal_checked_at + 1.0 and not force) or self._conn is None:
            return
        self._wal_checked_at = now
        try:
            size = os.path.getsize(f"{self.path}-wal")
        except OSError:
            return
        if size > schema.WAL_LIMIT:
            # Waits for other writers and readers only briefly: tried again a second later.
            self._conn.execute("PRAGMA busy_timeout = 100")
            try:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def _index_step(self) -> bool:
        """Index a few flows waiting for it; whether more may be waiting."""
        done: list[int] = []

        def work(conn: sqlite3.Connection) -> bool:
            done.append(textindex.index_pending(conn, INDEX_STEP, self.index_body_bytes,
                                                self._batches.take_text))
            return done[0] > 0

        if not self._transaction(work):
            self._backlog = False  # retried after the next successful batch
            return False
        self.stats.flows_indexed += done[0]
        self._unindexed = max(0, self._unindexed - done[0]) if done[0] == INDEX_STEP else 0
        self._backlog = done[0] == INDEX_STEP
        return self._backlog

    def _failure(self, exc: BaseException, lost: int) -> None:
        now = time.monotonic()
        self._unreported += lost
        if self._failing is None:
            self._failing = str(exc)
            self._reported_at = now
            log.error("flow store %s: cannot write (%s); capture goes on without storing "
                      "until writes work again", self.path, exc)
        elif now - self._reported_at >= REPORT_SECONDS:
            log.warning("flow store %s: still cannot write (%s); %d messages not stored since "
                        "the last report", self.path, exc, self._unreported)
            self._reported_at, self._unreported = now, 0
