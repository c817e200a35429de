"""The filter language: one table of expressions, checked through SQL and through Python."""

from __future__ import annotations

import dataclasses
import gzip

import pytest

from nectoproxy.store import FilterError, FlowRecord, SQLiteStore, parse_filter, schema

H = list[tuple[str, str]]


def _flow(id: str, url: str, *, status: int | None = 200, method: str = "GET",
          content_type: str | None = None, request_headers: H | None = None,
          response_headers: H | None = None, request_body: bytes = b"",
          response_body: bytes = b"", **fields: object) -> tuple[FlowRecord, bytes, bytes]:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    host = authority.split(":")[0]
    record = FlowRecord(id=id, url=url, scheme=scheme, host=host, path=slash + path,
                        method=method, status=status, content_type=content_type,
                        request_headers=request_headers or [("Host", host)],
                        response_headers=response_headers, started_at=1_700_000_000.0,
                        **fields)  # type: ignore[arg-type]
    return record, request_body, response_body


FLOWS = [
    _flow("home", "https://example.com/", content_type="text/html",
          request_headers=[("Host", "example.com"), ("User-Agent", "curl/8.5")],
          response_headers=[("Content-Type", "text/html"), ("Set-Cookie", "a=1")],
          response_body=b"<html>Welcome home</html>"),
    _flow("api-json", "https://api.example.com/v1/users?id=7", content_type="application/json",
          request_headers=[("Host", "api.example.com"), ("Authorization", "Bearer xyz")],
          response_headers=[("Content-Type", "application/json")],
          response_body=b'{"user": "Alice", "token": "abc123"}', mark="red", tags=["auth"]),
    _flow("api-post", "https://api.example.com/v1/login", method="POST", status=401,
          content_type="application/json; charset=utf-8",
          request_headers=[("Host", "api.example.com"), ("X-Debug", "1")],
          request_body=b"username=bob&password=hunter2",
          response_body=b'{"error": "bad credentials"}'),
    _flow("options", "https://api.example.com/v1/users", method="OPTIONS", status=204),
    _flow("notfound", "http://static.test/img/logo.png", status=404, content_type="text/plain",
          mark="blue", comment="Broken logo"),
    _flow("server-error", "http://static.test/app.js?v=2", status=503,
          content_type="application/javascript",
          response_headers=[("Retry-After", "30")], tags=["flaky", "Retry"]),
    _flow("failed", "https://down.example.org/", status=None, error="connection refused"),
    _flow("pending", "https://slow.example.com/wait", status=None),
    _flow("tunnel", "https://pinned.example.net:443", status=None, method="CONNECT",
          kind="tunnel", port=443, bytes_up=100, bytes_down=2000),
    _flow("redirect", "http://example.com/old", status=301,
          response_headers=[("Location", "https://example.com/new")],
          request_headers_sent=[("Host", "example.com"), ("X-Added", "yes")],
          modified_by=["rules"]),
    _flow("gzip", "https://cdn.example.com/data.json", content_type="application/json",
          response_body_encoding="gzip",
          response_body=gzip.compress(b'{"greeting": "compressed hello"}')),
    _flow("binary", "https://cdn.example.com/blob.bin", content_type="application/octet-stream",
          response_body=b"\x00\x01binarysecret"),
]
ALL = {record.id for record, _, _ in FLOWS}

