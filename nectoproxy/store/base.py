"""The interface capture, the API and the CLI use, so another backend can replace SQLite.

Everything above the store speaks only this class. A PostgreSQL backend would implement these
methods (and a writer with :class:`~nectoproxy.store.writer.CaptureWriter`'s non-blocking
methods); the filter language would compile to its SQL through the same term classes, since
they emit standard SQL apart from ``regexp()``, ``json_each`` and the text index.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Sequence
from typing import Self

from nectoproxy.store.filters import Filter
from nectoproxy.store.records import (
    Changes,
    Direction,
    FlowRecord,
    FlowSummary,
    Pruned,
    Session,
    Stats,
)
from nectoproxy.store.sorting import SortCursor
from nectoproxy.store.wsframes import WebSocketEvent

#: Retention defaults that keep a laptop's disk safe (``max_bytes`` is the database's size).
DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_MAX_FLOWS = 1_000_000
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Bytes stored of one body; the rest is dropped and the body marked truncated.
DEFAULT_MAX_BODY_SIZE = 10 * 1024**2

Order = str  # "newest" or "oldest"


class Unset(enum.Enum):
    """The default of ``annotate``'s arguments: "leave as it is" (None clears a mark)."""

    UNSET = 0


UNSET = Unset.UNSET


class FlowStore(abc.ABC):
    """Sessions of captured flows, their bodies, queries, a changes feed and retention."""

    # -- sessions ------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_session(self, name: str) -> Session:
        """A new, inactive session."""

    @abc.abstractmethod
    def list_sessions(self) -> list[Session]:
        """Every session, newest first, with its flow count and stored bytes."""

    @abc.abstractmethod
    def get_session(self, session_id: int) -> Session | None: ...

    @abc.abstractmethod
    def find_session(self, ref: int | str) -> Session | None:
        """A session by id, or by name (the newest of that name); a digit string may be
        either, the name winning."""

    @abc.abstractmethod
    def rename_session(self, session_id: int, name: str) -> Session: ...

    @abc.abstractmethod
    def delete_session(self, session_id: int) -> bool:
        """Delete a session with its flows and bodies (in small batches). Deleting the active
        session activates the newest other one, or a new one when none is left."""

    @abc.abstractmethod
    def activate_session(self, session_id: int) -> Session:
        """Make this the session new flows go to (in every process writing the store)."""

    @abc.abstractmethod
    def active_session(self) -> Session:
        """The active session; one is created if the store has none."""

    @abc.abstractmethod
    def start_run(self, continue_session: int | str | None = None) -> Session:
        """What a proxy run calls once at start: continue the session given (id or name), or
        create and activate "Run YYYY-MM-DD HH:MM"."""

    # -- flows ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def save_flow(self, record: FlowRecord, request_body: bytes | None = None,
                  response_body: bytes | None = None) -> FlowRecord:
        """Store a complete flow synchronously (imports, replays, tests); capture uses the
        writer instead. Returns the record as stored (with ``seq`` and ``session_id``)."""

    @abc.abstractmethod
    def list_flows(self, session_id: int | None = None, filter: str | Filter | None = None,
                   search: str | None = None, limit: int = 100, cursor: int | None = None,
                   order: Order = "newest") -> tuple[list[FlowSummary], int | None]:
        """A page of flows of a session (None: the active one), matching the filter and
        containing ``search`` (a substring of URL, headers, bodies or annotations). ``cursor``
        is the ``next_cursor`` of the previous page; it is None after the last page."""

    @abc.abstractmethod
    def list_sorted(self, sort: str, session_id: int | None = None,
                    filter: str | Filter | None = None, search: str | None = None,
                    limit: int = 100, cursor: SortCursor | None = None,
                    order: Order = "newest", position: int | None = None,
                    ) -> tuple[list[FlowSummary], SortCursor | None]:
        """:meth:`list_flows` sorted by a column (``nectoproxy.store.sorting.SORT_KEYS``:
        status, host, method, size, duration, type), ties in seq order; ``newest`` is
        descending, ``oldest`` ascending, and a NULL sorts below every value. ``cursor`` is the
        ``[key, seq]`` of the last row of the previous page (``next_cursor``); ``position``
        instead (a jump) starts the page at that 0-based position."""

    @abc.abstractmethod
    def get_flow(self, flow_id: str) -> FlowRecord | None:
        """Everything about a flow except its bodies."""

    @abc.abstractmethod
    def get_body(self, flow_id: str, direction: Direction) -> tuple[bytes, bool] | None:
        """A stored body and whether it was truncated; None for an unknown flow."""

    @abc.abstractmethod
    def iter_body(self, flow_id: str, direction: Direction) -> Iterator[bytes]:
        """A stored body chunk by chunk, for bodies too large to hold at once."""

    @abc.abstractmethod
    def delete_flow(self, flow_id: str) -> bool: ...

    @abc.abstractmethod
    def delete_session_flows(self, session_id: int) -> int:
        """Delete every flow of a session (in small batches); returns how many."""

    @abc.abstractmethod
    def annotate(self, flow_id: str, *, mark: str | None | Unset = UNSET,
                 tags: Sequence[str] | Unset = UNSET,
                 comment: str | Unset = UNSET) -> FlowSummary | None:
        """Set a flow's mark (one of MARK_COLOURS, or None to clear), tags and comment."""

    @abc.abstractmethod
    def stats(self, session_id: int | None = None, filter: str | Filter | None = None,
              top: int = 10) -> Stats: ...

    # -- WebSocket connections (see store.wsframes) ---------------------------------------------

    @abc.abstractmethod
    def websocket_messages(self, flow_id: str, *, direction: str | None = None,
                           type_: str | None = None, after: int = 0, limit: int = 100
                           ) -> list[WebSocketEvent] | None:
        """A page of a flow's WebSocket messages, oldest first, ids above ``after``, without
        content; ``direction`` "client"/"server" and ``type_`` "text"/"binary" filter
        (ValueError for others). None for an unknown flow."""

    @abc.abstractmethod
    def websocket_message_count(self, flow_id: str, *, direction: str | None = None,
                                type_: str | None = None) -> int | None: ...

    @abc.abstractmethod
    def websocket_event(self, flow_id: str, event_id: int) -> WebSocketEvent | None:
        """One opening, message or close of the flow's WebSocket connection, with content."""

    @abc.abstractmethod
    def websocket_marker(self) -> int:
        """Where a follower of WebSocket events starts (the newest event's id)."""

    @abc.abstractmethod
    def websocket_events_since(self, after: int, limit: int = 1000
                               ) -> list[tuple[WebSocketEvent, int]]:
        """Events of every flow with ids above ``after``, oldest first, with their flow's
        session id."""

    # -- live changes and housekeeping ----------------------------------------------------------

    @abc.abstractmethod
    def current_marker(self) -> int:
        """Where a changes feed starts: ``changes_since(current_marker())`` is empty."""

    @abc.abstractmethod
    def changes_since(self, marker: int, limit: int = 1000) -> Changes:
        """Flows added, updated or deleted by any process since ``marker``, oldest change
        first; pass the returned ``marker`` to the next call."""

    @abc.abstractmethod
    def enforce_retention(self, max_age_days: float | None = DEFAULT_MAX_AGE_DAYS,
                          max_flows: int | None = DEFAULT_MAX_FLOWS,
                          max_bytes: int | None = DEFAULT_MAX_BYTES) -> Pruned:
        """Delete the oldest flows (whole, with bodies) until none is older than
        ``max_age_days``, at most ``max_flows`` remain, and the store's pages in use fit in
        ``max_bytes``; None turns a limit off. Works in small transactions."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
