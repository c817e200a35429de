"""Pausing capture: flows are proxied as always, but not stored, in every worker process.

Every process of a run has its own :class:`~nectoproxy.capture.Capture`, and only the first
serves the API, so the pause travels the way live settings do (:mod:`nectoproxy.settings`): a
file beside the store (``flows.db.paused``) exists while capture is paused, and every process
looks at it four times a second and switches its capture plugin. The first process removes it
when a run starts: like Charles' recording switch, a pause lasts until resumed or until the
proxy restarts, so a forgotten pause never silently loses tomorrow's traffic.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio

from nectoproxy.capture import Capture
from nectoproxy.settings import WATCH_INTERVAL, FileWatch, write_atomically


def pause_file(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".paused")


class CapturePause:
    """The pause switch of one process's capture (``paused``, ``set_paused``), kept in step
    with the other processes by :meth:`follow`."""

    def __init__(self, capture: Capture, store_path: Path, *, primary: bool) -> None:
        self.capture = capture
        self.path = pause_file(store_path)
        if primary:  # a new run records (the workers start after this)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.watch = FileWatch(self.path)
        self._apply()

    @property
    def paused(self) -> bool:
        return not self.capture.enabled

    def set_paused(self, paused: bool) -> None:
        """Pause or resume here at once, and in the other processes within a second (call it
        in a worker thread: it writes a file)."""
        if paused:
            write_atomically(self.path, "capture is paused by the inspector\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.watch.seen()
        self._apply()

    def _apply(self) -> None:
        self.capture.enabled = not self.path.exists()

    async def follow(self) -> None:
        """Apply what another process set, for as long as the run lasts."""
        while True:
            if self.watch.due():
                self._apply()
            await anyio.sleep(WATCH_INTERVAL)
