"""WebSocket connections in the store: one ``websocket_events`` row per opening, message and
close of a captured flow's WebSocket connection.

Capture hands a :class:`WebSocketEvent` to its writer (``FlowWriter.websocket``); the writer
inserts it in the batch it writes anyway, under the flow's row (deleted with it). A row's id
grows in commit order, so the event socket follows new rows by id (:func:`events_since`), and
the API pages a flow's messages by it. A message's content is stored as capture cut it
(``truncated`` then), its ``size`` is always the whole message's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from typing import Any, Literal

Kind = Literal["open", "message", "close"]
KINDS = ("open", "message", "close")
#: A message's type by opcode, as the API names it.
TYPES = {1: "text", 2: "binary"}

MIGRATION = [
    """CREATE TABLE websocket_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_seq INTEGER NOT NULL REFERENCES flows (seq) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        direction TEXT,
        opcode INTEGER,
        size INTEGER NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        injected INTEGER NOT NULL DEFAULT 0,
        truncated INTEGER NOT NULL DEFAULT 0,
        content BLOB,
        info TEXT
    )""",
    "CREATE INDEX websocket_events_flow ON websocket_events (flow_seq, kind, id)",
]


@dataclasses.dataclass(slots=True)
class WebSocketEvent:
    """An opening (``info``: subprotocol, extensions), a message (direction "client" or
    "server", opcode 1 text or 2 binary, size, content) or a close (``info``: code, reason,
    byClient) of a flow's WebSocket connection."""

    flow_id: str
    kind: Kind
    at: float
    direction: str | None = None
    opcode: int | None = None
    size: int = 0
    injected: bool = False
    truncated: bool = False
    data: bytes = b""
    info: dict[str, Any] | None = None
    #: The row id once stored (0 before).
    id: int = 0

    def to_json(self, *, content: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "trafficId": self.flow_id, "kind": self.kind,
                               "timestamp": self.at}
        if self.kind == "message":
            out.update(direction=self.direction, type=TYPES.get(self.opcode or 0, "binary"),
                       size=self.size, injected=self.injected, truncated=self.truncated)
        elif self.kind == "close":
            out["closedBy"] = self.direction
        if self.info is not None:
            out.update(self.info)
        if content:
            text = None
            if self.opcode == 1:
                try:
                    text = self.data.decode("utf-8")
                except UnicodeDecodeError:  # cut inside a character
                    text = None
            if text is not None:
                out["content"] = text
            else:
                out["contentBase64"] = base64.b64encode(self.data).decode("ascii")
        return out


def insert(conn: sqlite3.Connection, seq: int, event: WebSocketEvent) -> None:
    conn.execute(
        "INSERT INTO websocket_events (flow_seq, kind, direction, opcode, size, at, injected, "
        "truncated, content, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, event.kind, event.direction, event.opcode, event.size, event.at,
         int(event.injected), int(event.truncated), event.data or None,
         None if event.info is None else json.dumps(event.info)))


_COLUMNS = ("e.id, f.id, e.kind, e.direction, e.opcode, e.size, e.at, e.injected, "
            "e.truncated, e.info")


def _event(row: Any, data: bytes = b"") -> WebSocketEvent:
    return WebSocketEvent(
        id=int(row[0]), flow_id=str(row[1]), kind=row[2], direction=row[3], opcode=row[4],
        size=int(row[5]), at=float(row[6]), injected=bool(row[7]), truncated=bool(row[8]),
        info=None if row[9] is None else json.loads(row[9]), data=data)


def _message_terms(direction: str | None, type_: str | None) -> tuple[str, list[Any]]:
    terms: list[str] = ["e.kind = 'message'"]
    args: list[Any] = []
    if direction is not None:
        if direction not in ("client", "server"):
            raise ValueError(f"unknown direction {direction!r}: expected client or server")
        terms.append("e.direction = ?")
        args.append(direction)
    if type_ is not None:
        opcode = {name: code for code, name in TYPES.items()}.get(type_)
        if opcode is None:
            raise ValueError(f"unknown message type {type_!r}: expected text or binary")
        terms.append("e.opcode = ?")
        args.append(opcode)
    return " AND ".join(terms), args


def list_messages(conn: sqlite3.Connection, flow_id: str, *, direction: str | None = None,
                  type_: str | None = None, after: int = 0, limit: int = 100
                  ) -> list[WebSocketEvent] | None:
    """A page of a flow's messages, oldest first, with ids above ``after`` (no content);
    None when there is no such flow."""
    row = conn.execute("SELECT seq FROM flows WHERE id = ?", (flow_id,)).fetchone()
    if row is None:
        return None
    terms, args = _message_terms(direction, type_)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM websocket_events AS e JOIN flows AS f ON f.seq = e.flow_seq "
        f"WHERE e.flow_seq = ? AND e.id > ? AND {terms} ORDER BY e.id LIMIT ?",
        (row[0], after, *args, limit)).fetchall()
    return [_event(r) for r in rows]


def count_messages(conn: sqlite3.Connection, flow_id: str, *, direction: str | None = None,
                   type_: str | None = None) -> int | None:
    row = conn.execute("SELECT seq FROM flows WHERE id = ?", (flow_id,)).fetchone()
    if row is None:
        return None
    terms, args = _message_terms(direction, type_)
    return int(conn.execute(f"SELECT count(*) FROM websocket_events AS e WHERE e.flow_seq = ? "
                            f"AND {terms}", (row[0], *args)).fetchone()[0])


def get_event(conn: sqlite3.Connection, flow_id: str, event_id: int) -> WebSocketEvent | None:
    """One event of the flow, its content included."""
    row = conn.execute(
        f"SELECT {_COLUMNS}, e.content FROM websocket_events AS e JOIN flows AS f "
        "ON f.seq = e.flow_seq WHERE e.id = ? AND f.id = ?", (event_id, flow_id)).fetchone()
    return None if row is None else _event(row, bytes(row[10] or b""))


def marker(conn: sqlite3.Connection) -> int:
    """The newest event's id (0 for none): where a follower starts."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM websocket_events").fetchone()[0])


def events_since(conn: sqlite3.Connection, after: int, limit: int
                 ) -> list[tuple[WebSocketEvent, int]]:
    """Events with ids above ``after``, oldest first, each with its flow's session id."""
    rows = conn.execute(
        f"SELECT {_COLUMNS}, f.session_id FROM websocket_events AS e JOIN flows AS f "
        "ON f.seq = e.flow_seq WHERE e.id > ? ORDER BY e.id LIMIT ?", (after, limit)).fetchall()
    return [(_event(r), int(r[10])) for r in rows]
