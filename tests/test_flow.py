"""The objects hooks receive: Headers, Request, Response (no sockets needed)."""

from __future__ import annotations

import gzip

import h11
import pytest

from nectoproxy import Headers, Request, Response


def parsed(raw: bytes) -> h11.Request:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    return event


def test_headers_case_insensitive_ordered_multi_valued():
    headers = Headers([("Set-Cookie", "a=1"), ("X-A", "1"), ("set-cookie", "b=2")])
    assert headers["SET-COOKIE"] == "a=1, b=2"
    assert headers.get_all("set-cookie") == ["a=1", "b=2"]
    headers["x-a"] = "2"
    headers.add("X-New", "3")
    del headers["Set-Cookie"]
    assert headers.fields == [("X-A", "2"), ("X-New", "3")]
    assert list(headers) == ["X-A", "X-New"] and len(headers) == 2


def test_unchanged_parsed_headers_skip_revalidation_but_changes_are_validated():
    event = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n")
    headers = Headers.from_h11(event.headers)
    headers.without({"connection"})
    assert isinstance(headers.to_h11(), type(event.headers))
    assert [n for n, _ in headers.to_h11().raw_items()] == [b"Host", b"X-A"]
    headers.fields[1] = ("X-A", "bad\r\nInjected: yes")  # an in-place edit is noticed too
    assert isinstance(headers.to_h11(), list)
    with pytest.raises(h11.LocalProtocolError):
        h11.Request(method="GET", target="/", headers=headers.to_h11())


def test_request_url_parts_and_query():
    request = Request.make("GET", "https://example.test:8443/a/b?x=1&y=2")
    assert (request.scheme, request.host, request.port) == ("https", "example.test", 8443)
    assert request.pathname == "/a/b" and request.query["y"] == "2"
    request.query["x"] = "one two"
    assert request.path == "/a/b?x=one+two&y=2"
    request.url = "http://[::1]/z"
    assert (request.host, request.port, request.authority) == ("::1", 80, "[::1]")


def test_content_decodes_and_reencodes_gzip():
    response = Response.make(200, gzip.compress(b"hello"), {"Content-Encoding": "gzip"})
    assert response.content == b"hello" and response.text == "hello"
    response.text = "changed"
    assert gzip.decompress(response.raw_content) == b"changed"
    assert response.headers["content-length"] == str(len(response.raw_content))


def test_response_make_json_and_text():
    assert Response.make(201, {"a": 1}).json() == {"a": 1}
    text = Response.make(404, "nope")
    assert text.headers["content-type"].startswith("text/plain") and text.reason == "Not Found"
