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
from collections.abc import Callable, Iterable, Sequence

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


#: One row of ``flow_text`` after its rowid (see :data:`COLUMNS`).
Text = tuple[str, str, str, str, str]

_INSERT_SQL = ("INSERT INTO flow_text (rowid, url, headers, request_body, response_body, notes)"
               " VALUES (?, ?, ?, ?, ?, ?)")


def flow_text(url: str, header_lists: Sequence[Sequence[Sequence[str]] | None],
              bodies: tuple[Iterable[bytes], Iterable[bytes]], encodings: tuple[str, str],
              tags: Sequence[str], comment: str, limit: int = INDEX_BODY_BYTES) -> Text:
    """The search text of a flow from its parts (``header_lists``: its heads received and
    sent, then its trailers; bodies as stored: chunks, content-coded)."""
    return (url, headers_text(*header_lists),
            searchable(decoded_prefix(bodies[0], encodings[0], limit)),
            searchable(decoded_prefix(bodies[1], encodings[1], limit)),
            notes_text(tags, comment))


def _stored_text(conn: sqlite3.Connection, seq: int, limit: int) -> Text | None:
    """A flow's search text read back from the store (bodies a chunk at a time, never whole,
    and only up to ``limit`` decoded bytes); None for a flow that is gone."""
    row = conn.execute(
        "SELECT f.url, d.request_headers, d.request_headers_sent, d.response_headers, "
        "d.response_headers_sent, d.request_trailers, d.response_trailers, "
        "f.request_body_encoding, f.response_body_encoding, f.tags, "
        "f.comment FROM flows AS f LEFT JOIN flow_details AS d ON d.seq = f.seq "
        "WHERE f.seq = ?", (seq,)).fetchone()
    if row is None:
        return None
    url, rq, rq_sent, rs, rs_sent, rq_trailers, rs_trailers, rq_enc, rs_enc, tags, comment = row
    return flow_text(url, [json.loads(h) if h else None
                           for h in (rq, rq_sent, rs, rs_sent, rq_trailers, rs_trailers)],
                     (_stored_chunks(conn, seq, 0), _stored_chunks(conn, seq, 1)),
                     (rq_enc, rs_enc), json.loads(tags), comment, limit)


def index_flow(conn: sqlite3.Connection, seq: int, limit: int = INDEX_BODY_BYTES) -> None:
    """(Re)write the search text of flow ``seq`` from its row and stored bodies."""
    text = _stored_text(conn, seq, limit)
    if text is None:
        return
    conn.execute("DELETE FROM flow_text WHERE rowid = ?", (seq,))
    conn.execute(_INSERT_SQL, (seq, *text))


def index_pending(conn: sqlite3.Connection, max_flows: int = 256,
                  limit: int = INDEX_BODY_BYTES,
                  ready: Callable[[int], Text | None] | None = None) -> int:
    """Index up to ``max_flows`` flows waiting for it, the newest ones (what was just captured
    is what someone searches for); how many. Call inside a write transaction.

    ``ready(seq)``: the text the caller already made when it stored the flow (a writer has
    its headers and bodies in memory then), or None; the others are read back.
    Within a step rows go in ascending order: b-tree pages filled in descending key order are
    left half empty, which doubled the size of the index's content table. Steps of hundreds of
    flows matter as much: FTS5 writes one segment per transaction, and merging many small ones
    cost half of the indexing time at 128 flows a step.
    """
    seqs = [seq for (seq,) in conn.execute(
        "SELECT seq FROM flows WHERE text_pending = 1 ORDER BY seq DESC LIMIT ?", (max_flows,))]
    seqs.reverse()
    rows = []
    for seq in seqs:
        text = ready(seq) if ready is not None else None
        if text is None:
            # Not made in memory (finished in a later batch, or an earlier run's): a text
            # row may exist already (an index being rebuilt).
            text = _stored_text(conn, seq, limit)
            conn.execute("DELETE FROM flow_text WHERE rowid = ?", (seq,))
        if text is not None:
            rows.append((seq, *text))
    conn.executemany(_INSERT_SQL, rows)
    conn.executemany("UPDATE flows SET text_pending = 0 WHERE seq = ?", ((s,) for s in seqs))
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
