"""The inspector's REST API over real sockets: every endpoint with httpx against ``serve_web``
on 127.0.0.1, a store in tmp_path; answers checked against the API's own OpenAPI schemas."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from test_web_support import WebServer, record, sha, wait_for

from nectoproxy.store import SQLiteStore

brotli = pytest.importorskip("brotli")
zstandard = pytest.importorskip("zstandard")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    status = {"capturing": True, "flowsWritten": 7}
    with WebServer(tmp_path, status=lambda: status) as server:
        yield server


@pytest.fixture
def client(web: WebServer) -> Iterator[httpx.Client]:
    with web.client() as c:
        yield c


@pytest.fixture(scope="module")
def openapi_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with WebServer(tmp_path_factory.mktemp("openapi")) as server, server.client() as c:
        doc = c.get("/api/openapi.json").json()
    assert isinstance(doc, dict)
    return doc


def check(doc: dict[str, Any], method: str, path: str, response: httpx.Response) -> Any:
    """``response``'s JSON, validated against what the OpenAPI document says of it."""
    operation = doc["paths"][path][method.lower()]
    reply = operation["responses"][str(response.status_code)]
    schema = reply["content"]["application/json"]["schema"]
    data = response.json()
    jsonschema.validate(data, {"components": doc["components"], "allOf": [schema]},
                        cls=jsonschema.Draft202012Validator)
    return data


# -- traffic --------------------------------------------------------------------------------


