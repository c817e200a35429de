"""``ProcessWriter``: :class:`~nectoproxy.store.writer.CaptureWriter`'s calls, written by a
child process.

In the proxy's process a thread that writes SQLite competes with the event loop for the GIL:
the insert statements release it, but encoding rows and indexing text do not, and every
hand-over costs the loop latency. So the command line captures through this class: the calls
(``flow_head``, ``body_chunk``, ``flow_end``, ``tunnel``...) append to a list under a lock and
return; a sender thread writes what piled up to a pipe, in one ``marshal.dumps`` per batch
(capture's messages are plain values; a batch holding anything else is pickled), and the
child maps heads and ends to records (``capturewire``); a child process runs an
ordinary ``CaptureWriter`` on the other end, whose writing loop reads the pipe in the child's
only thread (``CaptureWriter.serve``). Memory is bounded on this side too: past
``max_queued_bytes`` of bodies not yet handed to the child, chunks are dropped (all further
chunks of that body, which is then marked truncated), as the thread writer does.

If the child dies, capture logs it once and stops storing; proxying is never affected.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import itertools
import json
import logging
import marshal
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

from nectoproxy.store import batch, capturewire, wsframes
from nectoproxy.store.base import DEFAULT_MAX_BODY_SIZE
from nectoproxy.store.records import DIRECTIONS, UPDATABLE_FIELDS, Direction, FlowRecord
from nectoproxy.store.writer import (
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_MESSAGES,
    CaptureWriter,
    WriterStats,
)

log = logging.getLogger("nectoproxy.store")

#: Longest the sender waits to gather a batch after the first message.
BATCH_SECONDS = 0.01
#: The child's transactions: up to this long after the first message, or this many messages.
#: Each commit writes every page the batch touched (the flows, their indexes, the counters);
#: a tenth of a second of flows shares most of those pages, and most flows start and finish
#: within one batch, so their row is inserted once, complete. A flow still shows in the
#: inspector within about 0.2 s.
WRITE_BATCH_SECONDS = 0.1
WRITE_BATCH_MESSAGES = 10_000
#: Body bytes handed to the child per batch at most (each batch is pickled whole).
SEND_BYTES = 1024**2
#: What a record or a finish message is counted as against ``max_queued_bytes``.
MESSAGE_BYTES = 1024
#: Body bytes waiting on this side at most: past half of it capture holds a body's relay
#: until the child caught up, past all of it chunks are dropped (see Capture).
DEFAULT_PENDING_BYTES = 8 * 1024**2
_OPEN_DROPS = 10_000
#: The messages that count MESSAGE_BYTES each (flow starts, ends, tunnels).
_RECORDS = frozenset({"s", "h", "f", "e", "t"})
#: The writer child's first-generation collection threshold (the interpreter's default: 700).
GC_THRESHOLD = 10_000
_CHILD = ("import sys, json; from nectoproxy.store.process import _child_main; "
          "_child_main(*json.loads(sys.argv[1]))")


def _dumps(batch: list[tuple[Any, ...]]) -> bytes:
    """A batch for the child: in marshal's format when it holds plain values only (capture's
    heads, ends and chunks: several times quicker both ways than pickle), else pickled."""
    try:
        return marshal.dumps(batch)
    except ValueError:  # a record, a WebSocket event, an int or str subclass
        return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes) -> list[tuple[Any, ...]]:
    # A pickle starts with its protocol's opcode (0x80); a marshalled list never does.
    batch: list[tuple[Any, ...]] = pickle.loads(data) if data[:1] == b"\x80" else \
        marshal.loads(data)
    return batch


class _Answer:
    """A flush's or close's ``done``: setting it answers the parent, with the counters."""

    def __init__(self, outgoing: Connection, kind: str, token: int,
                 writer: CaptureWriter) -> None:
        self.outgoing, self.kind, self.token, self.writer = outgoing, kind, token, writer

    def set(self) -> None:
        self.outgoing.send_bytes(pickle.dumps((self.kind, self.token, True,
                                               dataclasses.asdict(self.writer.stats))))


class _Pipe:
    """The child writer's message source: the parent's batches, message by message."""

    def __init__(self, incoming: Connection, outgoing: Connection,
                 writer: CaptureWriter) -> None:
        self.incoming, self.outgoing, self.writer = incoming, outgoing, writer
        self.messages: collections.deque[batch.Message] = collections.deque()

    def get(self, block: bool = True, timeout: float | None = None) -> batch.Message:
        while not self.messages:
            try:
                if not self.incoming.poll(timeout if block else 0):
                    raise queue.Empty
                data = self.incoming.recv_bytes()
            except (EOFError, OSError):
                # The proxy is gone: write what came and stop.
                self.messages.append(batch.Control(_Gone(), close=True))
                break
            self.messages.extend(map(self._message, _loads(data)))
        return self.messages.popleft()

    def get_nowait(self) -> batch.Message:
        return self.get(False)

    def _message(self, message: tuple[Any, ...]) -> batch.Message:
        kind = message[0]
        if kind == "s":
            return batch.Started(message[1])
        if kind == "c":
            return batch.Chunk(message[1], 0 if message[2] == "request" else 1, message[3])
        if kind == "h":
            return batch.Started(capturewire.record_from_head(message[1]))
        if kind == "e":
            fields = capturewire.fields_from_end(message[2])
            for direction, dropped in zip(DIRECTIONS, message[3], strict=True):
                if dropped:
                    fields[f"{direction}_truncated"] = True
            return batch.Finished(message[1], fields)
        if kind == "f":
            return batch.Finished(message[1], message[2])
        if kind == "t":
            return batch.Tunnel(message[1])
        if kind == "w":
            event: wsframes.WebSocketEvent = message[1]
            return event
        return batch.Control(_Answer(self.outgoing, kind, message[1], self.writer),
                             close=kind == "close")


class _Gone:
    def set(self) -> None:
        pass


def tune_collector() -> None:
    """The writer child's garbage collector settings. Each batch allocates thousands of
    short-lived tuples, lists and records, few of them in cycles: at the default threshold
    (700) the collector ran every few messages and walked the writer's caches each time
    (``marshal.loads`` of a batch took three times as long). What exists when this is called
    (modules, the writer) is never garbage: it is left out of every pass."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 1000)


