"""Child processes of a benchmark run, and what /proc says about them.

Every process the suite starts is registered with a :class:`Children` and ended by its own id
when the run stops, also on Ctrl-C, SIGTERM or an exception. Memory and CPU figures come from
``/proc/PID/status`` and ``/proc/PID/stat`` (Linux only).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[Any] | None = None) -> None:
    """Return once 127.0.0.1:port accepts; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before "
                               f"listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def pinned(command: Sequence[str], core: int | None) -> list[str]:
    """``command`` run under ``taskset -c core`` (taskset execs it: the pid stays the same)."""
    if core is None:
        return list(command)
    if shutil.which("taskset") is None:
        raise RuntimeError("--pin needs taskset (util-linux)")
    return ["taskset", "-c", str(core), *command]


class Children:
    """Starts child processes and ends every one of them (by pid) on close."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[Any]] = []

    def start(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(list(command), **kwargs)
        self._processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], sig: int = signal.SIGTERM,
             timeout: float = 5.0) -> None:
        if process.poll() is None:
            try:
                process.send_signal(sig)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            except ProcessLookupError:
                pass
        if process in self._processes:
            self._processes.remove(process)

    def close(self) -> None:
        for process in reversed(list(self._processes)):
            self.stop(process)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def install_sigterm_handler() -> None:
    """Turn SIGTERM (and SIGINT, even when started with it ignored, as shells do for
    background jobs) into KeyboardInterrupt, so that ``finally`` blocks stop the children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def hwm_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS mark (needs root or the same user; Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the ")" of the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """The process's child processes (the proxy's store writer), from /proc."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    """The process's children, their children and so on (bounded: at most 256), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 256:
        kids = children_of(todo.pop())
        found += kids
        todo += kids
    return found


def tree_rss_kib(pid: int) -> int:
    """Resident memory of the process and all its descendants (shared pages counted in each)."""
    total = rss_kib(pid)
    for child in descendants(pid):
        try:
            total += rss_kib(child)
        except (OSError, KeyError):
            pass
    return total


def children_cpu(pid: int, tree: bool = False) -> dict[int, float]:
    """CPU seconds used so far by each of the process's children (``tree``: descendants)."""
    used = {}
    for child in descendants(pid) if tree else children_of(pid):
        try:
            used[child] = cpu_seconds(child)
        except OSError:
            pass
    return used


def core_busy_seconds(core: int) -> float:
    """CPU time one core spent on anything but idling (steal included), from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]  # idle + iowait
                return (sum(values[:8]) - idle) / CLOCK_TICKS
    raise KeyError(f"cpu{core}")


class Sampler:
    """Watches one process over an interval: CPU used and peak RSS (polled and VmHWM).

    With ``core`` (the core the process is pinned to), also how much of that core other
    processes took meanwhile: the figure that says whether a run was disturbed.

    With ``tree`` (a proxy that serves from several processes: proxy.py's acceptors,
    NectoProxy's ``workers``), RSS is the sum over the process and its descendants, and
    :attr:`children_cpu` covers all descendants; :attr:`tree_cpu` is the whole tree's CPU.
    """

    def __init__(self, pid: int, core: int | None = None, interval: float = 0.02,
                 tree: bool = False) -> None:
        self.pid = pid
        self.tree = tree
        self.core = core
        self.others_share: float | None = None
        self._core_start = 0.0
        self._wall_start = 0.0
        self.interval = interval
        self.rss_before = 0
        self.peak_kib = 0
        self.cpu = 0.0
        self._cpu_start = 0.0
        #: CPU used meanwhile by the process's children (with capture: its store writer).
        self.children_cpu = 0.0
        self._children_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_reset = False

    def begin(self) -> None:
        self.rss_before = self._rss()
        self.peak_kib = self.rss_before
        self._hwm_reset = reset_hwm(self.pid) and not self.tree
        self._cpu_start = cpu_seconds(self.pid)
        self._children_start = children_cpu(self.pid, self.tree)
        self._wall_start = time.monotonic()
        if self.core is not None:
            self._core_start = core_busy_seconds(self.core)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_kib = max(self.peak_kib, self._rss())
            except (OSError, KeyError):
                return

    def _rss(self) -> int:
        return tree_rss_kib(self.pid) if self.tree else rss_kib(self.pid)

    @property
    def tree_cpu(self) -> float:
        """CPU of the process and (with ``tree``) of all its descendants over the interval."""
        return self.cpu + self.children_cpu if self.tree else self.cpu

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        try:
            self.cpu = cpu_seconds(self.pid) - self._cpu_start
            self.children_cpu = sum(used - self._children_start.get(child, 0.0)
                                    for child, used in children_cpu(self.pid, self.tree).items())
            wall = time.monotonic() - self._wall_start
            if self.core is not None and wall > 0:
                others = core_busy_seconds(self.core) - self._core_start - self.tree_cpu
                self.others_share = max(0.0, others / wall)
            self.peak_kib = max(self.peak_kib, self._rss())
            if self._hwm_reset:
                self.peak_kib = max(self.peak_kib, hwm_kib(self.pid))
        except (OSError, KeyError):
            pass
