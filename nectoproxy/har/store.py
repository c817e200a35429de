"""HAR and the flow store: a session exported page by page, a HAR imported as a session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nectoproxy.har.common import (
    _PAGE,
    HarSource,
)
from nectoproxy.har.read import (
    har_entries,
    read_entry,
)
from nectoproxy.har.write import (
    har_entry,
    iter_har_json,
)
from nectoproxy.store.base import FlowStore
from nectoproxy.store.filters import Filter, parse_filter
from nectoproxy.store.records import (
    Session,
)
from nectoproxy.store.sqlite import SessionNotFound


def import_har(store: FlowStore, data: HarSource, name: str | None = None) -> Session:
    """A new session (not activated) holding every entry of a HAR document, in file order.

    ``name`` defaults to "Imported <file name>" for a path, else "Imported <date time>".
    Nothing is kept if an entry is malformed: the HarError names it, the session is removed.
    """
    entries = har_entries(data)
    if name is None:
        label = Path(data).name if isinstance(data, os.PathLike) else \
            time.strftime("%Y-%m-%d %H:%M")
        name = f"Imported {label}"[:200]
    session = store.create_session(name)
    try:
        for index, entry in enumerate(entries):
            record, request_body, response_body = read_entry(entry, index)
            record.session_id = session.id
            store.save_flow(record, request_body, response_body)
    except BaseException:
        store.delete_session(session.id)
        raise
    imported = store.get_session(session.id)
    assert imported is not None
    return imported


def iter_session_entries(store: FlowStore, session_id: int,
                         filter: str | None = None) -> Iterator[dict[str, Any]]:
    """The HAR entries of a session's flows (those matching ``filter``), oldest first, a page
    of flows at a time. The session and the filter are checked at once."""
    if store.get_session(session_id) is None:
        raise SessionNotFound(f"no session {session_id}")
    parsed = parse_filter(filter)
    return _entries(store, session_id, parsed)


def _entries(store: FlowStore, session_id: int, parsed: Filter) -> Iterator[dict[str, Any]]:
    cursor: int | None = None
    while True:
        page, cursor = store.list_flows(session_id=session_id, filter=parsed, limit=_PAGE,
                                        cursor=cursor, order="oldest")
        for summary in page:
            record = store.get_flow(summary.id)
            if record is None:
                continue  # deleted while we were reading
            request = store.get_body(summary.id, "request")
            response = store.get_body(summary.id, "response")
            yield har_entry(record, None if request is None else request[0],
                            None if response is None else response[0])
        if cursor is None:
            return


def export_session(store: FlowStore, session_id: int,
                   filter: str | None = None) -> Iterator[str]:
    """A session as a HAR document, in pieces (see :func:`iter_har_json`): memory stays flat
    however many flows it has. SessionNotFound / FilterError are raised at once."""
    from nectoproxy import __version__

    entries = iter_session_entries(store, session_id, filter)
    session = store.get_session(session_id)
    comment = f"NectoProxy session {session_id}: {session.name}" if session else ""
    return iter_har_json(entries, version=__version__, comment=comment)
