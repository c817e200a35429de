"""Breakpoints across worker processes: a pipe from each worker to the first process.

With ``workers = N`` a flow pauses in the process that took its connection, and only the
first process serves the API. Each worker gets one end of a pipe when it is started
(:mod:`nectoproxy.workers`); over it, the worker's :class:`~nectoproxy.breakpoints.PausedFlows`
sends every ``breakpoint:hit`` and ``breakpoint:resumed`` it announces, and the first process
sends resumptions back and waits for the answer. So the first process lists, announces and
resumes a worker's paused flow as its own, and a modification that cannot apply is refused by
the process holding the flow, the same way (a 400, the flow stays paused).

Why a pipe, not files in a folder both sides poll: it costs nothing while no flow is paused
(two threads blocked on a read), a resumption arrives at once, paused bodies (which may hold
credentials) never reach the disk, nothing the API sends names a file, and a worker that dies
closes its end: its flows are announced as ``gone`` and forgotten, nothing stale is left.
"""

from __future__ import annotations

import itertools
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

import anyio.from_thread
import anyio.lowlevel

from nectoproxy.breakpoints import Paused, PausedFlows, ResumeError, WorkerUnavailable

#: How long the first process waits for a worker to answer (a resumption, a listing).
ANSWER_TIMEOUT = 10.0
#: How often a worker looks for paused flows that went on by themselves
#: (``proxy.intercept_timeout``), only while it holds some: the API hears of them this late.
PRUNE_INTERVAL = 0.1


class WorkerLink:
    """The first process's end of one worker's pipe (a reader thread; resumptions sent from
    any thread)."""

    def __init__(self, paused: PausedFlows, connection: Connection) -> None:
        self.paused = paused
        self.connection = connection
        self._send_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._answers: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._answers_lock = threading.Lock()
        threading.Thread(target=self._read, name="nectoproxy-breakpoints-link",
                         daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                message = self.connection.recv()
                if message[0] == "event":
                    self.paused.remote_event(message[1], self)
                elif message[0] == "answer":
                    with self._answers_lock:
                        waiting = self._answers.get(message[1])
                    if waiting is not None:
                        waiting[1].extend(message[2:])
                        waiting[0].set()
        except (EOFError, OSError):  # the worker stopped (or died): its flows are gone
            self.paused.remote_gone(self)
        finally:
            self.connection.close()

    def _ask(self, flow_id: str, *question: Any) -> tuple[Any, ...]:
        """Send ``question`` to the worker and wait for its answer (called in a thread)."""
        number = next(self._numbers)
        done = threading.Event()
        answer: list[Any] = []
        with self._answers_lock:
            self._answers[number] = (done, answer)
        try:
            with self._send_lock:
                self.connection.send((question[0], number, *question[1:]))
            if not done.wait(ANSWER_TIMEOUT):
                raise WorkerUnavailable(f"the worker process holding flow {flow_id!r} did not "
                                        f"answer within {ANSWER_TIMEOUT:g}s")
        except OSError:
            raise WorkerUnavailable(f"the worker process holding flow {flow_id!r} has "
                                    "stopped") from None
        finally:
            with self._answers_lock:
                del self._answers[number]
        return tuple(answer)

    def resume(self, flow_id: str, action: str, changes: Any) -> dict[str, Any]:
        """Resume a flow paused in the worker (called in a thread): the flow as resumed;
        KeyError or ResumeError as :meth:`PausedFlows.resume` raises them there."""
        kind, *rest = self._ask(flow_id, "resume", flow_id, action, changes)
        if kind == "missing":
            raise KeyError(flow_id)
        if kind == "invalid":
            raise ResumeError(*rest)
        return rest[0]  # type: ignore[no-any-return]

    def shown(self, flow_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The worker's paused flows among ``flow_ids``, as they are now (their bodies were
        still arriving when they were announced)."""
        _, found = self._ask(flow_ids[0], "show", flow_ids)
        return found  # type: ignore[no-any-return]


class PrimaryLink:
    """A worker's end of its pipe: its paused flows' events go to the first process (a sender
    thread, so the event loop never waits on the pipe), resumptions come back (a reader thread
    that resumes them on the loop)."""

    def __init__(self, paused: PausedFlows, connection: Connection) -> None:
        self.paused = paused
        self.connection = connection
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._token: anyio.lowlevel.EventLoopToken | None = None

    def start(self) -> None:
        """Start forwarding (call it on the worker's event loop, where flows resume)."""
        self._token = anyio.lowlevel.current_token()
        self.paused.forward = lambda event: self._outbox.put(("event", event))
        for target in (self._send, self._read):
            threading.Thread(target=target, name="nectoproxy-breakpoints-link",
                             daemon=True).start()

    def _send(self) -> None:
        while True:
            # Blocked for good while nothing is paused; else woken to notice timeouts.
            wait = PRUNE_INTERVAL if self.paused.holding() else None
            try:
                message = self._outbox.get(timeout=wait)
            except queue.Empty:
                self.paused.prune()  # (announces, hence sends, the flows that went on)
                continue
            if message is None:
                return
            try:
                self.connection.send(message)
            except OSError:  # the first process is gone: this worker is stopping too
                return

    def _read(self) -> None:
        try:
            while True:
                kind, number, *question = self.connection.recv()
                answer = self._show if kind == "show" else self._resume
                try:
                    found = anyio.from_thread.run_sync(answer, *question, token=self._token)
                except RuntimeError:  # the loop has finished: the worker is stopping
                    found = ("missing",) if kind == "resume" else ("done", {})
                self._outbox.put(("answer", number, *found))
        except (EOFError, OSError):
            self._outbox.put(None)

    def _show(self, flow_ids: list[str]) -> tuple[Any, ...]:
        return ("done", {p.flow.id: p.to_json() for p in self.paused.current()
                         if isinstance(p, Paused) and p.flow.id in flow_ids})

    def _resume(self, flow_id: str, action: str, changes: Any) -> tuple[Any, ...]:
        try:
            return ("done", self.paused.resume(flow_id, action, changes).to_json())
        except KeyError:
            return ("missing",)
        except ResumeError as exc:
            return ("invalid", exc.message, exc.field)