def test_list_traffic_pages_orders_and_filters(web: WebServer, client: httpx.Client,
                                               openapi_doc: dict[str, Any]) -> None:
    saved = [web.save(status=200, started_at=1000.0 + i) for i in range(5)]
    saved.append(web.save(method="POST", status=404, host="other.test", started_at=2000.0,
                          url="http://other.test/x"))
    saved.append(web.save(status=503, error="upstream failed", started_at=2001.0))

    page = check(openapi_doc, "GET", "/api/traffic", client.get("/api/traffic"))
    assert [e["id"] for e in page["entries"]] == [r.id for r in reversed(saved)]
    assert page["next"] is None
    first = page["entries"][-1]
    for key in ("id", "sessionId", "method", "url", "host", "path", "status", "contentType",
                "requestSize", "responseSize", "startedAt", "duration", "error"):
        assert key in first

    ids: list[str] = []
    cursor: int | None = None
    for _ in range(10):  # bounded paging
        params: dict[str, Any] = {"limit": 3, "order": "oldest"}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/api/traffic", params=params).json()
        ids += [e["id"] for e in page["entries"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert ids == [r.id for r in saved]

    def listed(**params: Any) -> list[str]:
        response = client.get("/api/traffic", params=params)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["entries"]]

    assert listed(filter="status:4xx") == [saved[5].id]
    assert listed(filter="is:error") == [saved[6].id]
    assert listed(filter="not host:api.example.test") == [saved[5].id]
    assert listed(methods="post,PUT") == [saved[5].id]  # the original API's parameters
    assert listed(statusCodes="404,503") == [saved[6].id, saved[5].id]
    assert listed(hosts="other.test", filter="method:POST") == [saved[5].id]
    assert listed(sessionId=web.session.id, limit=5000)[:1] == [saved[6].id]  # cut to 1000

    other = web.store.create_session("other")
    web.store.save_flow(record(session_id=other.id))
    assert len(listed(sessionId=other.id)) == 1
    assert client.get("/api/traffic", params={"sessionId": 999}).status_code == 404
    for bad in ({"limit": "ten"}, {"limit": 0}, {"order": "sideways"}, {"offset": 20},
                {"cursor": "x"}):
        response = client.get("/api/traffic", params=bad)
        assert response.status_code == 400, bad
        check(openapi_doc, "GET", "/api/traffic", response)


@pytest.mark.parametrize(("expression", "position", "words"), [
    ("status:4x4", 7, "invalid status"),
    ("host:a and (method:GET", 11, "unclosed"),
    ("~zz", 0, "unknown filter"),
    ('url:"("', 4, "regular expression"),
])
def test_filter_syntax_error_is_400_with_position(client: httpx.Client, expression: str,
                                                  position: int, words: str,
                                                  openapi_doc: dict[str, Any]) -> None:
    response = client.get("/api/traffic", params={"filter": expression})
    assert response.status_code == 400
    data = check(openapi_doc, "GET", "/api/traffic", response)
    assert data["position"] == position and words in data["error"], data
    stats = client.get("/api/traffic/stats/1", params={"filter": expression})
    assert stats.status_code == 400 and stats.json()["position"] == position
    bad_shorthand = client.get("/api/traffic", params={"statusCodes": "200,4x4"})
    assert bad_shorthand.status_code == 400
    assert bad_shorthand.json()["parameter"] == "statusCodes"


def test_search_finds_text_in_bodies_and_headers(web: WebServer, client: httpx.Client,
                                                  openapi_doc: dict[str, Any]) -> None:
    hit = web.save(None, b'{"user": "zebra-crossing-42"}')
    header_hit = web.save(request_headers=[("Host", "api.example.test"),
                                           ("X-Trace", "zebra-crossing-42")])
    web.save(None, b'{"user": "nobody"}')
    response = client.get("/api/traffic/search", params={"q": "ZEBRA-crossing"})
    found = check(openapi_doc, "GET", "/api/traffic/search", response)
    assert {e["id"] for e in found["entries"]} == {hit.id, header_hit.id}
    also = client.get("/api/traffic", params={"search": "zebra-crossing-42"}).json()
    assert {e["id"] for e in also["entries"]} == {hit.id, header_hit.id}
    narrowed = client.get("/api/traffic/search", params={"q": "zebra", "filter": "body:zebra"})
    assert [e["id"] for e in narrowed.json()["entries"]] == [hit.id]
    assert client.get("/api/traffic/search").status_code == 400


def test_stats(web: WebServer, client: httpx.Client, openapi_doc: dict[str, Any]) -> None:
    web.save(status=200)
    web.save(status=201, method="POST")
    web.save(status=404, host="other.test")
    path = f"/api/traffic/stats/{web.session.id}"
    data = check(openapi_doc, "GET", "/api/traffic/stats/{sessionId}", client.get(path))
    assert data["total"] == 3
    assert data["methods"] == {"GET": 2, "POST": 1}
    assert data["statusClasses"]["2xx"] == 2 and data["statusClasses"]["4xx"] == 1
    assert {"host": "api.example.test", "count": 2} in data["hosts"]
    assert client.get(path, params={"filter": "status:2xx"}).json()["total"] == 2
    assert client.get("/api/traffic/stats/999").status_code == 404
    assert client.get("/api/traffic/stats/abc").status_code == 404


def test_one_flow_is_the_whole_record_without_bodies(web: WebServer, client: httpx.Client,
                                                     openapi_doc: dict[str, Any]) -> None:
    saved = web.save(b"request body", b"response body", tls_server={"sni": "a", "not_after":
                                                                     "2030-01-01T00:00:00Z"},
                     modified_by=["rules"], request_headers_sent=[("Host", "x"), ("A", "b")])
    response = client.get(f"/api/traffic/{saved.id}")
    data = check(openapi_doc, "GET", "/api/traffic/{id}", response)
    assert data == saved.to_json()
    assert data["tlsServer"] == {"sni": "a", "notAfter": "2030-01-01T00:00:00Z"}
    assert data["timings"]["tlsHandshake"] == 3.0
    assert data["requestHeadersSent"] == [["Host", "x"], ["A", "b"]]
    assert "request body" not in response.text
    missing = client.get("/api/traffic/" + "0" * 32)
    assert missing.status_code == 404
    check(openapi_doc, "GET", "/api/traffic/{id}", missing)


def test_bodies_are_byte_exact_with_their_content_type(web: WebServer,
                                                       client: httpx.Client) -> None:
    request_body = os.urandom(3 * 1024 * 1024 + 17)  # several stored chunks
    response_body = os.urandom(2_500_000)
    saved = web.save(request_body, response_body, method="POST",
                     request_headers=[("Host", "h"), ("Content-Type", "image/png")],
                     response_headers=[("Content-Type", "text/html; charset=utf-8")],
                     content_type="text/html; charset=utf-8")
    with client.stream("GET", f"/api/traffic/{saved.id}/request/body") as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "image/png"
        got = b"".join(streamed.iter_bytes())
    assert sha(got) == sha(request_body)
    response = client.get(f"/api/traffic/{saved.id}/response/body")
    assert sha(response.content) == sha(response_body)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # A captured page must not run as the inspector's origin.
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-nectoproxy-truncated" not in response.headers
    empty = web.save()
    assert client.get(f"/api/traffic/{empty.id}/request/body").content == b""
    assert client.get(f"/api/traffic/{empty.id}/request/body").headers["content-type"] == \
        "application/octet-stream"
    assert client.get(f"/api/traffic/{'0' * 32}/response/body").status_code == 404


def test_truncated_body_is_flagged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "small.db", max_body_size=1000)
    with WebServer(tmp_path, store=store) as web, web.client() as client:
        body = os.urandom(5000)
        saved = web.save(None, body)
        response = client.get(f"/api/traffic/{saved.id}/response/body")
        assert response.headers["x-nectoproxy-truncated"] == "1"
        assert response.content == body[:1000]
    store.close()


