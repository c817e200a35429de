"""The text a flow is searched by: its URL, header lines, body prefixes and annotations.

Each finished flow gets one row in ``flow_text`` (rowid = the flow's seq). With FTS5 that table
is a trigram index, so a substring search reads a few index pages instead of every body. Only
the first :data:`INDEX_BODY_BYTES` of each body are indexed, decoded from gzip or deflate when
stored that way, and bodies that look binary not at all: tokenizing megabytes of every
response would make the writer, not the disk, the bottleneck of capture. The filter language's
Python side uses the same functions, so ``body:`` means the same text in SQL and in Python.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Sequence

#: The columns of ``flow_text``, after its rowid.
COLUMNS = ("url", "headers", "request_body", "response_body", "notes")

#: How much of each body (decoded) the search index holds.
INDEX_BODY_BYTES = 64 * 1024

_DIRECTION_CODES = {"request": 0, "response": 1}


def headers_text(*header_lists: Sequence[Sequence[str]] | None) -> str:
    """``Name: value`` lines of every list given (received and sent), each distinct list once."""
    seen: list[Sequence[Sequence[str]]] = []
    lines: list[str] = []
    for fields in header_lists:
        if not fields or fields in seen:
            continue
        seen.append(fields)
        lines.extend(f"{name}: {value}" for name, value in fields)
    return "\n".join(lines)


def decoded_prefix(chunks: Iterable[bytes], encoding: str, limit: int) -> bytes:
    """The first ``limit`` bytes of a body given in chunks, content-decoded when it is gzip
    or deflate; b"" for other codings (brotli, zstd) and for a corrupt stream."""
    encoding = encoding.strip().lower()
    out = bytearray()
    if encoding in ("", "identity"):
        for chunk in chunks:
            out += chunk[: limit - len(out)]
            if len(out) >= limit:
                break
        return bytes(out)
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    else:
        return b""
    try:
        for chunk in chunks:
            out += decoder.decompress(chunk, limit - len(out))
            if len(out) >= limit or decoder.eof:
                break
    except zlib.error:
        return bytes(out)
    return bytes(out)


def searchable(raw: bytes) -> str:
    """A body's text for searching, or "" when it looks binary (a NUL in its first KiB)."""
    if b"\x00" in raw[:1024]:
        return ""
    return raw.decode("utf-8", "replace")


def body_text(data: bytes | str | None, encoding: str = "",
              limit: int = INDEX_BODY_BYTES) -> str:
    """What ``body:`` sees of a body held in memory (the Python side of the filters)."""
    if data is None:
        return ""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    return searchable(decoded_prefix([data], encoding, limit))


def _stored_chunks(conn: sqlite3.Connection, seq: int, direction: int) -> Iterable[bytes]:
    cursor = conn.execute("SELECT data FROM bodies WHERE flow_seq = ? AND direction = ? "
                          "ORDER BY seq", (seq, direction))
    for (data,) in cursor:
        yield bytes(data)


def index_flow(conn: sqlite3.Connection, seq: int, limit: int = INDEX_BODY_BYTES) -> None:
    """(Re)write the search text of flow ``seq`` from its row and stored bodies.

    Bodies are read back from the store a chunk at a time, never whole, and only up to
    ``limit`` decoded bytes.
    """
    row = conn.execute(
        "SELECT f.url, d.request_headers, d.request_headers_sent, d.response_headers, "
        "d.response_headers_sent, f.request_body_encoding, f.response_body_encoding, f.tags, "
        "f.comment FROM flows AS f LEFT JOIN flow_details AS d ON d.seq = f.seq "
        "WHERE f.seq = ?", (seq,)).fetchone()
    if row is None:
        return
    url, rq, rq_sent, rs, rs_sent, rq_enc, rs_enc, tags, comment = row
    headers = headers_text(*(json.loads(h) if h else None for h in (rq, rq_sent, rs, rs_sent)))
    request_body = searchable(decoded_prefix(_stored_chunks(conn, seq, 0), rq_enc, limit))
    response_body = searchable(decoded_prefix(_stored_chunks(conn, seq, 1), rs_enc, limit))
    conn.execute("DELETE FROM flow_text WHERE rowid = ?", (seq,))
    conn.execute("INSERT INTO flow_text (rowid, url, headers, request_body, response_body, notes)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (seq, url, headers, request_body, response_body,
                  notes_text(json.loads(tags), comment)))


def index_pending(conn: sqlite3.Connection, max_flows: int = 256,
                  limit: int = INDEX_BODY_BYTES) -> int:
    """Index up to ``max_flows`` flows waiting for it, the newest ones (what was just captured
    is what someone searches for); how many. Call inside a write transaction.

    Within a step rows go in ascending order: b-tree pages filled in descending key order are
    left half empty, which doubled the size of the index's content table.
    """
    seqs = [seq for (seq,) in conn.execute(
        "SELECT seq FROM flows WHERE text_pending = 1 ORDER BY seq DESC LIMIT ?", (max_flows,))]
    for seq in reversed(seqs):
        index_flow(conn, seq, limit)
        conn.execute("UPDATE flows SET text_pending = 0 WHERE seq = ?", (seq,))
    return len(seqs)


def notes_text(tags: Sequence[str], comment: str) -> str:
    return "\n".join([*tags, comment]) if comment else "\n".join(tags)


def update_notes(conn: sqlite3.Connection, seq: int, tags: Sequence[str], comment: str) -> None:
    """Annotations changed: only the notes column moves (a no-op for unfinished flows)."""
    conn.execute("UPDATE flow_text SET notes = ? WHERE rowid = ?",
                 (notes_text(tags, comment), seq))


def direction_code(direction: str) -> int:
    try:
        return _DIRECTION_CODES[direction]
    except KeyError:
        raise ValueError(f"direction must be 'request' or 'response', not {direction!r}") from None
