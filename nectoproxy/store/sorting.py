"""Lists sorted by a column: the sort keys and their keyset cursors.

A sorted page is a keyset page on ``(key, seq)``: the cursor is the last row's key and seq,
and the next page holds the rows after that pair, so a flow that arrives or completes meanwhile
never shifts a page and a page deep into a million flows is as quick as the first. A column
that may be NULL (status and duration while pending, size) is sorted through ``coalesce``
with a value below every real one, so NULLs come first ascending and last descending, and the
comparisons have no NULL to trip on. Migration 4 indexes the keys per session (``flows
(session_id, <key>, seq)``; ``host`` already had one), so a page seeks the index and reads it
in order until it has enough. Each index costs the writer (the five of a first version, with
the content type, made it about a quarter slower), so only these columns sort.
"""

from __future__ import annotations

from typing import Any

#: Sort name -> (the SQL of the key over ``flows AS f``, the key's stand-in for NULL, the
#: summary's JSON field that holds it). ``time`` is arrival order (seq), the default.
SORT_KEYS: dict[str, tuple[str, Any, str]] = {
    "status": ("coalesce(f.status, -1)", -1, "status"),
    "host": ("f.host", None, "host"),
    "method": ("f.method", None, "method"),
    "size": ("coalesce(f.response_size, -1)", -1, "responseSize"),
    "duration": ("coalesce(f.duration, -1.0)", -1.0, "duration"),
}
SORTS = ("time", *SORT_KEYS)

#: A sorted list's cursor: the last row's key (as the summary's JSON has it: None for NULL)
#: and seq.
SortCursor = tuple[Any, int]


def sort_key(sort: str) -> str:
    """The SQL of ``sort``'s key (ValueError for an unknown sort)."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort {sort!r}: expected one of {', '.join(SORTS)}")
    return SORT_KEYS[sort][0]


def check_cursor(sort: str, cursor: object) -> SortCursor:
    """``cursor`` as a ``[key, seq]`` of the right types for ``sort`` (ValueError if not: it
    comes from a request)."""
    sort_key(sort)
    numeric = isinstance(SORT_KEYS[sort][1], (int, float))
    nullable = SORT_KEYS[sort][1] is not None
    if isinstance(cursor, (list, tuple)) and len(cursor) == 2:
        value, seq = cursor
        key_ok = (value is None and nullable) or (
            isinstance(value, (int, float)) if numeric else isinstance(value, str))
        if key_ok and not isinstance(value, bool) and type(seq) is int:
            return value, seq
    kind = "a number" if numeric else "a string"
    raise ValueError(f"a cursor of sort {sort} is [key, seq]: the key {kind}"
                     f"{' or null' if nullable else ''}, seq an integer")


def after(sort: str, cursor: SortCursor, descending: bool) -> list[tuple[str, list[Any], str]]:
    """The rows after ``cursor`` in this order, as two parts to be read one after the other:
    (WHERE fragment, its parameters, ORDER BY) for the rows of the cursor's key beyond its
    seq, then for the rows beyond its key. SQLite seeks an index to the start of each; a
    row-value comparison ``(key, seq) < (?, ?)`` would only seek on the key and then read
    every row of that key before the cursor (most of a session, for status 200)."""
    value, seq = cursor
    key = sort_key(sort)
    if value is None:
        value = SORT_KEYS[sort][1]
    beyond, direction = ("<", "DESC") if descending else (">", "ASC")
    return [(f"{key} = ? AND f.seq {beyond} ?", [value, seq], f"f.seq {direction}"),
            (f"{key} {beyond} ?", [value], f"{key} {direction}, f.seq {direction}")]


def cursor_of(sort: str, summary_json: dict[str, Any]) -> SortCursor:
    """The cursor after a row (its JSON summary)."""
    return summary_json[SORT_KEYS[sort][2]], int(summary_json["seq"])