def _encodings() -> list[tuple[str, Any]]:
    def raw_deflate(data: bytes) -> bytes:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(data) + compressor.flush()

    return [("gzip", lambda d: gzip.compress(d)), ("deflate", zlib.compress),
            ("deflate", raw_deflate), ("br", brotli.compress), ("zstd", zstandard.compress),
            ("gzip, br", lambda d: brotli.compress(gzip.compress(d)))]


@pytest.mark.parametrize(("coding", "encode"), _encodings())
def test_decoded_bodies(web: WebServer, client: httpx.Client, coding: str, encode: Any) -> None:
    plain = os.urandom(200_000) + b"text " * 400_000  # 2.2 MB, expands past a piece
    encoded = encode(plain)
    saved = web.save(None, encoded, response_headers=[("Content-Type", "text/plain"),
                                                     ("Content-Encoding", coding)],
                     content_type="text/plain", response_body_encoding=coding)
    raw = client.get(f"/api/traffic/{saved.id}/response/body")
    assert sha(raw.content) == sha(encoded)
    assert raw.headers["x-nectoproxy-content-encoding"] == coding
    decoded = client.get(f"/api/traffic/{saved.id}/response/body", params={"decoded": "1"})
    assert decoded.status_code == 200
    assert "content-encoding" not in decoded.headers
    assert sha(decoded.content) == sha(plain)


def test_decoding_that_cannot_be_done_is_415(web: WebServer, client: httpx.Client,
                                             openapi_doc: dict[str, Any]) -> None:
    unknown = web.save(None, b"\x1f\x9d...", response_body_encoding="compress")
    broken = web.save(None, b"this is not gzip", response_body_encoding="gzip")
    identity = web.save(b"plain", None, method="POST")
    for flow in (unknown, broken):
        path = f"/api/traffic/{flow.id}/response/body"
        response = client.get(path, params={"decoded": 1})
        assert response.status_code == 415
        data = check(openapi_doc, "GET", "/api/traffic/{id}/response/body", response)
        assert "cannot be decoded" in data["error"]
        assert client.get(path).status_code == 200  # the raw bytes are always there
    response = client.get(f"/api/traffic/{identity.id}/request/body", params={"decoded": 1})
    assert response.content == b"plain"