def _child_main(read_fd: int, write_fd: int, path: str, options: dict[str, Any],
                level: int) -> None:  # pragma: no cover - runs in the child
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    root = logging.getLogger("nectoproxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    incoming = Connection(read_fd, writable=False)
    outgoing = Connection(write_fd, readable=False)
    writer = CaptureWriter(path, start=False, **options)
    tune_collector()
    # The writing loop runs in this, the child's only thread: messages come straight from
    # the pipe, with no queue and no second thread to take turns with for the GIL.
    profile = os.environ.get("NECTOPROXY_WRITER_PROFILE")  # benchmarks/capture_cost.py
    if not profile:
        writer.serve(_Pipe(incoming, outgoing, writer))
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(writer.serve, _Pipe(incoming, outgoing, writer))
    finally:
        profiler.dump_stats(profile)


class ProcessWriter:
    """Capture's writer with the writing in a child process (see the module's docstring)."""

    def __init__(self, path: str | Path, *, max_body_size: int = DEFAULT_MAX_BODY_SIZE,
                 max_queued_bytes: int = DEFAULT_PENDING_BYTES,
                 max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
                 batch_seconds: float = BATCH_SECONDS, **options: Any) -> None:
        self.path = Path(path)
        self.max_queued_bytes = max_queued_bytes
        self.max_queued_messages = max_queued_messages
        self.batch_seconds = batch_seconds
        #: Counters: what this side dropped, plus the child's as of the last flush.
        self.stats = WriterStats()
        self._child_stats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._queued_bytes = 0
        self._dropped: dict[tuple[str, str], None] = {}
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._dead = False
        self._reported_at = -60.0
        self._replies: dict[int, threading.Event] = {}
        self._answers: dict[int, tuple[bool, dict[str, int]]] = {}
        self._tokens = itertools.count(1)
        self._read_lock = threading.Lock()
        options.update(max_body_size=max_body_size, max_queued_bytes=DEFAULT_MAX_QUEUED_BYTES,
                       max_queued_messages=max_queued_messages,
                       batch_seconds=WRITE_BATCH_SECONDS, batch_messages=WRITE_BATCH_MESSAGES)
        # A plain child interpreter (not multiprocessing's spawn, which imports the parent's
        # main module again): two pipes, batches in, answers out.
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        level = logging.getLogger("nectoproxy").getEffectiveLevel()
        argument = json.dumps([child_read, child_write, str(self.path), options, level])
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, argument],
                pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                start_new_session=False)
        finally:
            os.close(child_read)
            os.close(child_write)
        self._conn = Connection(parent_write, readable=False)
        self._answers_conn = Connection(parent_read, writable=False)
        self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                        name="nectoproxy-store-sender")
        self._sender.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    # -- the capture side: called from the event loop, never blocks -----------------------------

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def flow_started(self, record: FlowRecord) -> None:
        self._put(("s", record))

    def flow_head(self, head: capturewire.Head) -> None:
        """As ``CaptureWriter.flow_head``; the child maps the head to a record."""
        self._put(("h", head))

    def flow_end(self, flow_id: str, end: capturewire.End) -> None:
        """As ``CaptureWriter.flow_end``; the child maps the end to fields."""
        with self._lock:
            dropped = self._undrop(flow_id)
        self._put(("e", flow_id, end, dropped))

    def tunnel(self, record: FlowRecord) -> None:
        self._put(("t", record))

    def body_chunk(self, flow_id: str, direction: Direction,
                   data: bytes | bytearray | memoryview) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}")
        size = len(data)
        if not size:
            return
        key = (flow_id, direction)
        with self._lock:
            if self._closed or self._dead:
                return
            if key in self._dropped or self._queued_bytes + size > self.max_queued_bytes or \
                    len(self._pending) >= self.max_queued_messages:
                self._drop(key, size)
                return
            self._queued_bytes += size
            self._pending.append(("c", flow_id, direction, bytes(data)))
            if len(self._pending) == 1 or self._queued_bytes >= SEND_BYTES:
                self._wake.notify()

    def flow_finished(self, flow_id: str, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"not updatable flow fields: {', '.join(sorted(unknown))}")
        update = dict(fields)
        with self._lock:
            for direction, dropped in zip(DIRECTIONS, self._undrop(flow_id), strict=True):
                if dropped:
                    update[f"{direction}_truncated"] = True
        self._put(("f", flow_id, update))

    def _undrop(self, flow_id: str) -> tuple[bool, bool]:
        """(Under the lock.) Whether chunks of the flow's request, response were dropped on
        this side; forgotten now (the flow is over)."""
        dropped = self._dropped
        if not dropped:
            return (False, False)
        request = dropped.pop((flow_id, "request"), 0) is None
        return request, dropped.pop((flow_id, "response"), 0) is None

    def websocket(self, event: wsframes.WebSocketEvent) -> None:
        """As :meth:`CaptureWriter.websocket`: a message's content counts against the byte
        budget (past it the message is sent without its content, marked truncated)."""
        with self._lock:
            if not self._room():
                return
            if event.data and self._queued_bytes + MESSAGE_BYTES + len(event.data) > \
                    self.max_queued_bytes:
                self.stats.bytes_dropped += len(event.data)
                event.data, event.truncated = b"", True
            self._queued_bytes += MESSAGE_BYTES + len(event.data)
            self._pending.append(("w", event))
            if len(self._pending) == 1 or self._queued_bytes >= SEND_BYTES:
                self._wake.notify()

    def _put(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if not self._room():
                return
            self._queued_bytes += MESSAGE_BYTES
            self._pending.append(message)
            if len(self._pending) == 1:
                self._wake.notify()

    def _room(self) -> bool:
        """(Under the lock.) Whether one more message may be queued; a drop is counted if not.
        A record counts MESSAGE_BYTES against the byte budget too: when the child falls
        behind, flows are dropped (counted, logged) before they eat the proxy's memory."""
        if self._closed or self._dead:
            return False
        if len(self._pending) >= self.max_queued_messages or \
                self._queued_bytes + MESSAGE_BYTES > self.max_queued_bytes:
            self.stats.messages_dropped += 1
            self._report_dropping()
            return False
        return True

    def _drop(self, key: tuple[str, str], size: int) -> None:
        if key not in self._dropped:
            self._dropped[key] = None
            if len(self._dropped) > _OPEN_DROPS:
                del self._dropped[next(iter(self._dropped))]
        self.stats.chunks_dropped += 1
        self.stats.bytes_dropped += size
        self._report_dropping()

    def _report_dropping(self) -> None:
        now = time.monotonic()
        if now - self._reported_at >= 60:
            self._reported_at = now
            log.warning("flow store %s: writes are behind capture; dropping body bytes and "
                        "flows (%d bytes, %d flow messages so far)", self.path,
                        self.stats.bytes_dropped, self.stats.messages_dropped)

    # -- the sender thread ------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending and self._closed:
                    return
            if self._queued_bytes < SEND_BYTES:
                time.sleep(self.batch_seconds)  # let a batch gather
            with self._lock:
                batch, sent_bytes, closing = self._take()
            try:
                self._conn.send_bytes(_dumps(batch))
            except (OSError, ValueError) as exc:
                self._child_died(exc)
                return
            finally:
                with self._lock:
                    self._queued_bytes -= sent_bytes
            if closing:
                return

    def _take(self) -> tuple[list[tuple[Any, ...]], int, bool]:
        """(Under the lock.) The next batch, every message up to :data:`SEND_BYTES` of body
        bytes (so that pickling never copies much at a time), what it counted against
        ``max_queued_bytes``, and whether it closes the child. One pass: this thread holds
        the GIL the event loop needs meanwhile."""
        body = counted = 0
        closing = False
        records, pending = _RECORDS, self._pending
        for index, message in enumerate(pending):
            kind = message[0]
            if kind == "c":
                body += len(message[3])
                if body >= SEND_BYTES:
                    batch = pending[:index + 1]
                    del pending[:index + 1]
                    return batch, body + counted, closing
            elif kind in records:
                counted += MESSAGE_BYTES
            elif kind == "w":
                counted += MESSAGE_BYTES + len(message[1].data)
            elif kind == "close":
                closing = True
        self._pending = []
        return pending, body + counted, closing

    def _child_died(self, exc: BaseException) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
            self._pending.clear()
            self._queued_bytes = 0
        log.error("flow store %s: the writer process ended (%s); capture stops storing "
                  "flows until the proxy restarts", self.path, exc)
        for event in list(self._replies.values()):
            event.set()

    def _request(self, kind: str, timeout: float) -> tuple[bool, dict[str, int]] | None:
        token = next(self._tokens)
        event = threading.Event()
        self._replies[token] = event
        with self._lock:
            if self._dead or (self._closed and kind != "close"):
                self._replies.pop(token, None)
                return None
            self._pending.append((kind, token, timeout))
            self._wake.notify()
        deadline = time.monotonic() + timeout + 5
        while not event.is_set() and time.monotonic() < deadline:
            with self._read_lock:
                if event.is_set():
                    break
                try:
                    if self._answers_conn.poll(0.05):
                        answer = pickle.loads(self._answers_conn.recv_bytes())
                        self._answers[answer[1]] = (answer[2], answer[3])
                        done = self._replies.pop(answer[1], None)
                        if done is not None:
                            done.set()
                except (EOFError, OSError) as exc:
                    self._child_died(exc)
                    break
        self._replies.pop(token, None)
        return self._answers.pop(token, None)

    def _merge(self, child: dict[str, int]) -> None:
        for name, value in child.items():
            mine = getattr(self.stats, name) - self._child_stats.get(name, 0)
            setattr(self.stats, name, mine + value)
        self._child_stats = dict(child)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed) in the child."""
        answer = self._request("flush", timeout)
        if answer is None:
            return False
        self._merge(answer[1])
        return answer[0]

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the child; later calls are ignored."""
        with self._lock:
            if self._closed:
                return
        answer = self._request("close", timeout)
        with self._lock:
            self._closed = True
            self._wake.notify()
        if answer is not None:
            self._merge(answer[1])
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._sender.join(timeout)
        self._conn.close()
        self._answers_conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ProcessWriter"]
