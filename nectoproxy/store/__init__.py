"""The flow store: every captured flow in SQLite, in named sessions, queryable.

Capture writes through a :class:`CaptureWriter` (a thread per process; the event loop never
waits for the disk), the API reads through a :class:`FlowStore` (today :class:`SQLiteStore`),
and both speak the filter language of :func:`parse_filter`. See docs/store.md.
"""

from __future__ import annotations

from nectoproxy.store.base import (
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FLOWS,
    UNSET,
    FlowStore,
)
from nectoproxy.store.filters import Filter, FilterError, parse_filter
from nectoproxy.store.process import ProcessWriter
from nectoproxy.store.records import (
    DIRECTIONS,
    MARK_COLOURS,
    Changes,
    Direction,
    FlowRecord,
    FlowSummary,
    HeaderList,
    Pruned,
    Session,
    Stats,
    Timings,
    TlsInfo,
    new_flow_id,
)
from nectoproxy.store.schema import SCHEMA_VERSION, SchemaVersionError, StoreError
from nectoproxy.store.sqlite import SessionNotFound, SQLiteStore
from nectoproxy.store.writer import (
    DEFAULT_MAX_QUEUED_BYTES,
    CaptureWriter,
    FlowWriter,
    WriterStats,
)
from nectoproxy.store.wsframes import WebSocketEvent

__all__ = [
    "DEFAULT_MAX_AGE_DAYS",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FLOWS",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DIRECTIONS",
    "MARK_COLOURS",
    "SCHEMA_VERSION",
    "UNSET",
    "CaptureWriter",
    "Changes",
    "Direction",
    "Filter",
    "FilterError",
    "FlowRecord",
    "FlowStore",
    "FlowSummary",
    "FlowWriter",
    "HeaderList",
    "ProcessWriter",
    "Pruned",
    "SQLiteStore",
    "SchemaVersionError",
    "Session",
    "SessionNotFound",
    "Stats",
    "StoreError",
    "Timings",
    "TlsInfo",
    "WebSocketEvent",
    "WriterStats",
    "new_flow_id",
    "parse_filter",
]