CASES = [
    ("", ALL),
    ("   ", ALL),
    ("host:api.example.com", {"api-json", "api-post", "options"}),
    ("host:API.Example.COM", {"api-json", "api-post", "options"}),
    ("host:*.example.com", {"api-json", "api-post", "options", "pending", "gzip", "binary"}),
    ("host:example", set()),
    ("~d example\\.com$", {"home", "api-json", "api-post", "options", "pending", "redirect",
                          "gzip", "binary"}),
    ("method:post", {"api-post"}),
    ("method:OPTIONS or method:CONNECT", {"options", "tunnel"}),
    ("status:404", {"notfound"}),
    ("status:4xx", {"api-post", "notfound"}),
    ("status:>=400", {"api-post", "notfound", "server-error"}),
    ("status:<300", {"home", "api-json", "options", "gzip", "binary"}),
    ("status:200-204", {"home", "api-json", "options", "gzip", "binary"}),
    ("not status:2xx", {"api-post", "notfound", "server-error", "failed", "pending", "tunnel",
                        "redirect"}),
    ("~c 301", {"redirect"}),
    ("url:users", {"api-json", "options"}),
    ("url:\\?id=\\d+$", {"api-json"}),
    ("~u 'v=2'", {"server-error"}),
    ("path:/v1", {"api-json", "api-post", "options"}),
    ("path:*.js", {"server-error"}),
    ("path:/img/*.png", {"notfound"}),
    ("header:x-debug", {"api-post"}),
    ("header:content-type=JSON", {"api-json"}),
    ("header:authorization=bearer", {"api-json"}),
    ("header:x-added", {"redirect"}),
    ("reqheader:retry-after", set()),
    ("resheader:retry-after=30", {"server-error"}),
    ("~h 'user-agent: curl'", {"home"}),
    ("~hq location", set()),
    ("~hs '^location: https'", {"redirect"}),
    ("~hs ^location: https", set()),  # the value is one word; "https" is a second term
    ("body:welcome", {"home"}),
    ("body:ALICE", {"api-json"}),
    ("body:hunter2", {"api-post"}),
    ("reqbody:credentials", set()),
    ("resbody:credentials", {"api-post"}),
    ("~bq password", {"api-post"}),
    ("~bs password", set()),
    ("~b 'compressed hello'", {"gzip"}),
    ("body:binarysecret", set()),
    ("body:c1", {"api-json"}),
    ("type:json", {"api-json", "api-post", "gzip"}),
    ("~t javascript", {"server-error"}),
    ("error:refused", {"failed"}),
    ("is:error", {"failed"}),
    ("~e", {"failed"}),
    ("is:pending", {"pending"}),
    ("~q", {"failed", "pending"}),
    ("~s", ALL - {"failed", "pending", "tunnel"}),
    ("is:marked", {"api-json", "notfound"}),
    ("~marked", {"api-json", "notfound"}),
    ("mark:red", {"api-json"}),
    ("marked:blue", {"notfound"}),
    ("~marker blue", {"notfound"}),
    ("tag:auth", {"api-json"}),
    ("tag:retry", {"server-error"}),
    ("comment:broken", {"notfound"}),
    ("scheme:http", {"notfound", "server-error", "redirect"}),
    ("kind:tunnel", {"tunnel"}),
    ("is:tunnel", {"tunnel"}),
    ("is:modified", {"redirect"}),
    ("logo", {"notfound"}),
    ('"v1/login"', {"api-post"}),
    ("static.test logo", {"notfound"}),
    ("host:api.example.com and status:4xx and not method:OPTIONS", {"api-post"}),
    ("host:api.example.com status:2xx", {"api-json", "options"}),
    ("~d example.com & ~c 404", set()),
    ("~d static & ~c 404", {"notfound"}),
    ("host:static.test | mark:red", {"notfound", "server-error", "api-json"}),
    ("!host:*.example.com && !host:example.com",
     {"notfound", "server-error", "failed", "tunnel"}),
    ("(type:json or type:html) and not body:alice", {"home", "api-post", "gzip"}),
    ("method:GET or method:POST and status:401", ALL - {"options", "tunnel"}),
    ("(method:GET or method:POST) and status:401", {"api-post"}),
    ("not not is:error", {"failed"}),
    ("not error:refused", ALL - {"failed"}),
    ("header:x-note=\"a b\"", set()),
    ("host:\"x' OR 1=1 --\"", set()),
    ("url:\"x' OR '1'='1\"", set()),
]


