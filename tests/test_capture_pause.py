"""Pausing capture through the API (``/api/capture``) on a real ``nectoproxy`` with two worker
processes: paused, flows are proxied and not stored, in every worker within a second; resumed,
they are stored again; a restart resumes. And ``/api/filter``, the filter language's words."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from test_live_settings import APPLIED_WITHIN, Running, nectoproxy, wait_for
from test_web_support import WebServer

from nectoproxy.store.filters import ALIASES, FIELDS, FLAG_ALIASES, parse_filter
from nectoproxy.store.filterterms import FLAGS

REQUESTS = 20  # each on a new connection, so both workers serve some


def stored(api: httpx.Client) -> int:
    session = api.get("/api/sessions/active").json()["id"]
    return int(api.get(f"/api/traffic/stats/{session}").json()["total"])


def send(proxy: Running, url: str) -> None:
    assert {proxy.get(url).status_code for _ in range(REQUESTS)} == {200}


def settled(api: httpx.Client, expected: int) -> int:
    """The store's count once it reached ``expected`` (or stopped short of it) and held."""
    wait_for(lambda: stored(api) >= expected, 10)
    time.sleep(0.5)  # anything more on its way would have arrived by now
    return stored(api)


def test_pause_stops_storing_in_every_worker_and_resume_starts_again(tmp_path: Path,
                                                                     origin: Any) -> None:
    url = origin.url + "/json"
    with nectoproxy(tmp_path, workers=2) as proxy, proxy.api() as api:
        assert api.get("/api/capture").json() == {"paused": False}
        send(proxy, url)
        assert settled(api, REQUESTS) == REQUESTS

        answer = api.put("/api/capture", json={"paused": True})
        assert answer.status_code == 200 and answer.json() == {"paused": True}
        status = api.get("/api/status").json()
        assert status["paused"] is True and status["capturing"] is False
        time.sleep(APPLIED_WITHIN)
        send(proxy, url)  # proxied normally...
        assert settled(api, REQUESTS + 1) == REQUESTS  # ...and stored by no worker

        assert api.put("/api/capture", json={"paused": False}).json() == {"paused": False}
        assert api.get("/api/status").json()["paused"] is False
        time.sleep(APPLIED_WITHIN)
        send(proxy, url)
        assert settled(api, 2 * REQUESTS) == 2 * REQUESTS

        api.put("/api/capture", json={"paused": True})
    # A pause does not outlive the run (as Charles' recording switch).
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        assert api.get("/api/capture").json() == {"paused": False}
        assert api.get("/api/status").json()["capturing"] is True
        before = stored(api)
        send(proxy, url)
        assert settled(api, before + REQUESTS) == before + REQUESTS


def test_capture_state_is_validated_and_needs_a_capture(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        for body in ({"paused": "yes"}, {}, {"paused": True, "more": 1}, [True]):
            answer = api.put("/api/capture", json=body)
            assert answer.status_code == 400, body
        assert api.get("/api/capture").json() == {"paused": False}
    (tmp_path / "bare").mkdir()
    with WebServer(tmp_path / "bare") as web, web.client() as client:
        answer = client.get("/api/capture")
        assert answer.status_code == 503 and "nothing captures" in answer.json()["error"]


def test_the_filter_language_lists_what_the_parser_accepts(tmp_path: Path) -> None:
    with WebServer(tmp_path) as web, web.client() as client:
        language = client.get("/api/filter").json()
        doc = client.get("/api/openapi.json").json()
    assert [f["name"] for f in language["fields"]] == list(FIELDS)
    assert all(f["description"] for f in language["fields"])
    assert language["flags"] == list(FLAGS)
    assert language["aliases"] == [*ALIASES, *FLAG_ALIASES]
    assert "red" in language["marks"] and language["operators"] == ["and", "or", "not"]
    assert language["sorts"][0] == "time" and "status" in language["sorts"]
    for flag in language["flags"]:
        parse_filter(f"is:{flag}")  # every one suggested parses
    examples = {"mark": "red", "marked": "red", "status": "200", "is": "error"}
    for field in language["fields"]:
        parse_filter(f"{field['name']}:{examples.get(field['name'], 'x')}")
    assert "/api/filter" in doc["paths"] and "/api/capture" in doc["paths"]
    assert set(doc["paths"]["/api/capture"]) == {"get", "put"}
