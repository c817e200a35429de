"""A HAR file that is complete, valid JSON after every entry.

The file is written as ``{"log": {..., "entries": [`` + entries + ``]}}``, in the pieces of
:func:`nectoproxy.har.iter_har_json` (the head, the entries, the tail). Each new entry is
written over the closing brackets, together with a fresh copy of them, in one ``write`` call,
and flushed to the operating system at once. So whatever happens to the proxy afterwards
(crash, ``kill -9``, Ctrl-C), the file on disk holds every entry completed so far and parses.

Limits, for the record: Linux may stop a write to a regular file between pages when the
process receives SIGKILL, so a kill landing inside the ``write`` of a large entry can leave
that entry half-written (the earlier ones stay intact); a reader reading while an entry is
being written may see it half-copied and should retry; and a crash of the machine itself can
lose what the kernel had not written yet (that would take an fsync per flow).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

from nectoproxy.har import HAR_TAIL, entry_json, har_head

CLOSING = HAR_TAIL.encode("utf-8")


class HarWriter:
    """Appends entries to one HAR file; thread-safe (entries are written from worker threads)."""

    def __init__(self, path: Path, creator: dict[str, str], comment: str = "") -> None:
        self.path = path
        self.creator = creator
        self.comment = comment
        self.entries = 0
        self._file: IO[bytes] | None = None
        self._end = 0  # where the closing brackets start
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the file (and its directory) with an empty entry list."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = har_head(creator=self.creator["name"], version=self.creator["version"],
                         comment=self.comment).encode("utf-8")
        with self._lock:
            # "xb": never clobber a file that appeared since the name was chosen.
            self._file = self.path.open("xb", buffering=0)
            self._write_at(0, start + CLOSING)
            self._end = len(start)

    def append(self, entry: dict[str, Any]) -> bool:
        """Add one entry; False if the file is already closed."""
        data = entry_json(entry).encode("utf-8")
        with self._lock:
            if self._file is None:
                return False
            chunk = (b",\n" if self.entries else b"\n") + data
            self._write_at(self._end, chunk + CLOSING)
            self._end += len(chunk)
            self.entries += 1
            return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def _write_at(self, offset: int, data: bytes) -> None:
        assert self._file is not None
        self._file.seek(offset)
        view = memoryview(data)
        while view:  # an unbuffered file may write less than asked (rarely, on regular files)
            written = self._file.write(view)
            if not written:
                raise OSError(f"cannot write to {self.path}")
            view = view[written:]