@pytest.fixture(scope="module", params=["fts", "no-fts"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    if request.param == "no-fts":
        mp.setattr(schema, "fts5_available", lambda conn: False)
    s = SQLiteStore(tmp_path_factory.mktemp(request.param) / "store.db")
    mp.undo()
    assert s.fts is (request.param == "fts")
    s.start_run()
    for record, request_body, response_body in FLOWS:
        s.save_flow(record, request_body, response_body)
    yield s
    s.close()


def _subject(record: FlowRecord, request_body: bytes, response_body: bytes) -> dict[str, object]:
    return {**dataclasses.asdict(record), "request_body": request_body,
            "response_body": response_body}


@pytest.mark.parametrize(("expression", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_sql_and_python_agree_with_the_table(store, expression, expected):
    flows, cursor = store.list_flows(filter=expression, limit=1000)
    assert cursor is None
    assert {f.id for f in flows} == expected, "SQL"
    parsed = parse_filter(expression)
    assert {r.id for r, q, s in FLOWS if parsed.matches(_subject(r, q, s))} == expected, "Python"


def test_python_predicate_takes_records_as_stored(store):
    """What the store gives back (a FlowRecord, no bodies) works as a subject too."""
    parsed = parse_filter("host:api.example.com and header:authorization and not is:pending")
    matched = {r.id for r in map(store.get_flow, sorted(ALL)) if r and parsed.matches(r)}
    assert matched == {"api-json"}


def test_filters_combine_with_search_and_pagination(store):
    flows, cursor = store.list_flows(filter="host:api.example.com", limit=2)
    rest, end = store.list_flows(filter="host:api.example.com", limit=2, cursor=cursor)
    assert end is None and len(flows) == 2 and len(rest) == 1
    assert [f.id for f in flows + rest] == ["options", "api-post", "api-json"]  # newest first
    found, _ = store.list_flows(filter="status:2xx", search="alice")
    assert [f.id for f in found] == ["api-json"]


def test_stats_take_a_filter(store):
    stats = store.stats(filter="host:api.example.com")
    assert stats.total == 3 and stats.methods == {"GET": 1, "OPTIONS": 1, "POST": 1}
    assert stats.status_classes == {"2xx": 2, "4xx": 1}


def test_operator_precedence_and_implicit_and():
    def tree(text: str) -> object:
        return parse_filter(text).node

    assert tree("a or b c") == tree("a or (b and c)")
    assert tree("not a b") == tree("(not a) and b")
    assert tree("a | b & c") == tree("a || (b && c)") == tree("a OR (b AND c)")
    assert tree("!a") == tree("not a") == tree("! a")


def test_quotes_escape_operators_and_spaces():
    node = parse_filter('"a and b" \'(x)\' "say \\"hi\\""').node
    assert [term.value for term in node.items] == ["a and b", "(x)", 'say "hi"']
    assert parse_filter("header:x-note=\"a b\"").node.value == "a b"
    assert parse_filter("url:a&b=1|2").node.pattern == "a&b=1|2"  # operators need spaces


ERRORS = [
    ("status:", 7, "expected a value after 'status:'"),
    ("host:api.example.com and status:", 32, "expected a value after 'status:'"),
    ("host:x and", 10, "expected a term after 'and'"),
    ("a or or b", 5, "expected a term after 'or'"),
    ("not", 3, "expected a term after 'not'"),
    ("(host:x", 0, "unclosed '('"),
    ("host:x)", 6, "unexpected ')'"),
    ("()", 1, "unexpected ')'"),
    ("and x", 0, "unexpected 'and'"),
    ('url:"abc', 4, "unterminated quoted string"),
    ("status:4x4", 7, "invalid status '4x4'"),
    ("mark:pink", 5, "unknown mark 'pink'"),
    ("url:(", 4, "expected a value after 'url:'"),
    ('url:"("', 4, "invalid regular expression"),
    ("~d", 2, "expected a value after '~d'"),
    ("~d )", 3, "expected a value after '~d'"),
    ("~zz x", 0, "unknown filter '~zz'"),
    ("is:bogus", 3, "unknown flag 'is:bogus'"),
    ("header:=x", 7, "expected a header name"),
]


@pytest.mark.parametrize(("expression", "position", "message"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_syntax_errors_say_where(expression, position, message):
    with pytest.raises(FilterError) as info:
        parse_filter(expression)
    assert info.value.position == position
    assert info.value.message.startswith(message)
    assert str(info.value).endswith(f" at {position}")
    assert isinstance(info.value, ValueError)


def test_parameters_carry_user_input_never_the_sql():
    sql, params = parse_filter("host:\"x' OR 1=1 --\" url:a\\b body:'\"q\"'").sql()
    assert "1=1" not in sql and "x' or 1=1 --" in params  # host values are folded
    assert sql.count("?") == len(params)


@pytest.mark.parametrize("fts", [True, False], ids=["fts", "no-fts"])
def test_trailers_are_header_fields_to_filters_and_search(tmp_path, monkeypatch, fts):
    """gRPC puts its status in trailers: ``resheader:`` and ``search`` find them, in SQL and
    in Python alike; a request's trailers are request header fields."""
    if not fts:
        monkeypatch.setattr(schema, "fts5_available", lambda conn: False)
    store = SQLiteStore(tmp_path / "store.db")
    monkeypatch.undo()
    store.start_run()
    failed = _flow("failed-call", "https://grpc.test/echo.Echo/Unary", method="POST",
                   content_type="application/grpc",
                   response_headers=[("content-type", "application/grpc")],
                   request_trailers=[("x-checksum", "c0ffee")],
                   response_trailers=[("grpc-status", "14"),
                                      ("grpc-message", "backend unavailable")])
    ok = _flow("ok-call", "https://grpc.test/echo.Echo/Unary", method="POST",
               content_type="application/grpc",
               response_trailers=[("grpc-status", "0")])
    try:
        for record, request_body, response_body in (failed, ok):
            store.save_flow(record, request_body, response_body)
        for expression, expected in [
                ("resheader:grpc-status=14", {"failed-call"}),
                ("header:grpc-status", {"failed-call", "ok-call"}),
                ("reqheader:grpc-status", set()),
                ("reqheader:x-checksum=C0FFEE", {"failed-call"}),
                ("~hs '^grpc-message: backend'", {"failed-call"}),
                ("not resheader:grpc-status=0", {"failed-call"})]:
            flows, _ = store.list_flows(filter=expression)
            assert {f.id for f in flows} == expected, f"SQL: {expression}"
            parsed = parse_filter(expression)
            assert {r.id for r, q, s in (failed, ok) if parsed.matches(_subject(r, q, s))} \
                == expected, f"Python: {expression}"
            assert {r.id for r in map(store.get_flow, ["failed-call", "ok-call"])
                    if r and parsed.matches(r)} == expected, f"stored record: {expression}"
        found, _ = store.list_flows(search="Backend Unavailable")
        assert [f.id for f in found] == ["failed-call"]
    finally:
        store.close()
