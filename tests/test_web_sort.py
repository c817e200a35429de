"""Sorted traffic lists (``GET /api/traffic?sort=``): keyset pages on (key, seq) that page a
session both ways without gaps or repeats, with ties and NULLs, and the indexes they read."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_support import WebServer

from nectoproxy.store import SQLiteStore
from nectoproxy.store.sorting import SORT_KEYS, after


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer(tmp_path) as server:
        rng = random.Random(7)
        for i in range(57):
            pending = i % 9 == 0  # status, size and duration NULL: they sort lowest
            server.save(status=None if pending else rng.choice([200, 200, 204, 404, 500]),
                        host=rng.choice(["a.test", "b.test", "c.test"]),
                        method=rng.choice(["GET", "POST"]),
                        response_size=None if pending else rng.choice([0, 10, 10, 300]),
                        duration=None if pending else rng.choice([1.5, 2.0, 2.0, 40.0]),
                        content_type=None if i % 5 == 0 else rng.choice(["text/html", "image/png"]),
                        started_at=1000.0 + i)
        yield server


def _key(sort: str, entry: dict[str, Any]) -> tuple[Any, int]:
    field, stand_in = SORT_KEYS[sort][2], SORT_KEYS[sort][1]
    value = entry[field]
    return (stand_in if value is None else value), entry["seq"]


def _pages(client: httpx.Client, sort: str, order: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):  # bounded
        params: dict[str, Any] = {"sort": sort, "order": order, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        answer = client.get("/api/traffic", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        cursor = page["next"]
        if cursor is None:
            return entries
        assert isinstance(cursor, str)
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", sorted(SORT_KEYS))
def test_sorted_pages_cover_the_session_once_in_order_both_ways(web: WebServer,
                                                                sort: str) -> None:
    with web.client() as client:
        everything = client.get("/api/traffic", params={"limit": 1000}).json()["entries"]
        expected = sorted(everything, key=lambda e: _key(sort, e))
        for limit in (1, 4, 10):
            up = _pages(client, sort, "oldest", limit)
            assert [e["id"] for e in up] == [e["id"] for e in expected]
            down = _pages(client, sort, "newest", limit)
            assert [e["id"] for e in down] == [e["id"] for e in reversed(expected)]


def test_a_cursor_built_from_a_row_pages_on_from_it_and_nulls_sort_lowest(
        web: WebServer) -> None:
    with web.client() as client:
        ascending = _pages(client, "status", "oldest", 1000)
        assert ascending[0]["status"] is None  # pending flows first
        assert ascending[-1]["status"] == max(e["status"] or 0 for e in ascending)
        # A client forms the cursor from any row it holds: [the row's key, its seq]
        for index in (0, 3, 20, len(ascending) - 2):
            row = ascending[index]
            cursor = json.dumps([row["status"], row["seq"]])
            for order, following in (("oldest", ascending[index + 1:]),
                                     ("newest", ascending[:index][::-1])):
                page = client.get("/api/traffic", params={
                    "sort": "status", "order": order, "cursor": cursor, "limit": 5}).json()
                assert [e["id"] for e in page["entries"]] == [e["id"] for e in following[:5]]


def test_a_sorted_page_with_a_filter_and_new_flows_meanwhile(web: WebServer) -> None:
    with web.client() as client:
        first = client.get("/api/traffic", params={
            "sort": "host", "order": "oldest", "limit": 5, "filter": "method:GET"}).json()
        web.save(host="a.test", method="GET", started_at=5000.0)  # sorts into page one
        rest = _pages_from(client, first["next"], {"sort": "host", "order": "oldest",
                                                   "filter": "method:GET", "limit": 7})
        seen = [e["id"] for e in first["entries"] + rest]
        assert len(seen) == len(set(seen))
        hosts = [(e["host"], e["seq"]) for e in first["entries"] + rest]
        assert hosts == sorted(hosts)
        assert {e["method"] for e in first["entries"] + rest} == {"GET"}


def test_a_sorted_search_pages_its_matches_in_order(web: WebServer) -> None:
    for n in range(12):
        web.save(url=f"http://needle.test/{n}", host="needle.test", path=f"/{n}",
                 status=(500, 200, None)[n % 3], body_response=b"a needle in it")
    web.store.index_pending()
    with web.client() as client:
        first = client.get("/api/traffic", params={
            "sort": "status", "search": "needle", "limit": 5}).json()
        rest = _pages_from(client, first["next"], {"sort": "status", "search": "needle",
                                                   "limit": 5})
    found = first["entries"] + rest
    assert len(found) == 12 and {e["host"] for e in found} == {"needle.test"}
    assert [_key("status", e) for e in found] == sorted((_key("status", e) for e in found),
                                                         reverse=True)


def _pages_from(client: httpx.Client, cursor: str | None,
                params: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for _ in range(100):
        if cursor is None:
            return entries
        page = client.get("/api/traffic", params={**params, "cursor": cursor}).json()
        entries += page["entries"]
        cursor = page["next"]
    raise AssertionError("paging did not end")


def test_a_jump_to_a_position_starts_a_page_there_and_pages_on(web: WebServer) -> None:
    with web.client() as client:
        ascending = _pages(client, "duration", "oldest", 1000)
        for position in (0, 7, 30, len(ascending) - 1, len(ascending) + 5):
            page = client.get("/api/traffic", params={
                "sort": "duration", "order": "oldest", "position": position, "limit": 4}).json()
            assert [e["id"] for e in page["entries"]] == \
                [e["id"] for e in ascending[position:position + 4]]
            rest = _pages_from(client, page["next"], {"sort": "duration", "order": "oldest",
                                                      "limit": 9})
            assert [e["id"] for e in page["entries"] + rest] == \
                [e["id"] for e in ascending[position:]]
        down = client.get("/api/traffic", params={"sort": "duration", "position": 3,
                                                   "limit": 2}).json()
        assert [e["id"] for e in down["entries"]] == [e["id"] for e in ascending[::-1][3:5]]


@pytest.mark.parametrize(("params", "message"), [
    ({"sort": "colour"}, "sort must be one of time, status"),
    ({"sort": "status", "cursor": "12"}, "cursor: a cursor of sort status is [key, seq]"),
    ({"sort": "status", "cursor": '["x", 3]'}, "the key a number or null"),
    ({"sort": "host", "cursor": "[null, 3]"}, "the key a string, seq"),
    ({"sort": "host", "cursor": '["a", 1.5]'}, "seq an integer"),
    ({"sort": "size", "cursor": "[1,"}, "cursor:"),
    ({"position": "3"}, "position is for a sorted list"),
    ({"sort": "size", "position": "3", "cursor": "[1, 2]"}, "instead of a cursor"),
    ({"sort": "size", "position": "-1"}, "position must be at least 0"),
])
def test_bad_sorts_and_cursors_are_400(web: WebServer, params: dict[str, str],
                                       message: str) -> None:
    with web.client() as client:
        answer = client.get("/api/traffic", params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


@pytest.mark.parametrize("sort", sorted(SORT_KEYS))
def test_each_part_of_a_sorted_page_seeks_an_index(tmp_path: Path, sort: str) -> None:
    store = SQLiteStore(tmp_path / "flows.db")
    try:
        store.start_run()
        stand_in = SORT_KEYS[sort][1]
        cursor = (stand_in if stand_in is not None else "m", 10)
        (same, same_args, same_order), (beyond, beyond_args, beyond_order) = after(
            sort, cursor, descending=True)
        for clause, args, order_by, seek in ((same, same_args, same_order, "=? AND seq<?)"),
                                             (beyond, beyond_args, beyond_order, "<?)")):
            plan = store._read().execute(
                f"EXPLAIN QUERY PLAN SELECT f.id FROM flows AS f WHERE f.session_id = ? AND "
                f"{clause} ORDER BY {order_by} LIMIT 10", (1, *args)).fetchall()
            text = " ".join(str(row[-1]) for row in plan)
            assert "INDEX flows_" in text and seek in text and "TEMP B-TREE" not in text, text
    finally:
        store.close()
