"""nectoproxy.har: store flows as HAR 1.2 (valid against the schema), HAR files as flows, and
the round trip between them; HAR documents in the shape each browser and tool writes them."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from nectoproxy.errors import NectoProxyError
from nectoproxy.har import (
    HarError,
    export_session,
    har_entry,
    har_timings,
    import_har,
    iter_har_json,
    read_har,
)
from nectoproxy.store import FilterError, FlowRecord, SessionNotFound, SQLiteStore, new_flow_id

SCHEMA = Path(__file__).parent.parent / "plugins" / "nectoproxy-plugin-har" / "tests" / \
    "har-1.2.schema.json"
BINARY = bytes(range(256)) * 3
TEXT = "Zoë sagt: grüß Gott, 東京 ✓\n" * 40


def validate(document: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(document)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "flows.db", max_body_size=4096) as opened:
        yield opened


def flow(url: str, **fields: Any) -> FlowRecord:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    defaults: dict[str, Any] = {
        "id": new_flow_id(), "method": "GET", "url": url, "scheme": parts.scheme,
        "host": parts.hostname or "", "port": parts.port or {"http": 80}.get(parts.scheme, 443),
        "path": (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        "status": 200, "reason": "OK", "started_at": 1_700_000_000.25, "duration": 12.5,
        "request_headers": [("Host", parts.netloc), ("Accept", "*/*")],
        "response_headers": [("Content-Type", "text/plain")], "content_type": "text/plain",
        "client_addr": "127.0.0.1:50000", "server_addr": "93.184.216.34:443",
        "timings": {"connect": 1.0, "tls_handshake": 3.5, "request_sent": 4.0,
                    "first_byte": 10.0, "complete": 12.5},
    }
    defaults.update(fields)
    return FlowRecord(**defaults)


def round_trip_flows() -> list[tuple[FlowRecord, bytes | None, bytes | None]]:
    """Every kind of flow the round trip must keep, with its bodies as stored."""
    gzipped = gzip.compress(TEXT.encode(), mtime=0)
    return [
        (flow("https://api.test/items?a=1&b=&c=%C3%A9", method="POST",
              request_headers=[("Host", "api.test"), ("Content-Type", "application/json"),
                               ("Cookie", "sid=1; theme=dark"), ("X-Note", "Zoë ünïcode")],
              request_headers_sent=[("host", "api.test"), ("Content-Type", "application/json"),
                                    ("Cookie", "sid=1; theme=dark"), ("X-Added", "by a plugin")],
              response_headers=[("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Encoding", "gzip"), ("Set-Cookie", "k=v; Path=/"),
                                ("X-Weird", "\u00e9\u00c3\u00a9 latin-1 bytes")],
              content_type="text/plain; charset=utf-8", response_body_encoding="gzip",
              response_size=len(gzipped), request_size=13, mark="red", tags=["login", "x"],
              comment="look at this", modified_by=["rules"]),
         b'{"name":"Zo\xc3\xab"}', gzipped),
        (flow("https://cdn.test/logo.png", response_headers=[("Content-Type", "image/png")],
              content_type="image/png", response_size=len(BINARY)), b"", BINARY),
        (flow("http://plain.test:8080/empty", status=204, reason="No Content",
              response_headers=[("Server", "t")], content_type=None, response_size=0,
              timings={"request_sent": 0.5, "first_byte": 2.0, "complete": 2.5},
              duration=2.5, server_addr="[::1]:8080"), b"", b""),
        (flow("http://latin.test/page", response_headers=[
            ("Content-Type", "text/html; charset=iso-8859-1")],
              content_type="text/html; charset=iso-8859-1"), b"",
         "<p>caf\u00e9 na\u00efve</p>".encode("latin-1")),
        (flow("https://down.test/", status=None, reason=None, response_headers=None,
              content_type=None, error="cannot connect to down.test:443: refused",
              server_addr=None, timings={"complete": 3.0}, duration=3.0), b"", None),
        (flow("https://form.test/login", method="POST", request_headers=[
            ("Content-Type", "application/x-www-form-urlencoded")], request_size=17),
         b"user=a+b&pass=%21", b"ok"),
        (flow("https://h2.test/grpc.Echo/Say", method="POST", http_version="HTTP/2.0",
              request_headers=[("content-type", "application/grpc"), ("te", "trailers")],
              response_headers=[("content-type", "application/grpc"), ("grpc-status", "0")],
              content_type="application/grpc", request_size=10, response_size=15),
         b"\x00\x00\x00\x00\x05hello", b"\x00\x00\x00\x00\x0aecho:hello"),
        (flow("https://broken.test/z", response_headers=[("Content-Encoding", "gzip"),
                                                         ("Content-Type", "text/plain")],
              response_body_encoding="gzip"), b"", b"\x1f\x8bnot really gzip"),
        (flow("https://deflate.test/up", method="PUT", request_headers=[
            ("Content-Type", "application/octet-stream"), ("Content-Encoding", "deflate")],
              request_body_encoding="deflate"), zlib.compress(BINARY), b"stored"),
        (FlowRecord(id=new_flow_id(), kind="tunnel", scheme="tunnel", method="CONNECT",
                    url="pinned.test:443", host="pinned.test", port=443, path="",
                    client_addr="127.0.0.1:50001", server_addr="10.0.0.9:443",
                    started_at=1_700_000_001.0, duration=800.0, bytes_up=517, bytes_down=4096,
                    timings={"complete": 800.0}, tls_client={"sni": "pinned.test"}), None, None),
    ]


def test_export_validates_and_round_trips_byte_exact(store, tmp_path):
    session = store.create_session("original")
    flows = round_trip_flows()
    for record, request_body, response_body in flows:
        record.session_id = session.id
        store.save_flow(record, request_body, response_body)
    text = "".join(export_session(store, session.id))
    document = json.loads(text)
    validate(document)
    assert document["log"]["creator"]["name"] == "NectoProxy"
    assert len(document["log"]["entries"]) == len(flows)

    (tmp_path / "export.har").write_text(text, encoding="utf-8")
    imported = import_har(store, tmp_path / "export.har")
    assert imported.name == "Imported export.har" and imported.flow_count == len(flows)
    assert not imported.active
    before = store.list_flows(session.id, order="oldest", limit=100)[0]
    after = store.list_flows(imported.id, order="oldest", limit=100)[0]
    kept = ("kind", "method", "url", "scheme", "host", "port", "path", "http_version", "status",
            "reason", "request_headers", "request_headers_sent", "response_headers",
            "response_headers_sent", "content_type", "request_body_encoding",
            "response_body_encoding", "error", "mark", "tags", "comment", "modified_by",
            "client_addr", "server_addr", "tls_client", "bytes_up", "bytes_down", "timings",
            "duration")
    for old, new in zip(before, after, strict=True):
        original, copy = store.get_flow(old.id), store.get_flow(new.id)
        assert original is not None and copy is not None and copy.id != original.id
        for name in kept:
            assert getattr(copy, name) == getattr(original, name), (original.url, name)
        assert copy.started_at == pytest.approx(original.started_at, abs=0.001)
        for direction in ("request", "response"):
            assert store.get_body(new.id, direction) == store.get_body(old.id, direction), \
                (original.url, direction)


def test_what_the_entries_say(store):
    entries = [har_entry(*row) for row in round_trip_flows()]
    post, image, empty, latin, failed, form, h2, broken, deflated, tunnel = entries
    validate(json.loads("".join(iter_har_json(entries, version="test"))))
    # Headers as sent, in order and case; the received ones beside them.
    assert [h["name"] for h in post["request"]["headers"]] == [
        "host", "Content-Type", "Cookie", "X-Added"]
    assert post["request"]["_receivedHeaders"][3] == {"name": "X-Note", "value": "Zoë ünïcode"}
    assert post["request"]["cookies"] == [{"name": "sid", "value": "1"},
                                          {"name": "theme", "value": "dark"}]
    assert post["request"]["queryString"] == [
        {"name": "a", "value": "1"}, {"name": "b", "value": ""}, {"name": "c", "value": "é"}]
    assert post["request"]["postData"] == {"mimeType": "application/json",
                                           "text": '{"name":"Zoë"}'}
    content = post["response"]["content"]
    assert content["text"] == TEXT and "encoding" not in content  # decoded, as HAR wants
    assert content["size"] == len(TEXT.encode()) and content["_contentEncoding"] == "gzip"
    assert content["compression"] == content["size"] - post["response"]["bodySize"]
    assert base64.b64decode(content["_encodedText"]) == round_trip_flows()[0][2]
    assert post["startedDateTime"] == "2023-11-14T22:13:20.250Z"
    assert post["timings"] == {"blocked": 0.0, "dns": -1.0, "connect": 3.5, "ssl": 2.5,
                               "send": 0.5, "wait": 6.0, "receive": 2.5}
    assert post["time"] == 12.5
    assert post["serverIPAddress"] == "93.184.216.34" and post["_serverPort"] == 443
    assert (post["_mark"], post["_tags"], post["comment"], post["_modifiedBy"]) == (
        "red", ["login", "x"], "look at this", ["rules"])
    assert post["response"]["cookies"] == [{"name": "k", "value": "v", "path": "/",
                                            "httpOnly": False, "secure": False}]
    assert image["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(image["response"]["content"]["text"]) == BINARY
    assert empty["response"]["content"] == {"size": 0, "mimeType": "x-unknown", "text": ""}
    assert empty["serverIPAddress"] == "::1" and "postData" not in empty["request"]
    assert latin["response"]["content"]["text"] == "<p>café naïve</p>"
    assert failed["response"]["status"] == 0 and failed["response"]["_error"] == failed["_error"]
    assert failed["timings"]["connect"] == 3.0  # failed before a connection was open
    assert form["request"]["postData"]["params"] == [{"name": "user", "value": "a b"},
                                                     {"name": "pass", "value": "!"}]
    # HTTP/2 as Chrome writes it; no HTTP/1 head to count the size of.
    assert (post["request"]["httpVersion"], post["response"]["httpVersion"]) == (
        "HTTP/1.1", "HTTP/1.1")
    assert (h2["request"]["httpVersion"], h2["response"]["httpVersion"]) == ("h2", "h2")
    assert h2["request"]["headersSize"] == h2["response"]["headersSize"] == -1
    assert post["request"]["headersSize"] > 0
    assert broken["response"]["content"]["encoding"] == "base64"  # could not be decoded
    assert "could not be undone" in broken["response"]["content"]["comment"]
    assert deflated["request"]["postData"]["_encoding"] == "base64"
    assert base64.b64decode(deflated["request"]["postData"]["text"]) == BINARY
    assert tunnel["request"]["method"] == "CONNECT"
    assert tunnel["request"]["url"] == "https://pinned.test:443"
    assert tunnel["request"]["_url"] == "pinned.test:443"
    assert tunnel["_tunnel"] == {"host": "pinned.test", "port": 443, "scheme": "tunnel",
                                 "bytesUp": 517, "bytesDown": 4096}
    assert tunnel["response"]["status"] == 0 and "_error" not in tunnel


def test_truncated_bodies_are_marked_and_kept(store):
    session = store.create_session("big")
    big = TEXT.encode() * 10  # over the store's 4096 bytes
    store.save_flow(flow("https://big.test/", session_id=session.id,
                         response_size=len(big)), b"", big)
    [entry] = json.loads("".join(export_session(store, session.id)))["log"]["entries"]
    content = entry["response"]["content"]
    assert content["_truncated"] is True and content["size"] == len(big)
    assert content["comment"] == f"truncated: 4096 of {len(big)} bytes stored"
    [(record, _, body)] = read_har({"log": {"entries": [entry]}})
    assert record.response_truncated and body == big[:4096]


@pytest.mark.parametrize(("timings", "error", "expected"), [
    ({"connect": 2.0, "request_sent": 2.5, "first_byte": 9.0, "complete": 10.0}, None,
     {"connect": 2.0, "ssl": -1.0, "send": 0.5, "wait": 6.5, "receive": 1.0}),  # plain HTTP
    ({"request_sent": 1.0, "first_byte": 5.0, "complete": 6.0}, None,
     {"connect": -1.0, "send": 1.0, "wait": 4.0, "receive": 1.0}),  # a reused connection
    ({"complete": 4.0}, None, {"connect": -1.0, "send": 0.0, "wait": 0.0, "receive": 4.0}),
    ({"connect": 1.0, "request_sent": 2.0, "complete": 30.0}, "read timeout",
     {"connect": 1.0, "send": 1.0, "wait": 28.0, "receive": 0.0}),  # failed while waiting
    ({"complete": 3.0}, "refused", {"connect": 3.0, "receive": 0.0}),
    ({}, None, {"connect": -1.0, "send": 0.0, "wait": 0.0, "receive": 0.0}),  # pending
], ids=["new-connection", "reused", "answered-by-plugin", "failed-waiting", "refused", "none"])
def test_timings(timings, error, expected):
    record = flow("http://t.test/", timings=timings, error=error,
                  duration=timings.get("complete"))
    har = har_timings(record)
    assert {k: har[k] for k in expected} == expected
    entry = har_entry(record, b"", b"")
    assert entry["time"] == round(sum(v for k, v in har.items() if k != "ssl" and v > 0), 3)
    assert entry["time"] == timings.get("complete", 0)


def test_iter_har_json_streams_one_entry_at_a_time():
    taken = 0

    def entries() -> Iterator[dict[str, Any]]:
        nonlocal taken
        for n in range(3):
            taken += 1
            yield har_entry(flow(f"https://s.test/{n}"), b"", b"")

    pieces = iter_har_json(entries(), version="1", comment="c")
    head = next(pieces)
    assert taken == 0 and head.endswith('"entries": [')
    first = next(pieces)
    assert taken == 1
    document = json.loads(head + first + "".join(pieces))
    assert [e["request"]["url"] for e in document["log"]["entries"]] == [
        f"https://s.test/{n}" for n in range(3)]
    assert document["log"]["comment"] == "c"


def test_export_pages_through_the_store(store, monkeypatch):
    import nectoproxy.har.store

    monkeypatch.setattr(nectoproxy.har.store, "_PAGE", 2)
    session = store.create_session("paged")
    for n in range(5):
        store.save_flow(flow(f"https://p.test/{n}", session_id=session.id), b"", b"")
    calls = []
    original = store.list_flows

    def list_flows(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["cursor"])
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "list_flows", list_flows)
    pieces = export_session(store, session.id, filter="path:/1 or path:/3 or path:/4")
    head = next(pieces)
    assert calls == []  # nothing read before the first entry is asked for
    document = json.loads(head + "".join(pieces))
    assert [e["request"]["url"][-1] for e in document["log"]["entries"]] == ["1", "3", "4"]
    assert len(calls) == 2 and calls[0] is None


def test_export_checks_session_and_filter_at_once(store):
    session = store.create_session("s")
    with pytest.raises(SessionNotFound):
        export_session(store, 999)
    with pytest.raises(FilterError) as info:
        export_session(store, session.id, filter="status:4x4")
    assert info.value.position == 7


def test_imported_flows_answer_the_store_filters(store):
    document = har(
        entry("https://a.test/api/users?id=7", status=404, mime="application/json",
              text='{"error":"nope"}', method="DELETE"),
        entry("https://b.test/", status=0, error="net::ERR_FAILED"),
        entry("https://b.test/page", mime="text/html", text="<h1>hi</h1>"),
    )
    session = import_har(store, json.dumps(document).encode(), name="filters")
    assert session.name == "filters" and session.flow_count == 3
    store.index_pending()

    def hits(expression: str) -> list[str]:
        return [f.url for f in store.list_flows(session.id, filter=expression)[0]]

    assert hits("host:a.test and status:4xx and method:delete") == [
        "https://a.test/api/users?id=7"]
    assert hits("is:error") == ["https://b.test/"]
    assert hits("type:html") == ["https://b.test/page"]
    assert hits("path:/api") == ["https://a.test/api/users?id=7"]
    assert hits("body:nope") == ["https://a.test/api/users?id=7"]
    assert hits("header:content-type=json") == ["https://a.test/api/users?id=7"]


def test_import_default_name_and_nothing_kept_on_error(store):
    good = entry("https://ok.test/")
    session = import_har(store, har(good))
    assert session.name.startswith("Imported 20")  # "Imported <date time>"
    count = len(store.list_sessions())
    with pytest.raises(HarError, match=r"log\.entries\[1\]\.request\.url"):
        import_har(store, har(good, {"request": {"method": "GET"}, "response": {}}))
    assert len(store.list_sessions()) == count  # the half-imported session was removed


# -- HAR documents as each tool writes them (small, hand-built, reproducing its quirks) ------


def har(*entries: dict[str, Any], **log: Any) -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, **log,
                    "entries": list(entries)}}


def entry(url: str, *, status: int = 200, method: str = "GET", mime: str = "text/plain",
          text: str | None = "ok", error: str | None = None, **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"size": len(text or ""), "mimeType": mime}
    if text is not None:
        content["text"] = text
    response: dict[str, Any] = {
        "status": status, "statusText": "", "httpVersion": "HTTP/1.1" if status else "",
        "cookies": [], "headers": [{"name": "Content-Type", "value": mime}] if status else [],
        "content": content, "redirectURL": "", "headersSize": -1, "bodySize": -1}
    if error:
        response["_error"] = error
    result = {"startedDateTime": "2024-05-01T12:00:00.000Z", "time": 1,
              "request": {"method": method, "url": url, "httpVersion": "HTTP/1.1",
                          "cookies": [], "headers": [], "queryString": [], "headersSize": -1,
                          "bodySize": 0},
              "response": response, "cache": {},
              "timings": {"send": 0, "wait": 1, "receive": 0}}
    result.update(extra)
    return result


def test_chrome():
    """Chrome DevTools: HTTP/2 pseudo-headers and "http/2.0" / "h3" versions, a 304 whose body
    (from the cache) is base64, `_error: null` on good entries, a failed request with status 0,
    an empty httpVersion and `_error` on the response, `_`-fields everywhere, pages."""
    body = b"<!doctype html><p>cached</p>"
    ok = entry("https://c.test/", status=304, _initiator={"type": "other"}, _priority="High",
               _resourceType="document", pageref="page_1")
    ok["request"]["httpVersion"] = "http/2.0"
    ok["request"]["headers"] = [{"name": ":authority", "value": "c.test"},
                                {"name": ":method", "value": "GET"},
                                {"name": ":path", "value": "/"},
                                {"name": ":scheme", "value": "https"},
                                {"name": "accept", "value": "text/html"}]
    ok["response"].update(httpVersion="http/2.0", _transferSize=253, _error=None, headers=[
        {"name": "etag", "value": 'W/"1"'}, {"name": "content-type", "value": "text/html"}])
    ok["response"]["content"] = {"size": len(body), "mimeType": "text/html",
                                 "text": base64.b64encode(body).decode(), "encoding": "base64"}
    ok["timings"].update(blocked=5.4, dns=-1, ssl=-1, connect=-1, _blocked_queueing=3.3)
    failed = entry("https://c.test/offline", status=0, text=None,
                   error="net::ERR_INTERNET_DISCONNECTED", serverIPAddress="")
    failed["request"]["httpVersion"] = ""
    failed["response"]["content"] = {"size": 0, "mimeType": "x-unknown"}
    h3 = entry("https://c.test/logo.png", mime="image/png")
    h3["request"]["httpVersion"] = h3["response"]["httpVersion"] = "h3"
    document = har(ok, failed, h3, pages=[{"startedDateTime": "2024-05-01T12:00:00.000Z",
                                           "id": "page_1", "title": "t", "pageTimings": {}}])
    (cached, _, cached_body), (dead, _, dead_body), (quic, _, _) = read_har(document)
    assert cached.http_version == "HTTP/2.0" and quic.http_version == "HTTP/3"
    assert cached.request_headers == [("accept", "text/html")]  # pseudo-headers dropped
    assert (cached.status, cached.error, cached_body) == (304, None, body)
    assert cached.timings == {"request_sent": 5.4, "first_byte": 6.4, "complete": 6.4}
    assert dead.status is None and dead.error == "net::ERR_INTERNET_DISCONNECTED"
    assert dead.server_addr is None and dead_body is None and dead.response_headers is None


def test_firefox():
    """Firefox: local-time offsets in startedDateTime, "HTTP/3", entries of resources it did
    not keep with an empty httpVersion, `headersSize: null`, `timings: {}`, and a content
    with neither size nor text, only a comment; `browser` in the log, `connection` "443"."""
    cached = entry("https://f.test/logo.png", mime="image/png", text=None, time=0,
                   timings={}, startedDateTime="2023-03-29T16:58:59.418-07:00")
    cached["request"].update(httpVersion="", headersSize=None)
    cached["response"].update(httpVersion="", headers=[])
    cached["response"].pop("headersSize")
    cached["response"]["content"] = {"mimeType": "image/png",
                                     "comment": "Response bodies are not included."}
    page = entry("https://f.test/", mime="text/html", text="<p>hi</p>", connection="443",
                 _securityState="secure", serverIPAddress="13.35.121.55",
                 timings={"blocked": 17, "dns": 0, "connect": 0, "ssl": 0, "send": 0,
                          "wait": 6, "receive": 0})
    page["request"]["httpVersion"] = page["response"]["httpVersion"] = "HTTP/3"
    document = har(cached, page, browser={"name": "Firefox", "version": "111.0.1"})
    (first, _, first_body), (second, _, second_body) = read_har(document)
    assert first.started_at == pytest.approx(1680134339.418)  # 23:58:59.418 UTC
    assert first.http_version == "" and first.timings == {} and first.duration == 0
    assert first_body is None and first.response_size_decoded is None
    assert first.content_type == "image/png"
    assert second.http_version == "HTTP/3" and second_body == b"<p>hi</p>"
    assert second.server_addr == "13.35.121.55"
    assert second.timings["first_byte"] == 23.0


def test_safari():
    """Safari (WebKit): "HTTP/2", resources from its memory cache with no request headers,
    an empty httpVersion, -1 sizes, content size 0 yet the text there (with compression 0),
    `_serverPort`, `_fetchType`, `_priority`."""
    css = "body{color:red}"
    memory = entry("https://s.test/style.css", mime="text/css", text=css,
                   _fetchType="Memory Cache", _priority="high")
    memory["request"].update(httpVersion="", headers=[], headersSize=-1, bodySize=-1)
    memory["response"].update(httpVersion="", bodySize=-1, headers=[
        {"name": "Content-Type", "value": "text/css"},
        {"name": "Content-Encoding", "value": "gzip"}])
    memory["response"]["content"].update(size=0, compression=0)
    network = entry("https://s.test/", mime="text/html", text="<p>x</p>",
                    serverIPAddress="13.35.121.29", _serverPort=443, connection="1")
    network["request"]["httpVersion"] = network["response"]["httpVersion"] = "HTTP/2"
    (cached, request_body, body), (loaded, _, _) = read_har(har(memory, network))
    assert body == css.encode() and cached.response_size_decoded == len(css)
    assert cached.response_size is None  # -1, and the text was decoded from gzip
    assert cached.response_body_encoding == ""  # the bytes given are the decoded ones
    assert cached.request_headers == [] and request_body is None  # bodySize -1: unknown
    assert loaded.http_version == "HTTP/2.0" and loaded.server_addr == "13.35.121.29:443"


def test_charles():
    """Charles: no `pages`, `_charlesStatus`, a redirectURL of null, headersSize 0, the
    query "?=" as one empty name/value pair, timings without `blocked` (ssl inside connect),
    whole milliseconds; and a failed request it marks through `_charlesStatus`."""
    ok = entry("https://ch.test/?=", mime="text/html", text="<p>c</p>", time=107,
               startedDateTime="2023-03-29T17:37:42.482-07:00",
               timings={"dns": 43, "connect": 37, "ssl": 26, "send": 1, "wait": 24,
                        "receive": 2})
    ok["request"].update(queryString=[{"name": "", "value": ""}], headersSize=68)
    ok["response"].update(_charlesStatus="COMPLETE", redirectURL=None, headersSize=0,
                          bodySize=8)
    failed = entry("https://ch.test/gone", status=0, text=None)
    failed["response"]["_charlesStatus"] = "FAILED"
    document = har(ok, failed)
    document["log"].pop("pages", None)
    (record, _, body), (dead, _, _) = read_har(document)
    assert record.path == "/?=" and record.url == "https://ch.test/?=" and body == b"<p>c</p>"
    assert record.timings == {"connect": 54.0, "tls_handshake": 80.0, "request_sent": 81.0,
                              "first_byte": 105.0, "complete": 107.0}
    assert record.duration == 107 and record.response_size == 8 and record.error is None
    assert dead.status is None and dead.error == "Charles: FAILED"
    exported = har_entry(record, b"", body)
    assert exported["request"]["queryString"] == [{"name": "", "value": ""}]
    assert exported["timings"]["dns"] == -1 and exported["time"] == 107  # dns is in connect


def test_insomnia():
    """Insomnia: no request headers at all, a GET with an empty `postData` (mimeType "",
    text "", params []), `settingEncodeUrl`, the entry's `comment`, -1 sizes, -1 timings,
    tab-indented JSON text."""
    record = entry("http://mitm.test/", mime="text/html", text="<div>i</div>",
                   comment="from insomnia", timings={"blocked": -1, "dns": -1, "connect": -1,
                                                     "send": 0, "wait": 70.4, "receive": 0,
                                                     "ssl": -1})
    record["request"].update(postData={"mimeType": "", "text": "", "params": []},
                             bodySize=-1, settingEncodeUrl=True)
    text = json.dumps(har(record), indent="\t")
    [(flow_record, request_body, body)] = read_har(text)
    assert request_body == b"" and body == b"<div>i</div>"
    assert flow_record.comment == "from insomnia" and flow_record.request_headers == []
    assert flow_record.timings == {"request_sent": 0.0, "first_byte": 70.4, "complete": 70.4}


def test_chrome_post_with_a_bom():
    """Chrome's POST (postData with a charset in its mimeType, a response of size 0 with
    empty text) in a file that starts with a UTF-8 byte order mark, as bytes and as text."""
    payload = '{"metadata":{"id":1,"name":"Zoë"}}'
    posted = entry("https://m.test/metrics", method="POST", mime="text/plain", text="",
                   connection="159834")
    posted["request"].update(bodySize=len(payload.encode()), httpVersion="http/2.0",
                             postData={"mimeType": "text/plain;charset=UTF-8", "text": payload})
    text = json.dumps(har(posted), ensure_ascii=False)
    for data in ("\ufeff" + text, b"\xef\xbb\xbf" + text.encode()):
        [(record, request_body, body)] = read_har(data)
        assert request_body == payload.encode() and body == b""
        assert record.request_size == len(payload.encode()) and record.method == "POST"


def test_head_with_content_length():
    """A HEAD answered with a Content-Length and no body (a proxy-written file: microseconds
    and "+00:00" in startedDateTime, lower-case headers, "HTTP/2.0", timings without
    blocked or dns)."""
    head = entry("https://files.test/pkg.whl", method="HEAD", mime="application/octet-stream",
                 text="", startedDateTime="2023-12-12T16:23:16.067544+00:00",
                 timings={"connect": 31.7, "ssl": 35.3, "send": 0.3, "receive": 0.6,
                          "wait": 33.6})
    head["request"]["httpVersion"] = head["response"]["httpVersion"] = "HTTP/2.0"
    head["response"]["headers"] = [{"name": "content-length", "value": "1234"},
                                   {"name": "content-type", "value": "application/octet-stream"}]
    head["response"]["content"].update(compression=0)
    [(record, _, body)] = read_har(har(head))
    assert body == b"" and record.method == "HEAD" and record.status == 200
    assert record.response_headers[0] == ("content-length", "1234")
    assert record.started_at == pytest.approx(1702398196.067544)
    assert record.timings["connect"] == 31.7  # ssl > connect: not inside it, taken apart


def test_other_tolerated_shapes():
    """Headers as [name, value] pairs (Slack), numbers as header values, a status as text,
    `postData` with only `params`, no startedDateTime, a response left out entirely."""
    pairs = entry("https://o.test/form", method="POST", status=201)
    pairs["request"]["headers"] = [["X-Pair", "1"], {"name": "X-Num", "value": 5}]
    pairs["request"]["postData"] = {"mimeType": "application/x-www-form-urlencoded",
                                    "params": [{"name": "a", "value": "1 2"}]}
    pairs["response"]["status"] = "201"
    del pairs["startedDateTime"]
    pending = {"request": {"method": "GET", "url": "https://o.test/pending"}}
    (record, posted, _), (waiting, _, body) = read_har(har(pairs, pending))
    assert record.request_headers == [("X-Pair", "1"), ("X-Num", "5")]
    assert posted == b"a=1+2" and record.status == 201 and record.started_at > 1.7e9
    assert waiting.status is None and body is None and waiting.error is None


@pytest.mark.parametrize(("document", "message"), [
    (b"{not json", "not JSON"),
    ({"log": {"entries": {}}}, "no log.entries list"),
    ([1, 2], "no log.entries list"),
    (har("entry"), r"log.entries[0]: expected an object, got a string"),
    (har({"response": {}}), "log.entries[0].request: expected an object, got null"),
    (har({"request": {"url": "https://x.test/"}}), "log.entries[0].request.method: missing"),
    (har(entry("https://x.test/"), {"request": {"method": "GET", "url": "/relative"}}),
     "log.entries[1].request.url: not an absolute URL: '/relative'"),
    (har(entry("https://x.test:99999/")), "log.entries[0].request.url: invalid port"),
    (har(entry("https://x.test/", startedDateTime="yesterday")),
     "log.entries[0].startedDateTime: not an ISO 8601 date: 'yesterday'"),
    (har(entry("https://x.test/", status="OK")),
     "log.entries[0].response.status: expected a status code, got 'OK'"),
    (har({**entry("https://x.test/"), "request": {"method": "GET", "url": "https://x.test/",
                                                   "headers": [{"value": "v"}]}}),
     "log.entries[0].request.headers[0].name: expected a header name, got None"),
    (har({**entry("https://x.test/"), "request": {"method": "GET", "url": "https://x.test/",
                                                   "headers": "Host: x"}}),
     "log.entries[0].request.headers: expected a list of headers, got a string"),
    (har({**entry("https://x.test/"), "response": {"status": 200, "content": {
        "text": "!!", "encoding": "base64"}}}),
     "log.entries[0].response.content.text: invalid base64"),
    (har({**entry("https://x.test/"), "response": {"status": 200, "content": {"text": 5}}}),
     "log.entries[0].response.content.text: expected a string, got a number"),
    (har({**entry("https://x.test/"), "request": {
        "method": "POST", "url": "https://x.test/", "postData": "a=1"}}),
     "log.entries[0].request.postData: expected an object, got a string"),
])
def test_malformed_har_names_the_entry_and_the_field(document, message):
    with pytest.raises(HarError) as info:
        list(read_har(document))
    assert message in str(info.value)
    assert isinstance(info.value, NectoProxyError) and isinstance(info.value, ValueError)


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(HarError, match="cannot read .*missing.har"):
        read_har(tmp_path / "missing.har")