def test_a_decompression_bomb_streams_in_pieces_and_stops_with_the_client(
        web: WebServer, client: httpx.Client) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 1024 * 1024  # 256 MiB of zeros
    saved = web.save(None, bomb, response_body_encoding="gzip")
    with client.stream("GET", f"/api/traffic/{saved.id}/response/body",
                       params={"decoded": 1}) as streamed:
        received = 0
        for chunk in streamed.iter_raw():
            received += len(chunk)
            if received > 8 * 1024 * 1024:
                break
    assert received > 8 * 1024 * 1024
    limiter = web.app.state.web.stream_limiter
    wait_for(lambda: limiter.borrowed_tokens == 0)  # the worker thread has let go
    assert client.get("/api/health").status_code == 200


def test_delete_flow_and_a_sessions_flows(web: WebServer, client: httpx.Client,
                                          openapi_doc: dict[str, Any]) -> None:
    one, two, three = web.save(), web.save(), web.save()
    response = client.delete(f"/api/traffic/{one.id}")
    assert check(openapi_doc, "DELETE", "/api/traffic/{id}", response) == {"deleted": True}
    assert client.get(f"/api/traffic/{one.id}").status_code == 404
    assert client.delete(f"/api/traffic/{one.id}").status_code == 404
    response = client.delete(f"/api/traffic/session/{web.session.id}")
    assert check(openapi_doc, "DELETE", "/api/traffic/session/{sessionId}", response) == \
        {"deleted": 2}
    assert web.store.get_flow(two.id) is None and web.store.get_flow(three.id) is None
    assert client.delete("/api/traffic/session/999").status_code == 404


def test_annotations(web: WebServer, client: httpx.Client,
                     openapi_doc: dict[str, Any]) -> None:
    flow = web.save()
    path = f"/api/traffic/{flow.id}"
    response = client.patch(path, json={"mark": "red", "tags": ["login", "bug"],
                                        "comment": "look here"})
    data = check(openapi_doc, "PATCH", "/api/traffic/{id}", response)
    assert (data["mark"], data["tags"], data["comment"]) == ("red", ["login", "bug"],
                                                             "look here")
    assert client.patch(path, json={"comment": "only this"}).json()["tags"] == ["login", "bug"]
    found = client.get("/api/traffic", params={"filter": "mark:red tag:login"}).json()
    assert [e["id"] for e in found["entries"]] == [flow.id]
    searched = client.get("/api/traffic/search", params={"q": "only this"}).json()
    assert [e["id"] for e in searched["entries"]] == [flow.id]
    assert client.patch(path, json={"mark": None}).json()["mark"] is None
    bad = client.patch(path, json={"mark": "pink"})
    assert bad.status_code == 400 and "pink" in bad.json()["error"]
    assert "purple" in bad.json()["error"]
    check(openapi_doc, "PATCH", "/api/traffic/{id}", bad)
    for body in ({"tags": "x"}, {"comment": 3}, {"colour": "red"}):
        assert client.patch(path, json=body).status_code == 400, body
    assert client.patch(path, content=b"{not json").status_code == 400
    assert client.patch(f"/api/traffic/{'0' * 32}", json={"mark": "red"}).status_code == 404


# -- sessions -------------------------------------------------------------------------------


def test_sessions(web: WebServer, client: httpx.Client, openapi_doc: dict[str, Any]) -> None:
    def ok(method: str, template: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return check(openapi_doc, method, template, response)

    listed = ok("GET", "/api/sessions", "/api/sessions")
    assert [s["id"] for s in listed["sessions"]] == [web.session.id]
    created = ok("POST", "/api/sessions", "/api/sessions", json={"name": "login bug"})
    assert created["name"] == "login bug" and created["active"] is False
    active = ok("GET", "/api/sessions/active", "/api/sessions/active")
    assert active["id"] == web.session.id
    switched = ok("POST", "/api/sessions", "/api/sessions",
                  json={"name": "now", "activate": True})
    assert switched["active"] is True
    assert ok("GET", "/api/sessions/active", "/api/sessions/active")["id"] == switched["id"]
    assert ok("GET", "/api/sessions/{id}", f"/api/sessions/{created['id']}") == created
    renamed = ok("PATCH", "/api/sessions/{id}", f"/api/sessions/{created['id']}",
                 json={"name": "checkout bug"})
    assert renamed["name"] == "checkout bug"
    activated = ok("POST", "/api/sessions/{id}/activate",
                   f"/api/sessions/{created['id']}/activate")
    assert activated["active"] is True
    assert web.store.active_session().id == created["id"]
    web.store.save_flow(record(session_id=created["id"]))
    assert ok("DELETE", "/api/sessions/{id}", f"/api/sessions/{created['id']}") == \
        {"deleted": True}
    assert web.store.get_session(created["id"]) is None
    assert web.store.active_session().id != created["id"]  # moved to another session

    for method, path, body in [("GET", "/api/sessions/999", None),
                               ("PATCH", "/api/sessions/999", {"name": "x"}),
                               ("DELETE", "/api/sessions/999", None),
                               ("POST", "/api/sessions/999/activate", None),
                               ("GET", "/api/sessions/abc", None)]:
        assert client.request(method, path, json=body).status_code == 404, path
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": "x" * 300}):
        response = client.post("/api/sessions", json=body)
        assert response.status_code == 400, body
        check(openapi_doc, "POST", "/api/sessions", response)


# -- export ---------------------------------------------------------------------------------


def test_export_formats(web: WebServer, client: httpx.Client) -> None:
    flow = web.save(b'{"name": "it\'s $(whoami)"}', b"ok", method="POST",
                    url="https://api.example.test/v1/items?q=a b&x='1'",
                    request_headers=[("Host", "api.example.test"), ("X-Quote", "a'b\"c"),
                                     ("X-Empty", ""), ("Content-Type", "application/json"),
                                     ("Content-Length", "999"), ("Connection", "keep-alive"),
                                     ("Proxy-Authorization", "[redacted]")])
    curl = client.get(f"/api/traffic/{flow.id}/export", params={"format": "curl"})
    assert curl.status_code == 200 and curl.headers["content-type"].startswith("text/plain")
    text = curl.text
    assert text.startswith("curl 'https://api.example.test/v1/items?q=a b&x='\"'\"'1'\"'\"''")
    assert "-H 'X-Quote: a'\"'\"'b\"c'" in text
    assert "-H 'X-Empty;'" in text and "-H User-Agent:" in text
    assert "--data-raw '{\"name\": \"it'\"'\"'s $(whoami)\"}'" in text
    assert "Proxy-Authorization" not in text and "Content-Length" not in text
    httpie = client.get(f"/api/traffic/{flow.id}/export", params={"format": "httpie"}).text
    assert httpie.startswith("http --ignore-stdin POST 'https://api.example.test/v1/items?")
    assert "'X-Empty;'" in httpie and "--raw='{" in httpie
    raw = client.get(f"/api/traffic/{flow.id}/export", params={"format": "raw"})
    assert raw.content.startswith(b"POST /v1/items?q=a b&x='1' HTTP/1.1\r\nHost: ")
    assert raw.content.endswith(b"\r\n\r\n" + b'{"name": "it\'s $(whoami)"}')
    assert b"Content-Length: 26\r\n" in raw.content and b"Proxy-Authorization" not in raw.content
    har = client.get(f"/api/traffic/{flow.id}/export", params={"format": "har"})
    assert har.headers["content-type"] == "application/json"
    entry = har.json()["log"]["entries"][0]
    assert entry["request"]["method"] == "POST"
    assert client.get(f"/api/traffic/{flow.id}/export",
                      params={"format": "wget"}).status_code == 400
    assert client.get(f"/api/traffic/{'0' * 32}/export").status_code == 404


def _echo(origin_url: str, command: str) -> dict[str, Any]:
    run = subprocess.run(["bash", "-c", command], capture_output=True, timeout=60, check=False,
                         env={"PATH": os.environ.get("PATH", ""), "no_proxy": "*"})
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("binary", [False, True])
def test_curl_export_runs_and_sends_the_recorded_request(web: WebServer, client: httpx.Client,
                                                          origin: Any, binary: bool) -> None:
    body = bytes(range(256)) * 40 if binary else "it's \"$(whoami)\" `id` \\ \n ünï".encode()
    url = origin.url + "/echo?q=a%20b&x=$HOME"
    authority = url.split("/")[2]
    flow = web.save(body, b"", method="PUT", url=url,
                    request_headers=[("Host", authority), ("X-Quote", "a'b\"c $PATH"),
                                     ("X-Empty", ""), ("Content-Length", str(len(body))),
                                     ("Content-Type", "application/x-test")])
    command = client.get(f"/api/traffic/{flow.id}/export", params={"format": "curl"}).text
    echo = _echo(origin.url, command)
    assert echo["method"] == "PUT" and echo["path"] == "/echo?q=a%20b&x=$HOME"
    assert echo["body_sha256"] == sha(body)
    names = [k.lower() for k, _ in echo["headers"]]
    assert ["X-Quote", "a'b\"c $PATH"] in echo["headers"]
    assert ["X-Empty", ""] in echo["headers"]
    assert "user-agent" not in names and "accept" not in names  # curl's own are switched off
    raw = client.get(f"/api/traffic/{flow.id}/export", params={"format": "raw"}).content
    with socket.create_connection(("127.0.0.1", origin.port), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        for _ in range(10_000):
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["body_sha256"] == sha(body)


# -- HAR ------------------------------------------------------------------------------------


def test_har_export_and_import_round_trip(web: WebServer, client: httpx.Client,
                                          openapi_doc: dict[str, Any]) -> None:
    flows = [web.save(os.urandom(100), os.urandom(3000), method="POST",
                      request_headers=[("Host", "api.example.test"),
                                       ("Content-Type", "application/octet-stream")],
                      response_headers=[("Content-Type", "application/octet-stream")],
                      content_type="application/octet-stream", started_at=1000.0 + i)
             for i in range(3)]
    web.save(status=404, started_at=2000.0)
    response = client.get(f"/api/har/export/{web.session.id}")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    document = response.json()
    assert document["log"]["version"] == "1.2"
    assert len(document["log"]["entries"]) == 4
    filtered = client.get(f"/api/har/export/{web.session.id}", params={"filter": "status:2xx"})
    assert len(filtered.json()["log"]["entries"]) == 3
    bad = client.get(f"/api/har/export/{web.session.id}", params={"filter": "status:"})
    assert bad.status_code == 400 and "position" in bad.json()
    assert client.get("/api/har/export/999").status_code == 404

    chosen = client.post("/api/har/export", json={"ids": [flows[2].id, flows[0].id]})
    entries = chosen.json()["log"]["entries"]
    assert len(entries) == 2
    missing = client.post("/api/har/export", json={"ids": [flows[0].id, "f" * 32]})
    assert missing.status_code == 404 and missing.json()["missing"] == ["f" * 32]
    assert client.post("/api/har/export", json={"ids": "x"}).status_code == 400

    imported = client.post("/api/har/import", params={"name": "round trip"},
                           content=json.dumps({"log": {**document["log"],
                                                        "entries": entries}}))
    session = check(openapi_doc, "POST", "/api/har/import", imported)
    assert imported.status_code == 201 and session["name"] == "round trip"
    assert session["flowCount"] == 2
    page = client.get("/api/traffic", params={"sessionId": session["id"], "order": "oldest"})
    new_ids = [e["id"] for e in page.json()["entries"]]
    for new_id, original in zip(new_ids, (flows[2], flows[0]), strict=True):
        for direction in ("request", "response"):
            got = client.get(f"/api/traffic/{new_id}/{direction}/body").content
            want = web.store.get_body(original.id, direction)  # type: ignore[arg-type]
            assert want is not None and sha(got) == sha(want[0])

    har_file = json.dumps(document).encode()
    upload = client.post("/api/har/import", files={"file": ("capture.har", har_file,
                                                            "application/json")})
    assert upload.status_code == 201, upload.text
    assert upload.json()["name"] == "Imported capture.har"
    assert upload.json()["flowCount"] == 4

    for body in (b"not json", b'{"log": {}}',
                 json.dumps({"log": {"entries": [{"request": {}}]}}).encode()):
        refused = client.post("/api/har/import", content=body)
        assert refused.status_code == 400
        check(openapi_doc, "POST", "/api/har/import", refused)
    empty_upload = client.post("/api/har/import", files={"other": (None, b"x")})
    assert empty_upload.status_code == 400


# -- the rest -------------------------------------------------------------------------------


def test_replay_without_a_replayer_is_503(web: WebServer, client: httpx.Client) -> None:
    flow = web.save()
    response = client.post(f"/api/traffic/{flow.id}/replay")
    assert response.status_code == 503 and "not available" in response.json()["error"]
    assert client.post("/api/traffic/replay",
                       json={"url": "http://127.0.0.1:9/"}).status_code == 503
    assert client.post("/api/traffic/replay", json={"url": "ftp://x/"}).status_code == 400


def test_status_health_and_home_page(web: WebServer, client: httpx.Client,
                                     openapi_doc: dict[str, Any]) -> None:
    web.save(b"abc", b"defg")
    data = check(openapi_doc, "GET", "/api/status", client.get("/api/status"))
    assert data["capturing"] is True and data["flowsWritten"] == 7  # from status()
    assert data["store"]["flows"] == 1 and data["store"]["storedBytes"] == 7
    assert data["store"]["activeSession"]["id"] == web.session.id
    assert data["eventClients"] == 0
    with web.client(token=None) as anonymous:
        assert anonymous.get("/api/health").json() == {"status": "ok"}
    page = client.get("/api/endpoints")  # "/" is the web UI: tests/test_ui_serving.py
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "NectoProxy inspector" in page.text and 'href="/api/openapi.json"' in page.text
    assert "/api/traffic/{id}/replay" in page.text and "docs/api.md" in page.text


def test_openapi_document_describes_every_route(web: WebServer,
                                                 openapi_doc: dict[str, Any]) -> None:
    from starlette.routing import Route, WebSocketRoute

    assert openapi_doc["openapi"] == "3.1.0"
    app_routes = web.app.routes
    described = {(path, method.upper()) for path, ops in openapi_doc["paths"].items()
                 for method in ops}
    for route in app_routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    assert (route.path, method) in described, (route.path, method)
        elif isinstance(route, WebSocketRoute):
            assert (route.path, "GET") in described
    operation_ids = [op["operationId"] for ops in openapi_doc["paths"].values()
                     for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for schema in openapi_doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for target in refs(openapi_doc):
        assert target.startswith("#/components/schemas/"), target
        assert target.rsplit("/", 1)[1] in openapi_doc["components"]["schemas"], target
    for path, ops in openapi_doc["paths"].items():
        for name in (p.strip("{}") for p in path.split("/") if p.startswith("{")):
            for operation in ops.values():
                assert any(p["name"] == name and p["in"] == "path"
                           for p in operation.get("parameters", [])), (path, name)
        for operation in ops.values():
            assert operation["responses"], path
            assert operation["security"] == [] if path == "/api/health" else \
                operation["security"], path


def test_openapi_document_is_valid_openapi_3_1(openapi_doc: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator",
                                    reason="openapi-spec-validator checks the whole document")
    validator.validate(openapi_doc)


def test_unknown_routes_are_json_404s(client: httpx.Client) -> None:
    response = client.get("/api/does-not-exist")
    assert response.status_code == 404 and "error" in response.json()
    wrong_method = client.put("/api/sessions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
