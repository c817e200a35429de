"""mock, block, delay and throttle through a real proxy (HTTP and HTTPS)."""

from __future__ import annotations

import json
import socket
import time

from nectoproxy_plugin_rules.actions import delay_seconds
from nectoproxy_plugin_rules.model import Delay


def test_mock_answers_without_contacting_the_origin(rules_proxy, origin, recorder):
    rule = {"name": "teapot", "path": "/json", "mock": {
        "status": 418, "headers": {"X-Mock": "yes", "Cache-Control": "no-store"},
        "body": "short and stout\n"}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/json")
    assert response.status_code == 418
    assert response.headers["x-mock"] == "yes"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "short and stout\n"
    assert origin.requests == []
    assert recorder.rules_of("/json") == ["teapot"]


def test_mock_json_body_and_content_type_override(rules_proxy):
    rules = [{"path": "/a", "mock": {"body": {"token": "t", "n": [1, 2]}}},
             {"path": "/b", "mock": {"body": "<p>hi</p>", "headers": {"Content-Type": "text/html"}}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        a = client.get("http://api.example.test/a")
        b = client.get("http://api.example.test/b")
    assert a.headers["content-type"] == "application/json"
    assert a.json() == {"token": "t", "n": [1, 2]}
    assert b.headers["content-type"] == "text/html" and b.text == "<p>hi</p>"


def test_mock_body_file_is_read_on_each_request(rules_proxy, tmp_path):
    body = tmp_path / "user.json"
    body.write_text(json.dumps({"id": 1}))
    rule = {"name": "user", "path": "/users/1", "mock": {"body_file": str(body)}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        first = client.get("http://api.example.test/users/1")
        body.write_text(json.dumps({"id": 1, "edited": True}))
        second = client.get("http://api.example.test/users/1")
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {"id": 1}
    assert second.json() == {"id": 1, "edited": True}


def test_mock_over_https_is_intercepted_and_never_forwarded(rules_proxy, tls_origin):
    rules = [{"name": "login", "url": "https://api.example.test/v1/login", "method": "POST",
              "mock": {"status": 201, "body": {"token": "abc"}}},
             {"name": "origin-mock", "url": f"{tls_origin.url}/json", "mock": {"body": "mocked"}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        login = client.post("https://api.example.test/v1/login", json={"user": "ada"})
        mocked = client.get(tls_origin.url + "/json")
    assert (login.status_code, login.json()) == (201, {"token": "abc"})
    assert mocked.text == "mocked"
    assert tls_origin.requests == []


def test_mock_delay_ms(rules_proxy):
    rule = {"path": "/slow", "mock": {"body": "late", "delay_ms": 300}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        started = time.monotonic()
        response = client.get("http://api.example.test/slow")
        elapsed = time.monotonic() - started
    assert response.text == "late"
    assert elapsed >= 0.29


def test_mock_answers_before_the_request_body_is_read(rules_proxy):
    """The head alone is enough: the client announces a body it never sends."""
    rule = {"method": "POST", "path": "/upload", "mock": {"status": 202, "body": "early"}}
    with rules_proxy([rule]) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST http://api.example.test/upload HTTP/1.1\r\n"
                     b"Host: api.example.test\r\nContent-Length: 1000000\r\n\r\n")
        received = b""
        while b"early" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    assert received.startswith(b"HTTP/1.1 202 ")
    assert received.endswith(b"early")


def test_block_default_and_custom(rules_proxy, origin, tls_origin, recorder):
    rules = [{"name": "ads", "host": "ads.example.test", "block": True},
             {"name": "legal", "url": f"{tls_origin.url}/*", "block": {"status": 451,
                                                                       "body": "not here\n"}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        default = client.get("http://ads.example.test/banner.js")
        custom = client.get(tls_origin.url + "/json")
    assert default.status_code == 403
    assert default.text == "Blocked by NectoProxy rule 'ads'\n"
    assert (custom.status_code, custom.text) == (451, "not here\n")
    assert tls_origin.requests == []
    assert recorder.rules_of("banner.js") == ["ads"]


def test_delay_before_forwarding(rules_proxy, origin, recorder):
    rule = {"name": "lag", "path": "/json", "delay": {"ms": 300, "variance_ms": 50}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        started = time.monotonic()
        response = client.get(origin.url + "/json")
        elapsed = time.monotonic() - started
    assert response.json()["hello"] == "world"
    assert elapsed >= 0.24
    assert recorder.rules_of("/json") == ["lag"]


def test_delay_variance_stays_in_bounds():
    samples = [delay_seconds(Delay(100, 40)) for _ in range(500)]
    assert all(0.06 <= s <= 0.14 for s in samples)
    assert max(samples) - min(samples) > 0.02  # it does vary
    assert delay_seconds(Delay(10, 50)) >= 0


def test_throttle_paces_the_body_and_adds_latency(rules_proxy, origin):
    rules = [{"name": "slow-bytes", "path": "/bytes/*", "throttle": {"bytes_per_second": 20000}},
             {"name": "laggy", "path": "/json", "throttle": {"bytes_per_second": 1e9,
                                                              "latency_ms": 300}}]
    with rules_proxy(rules) as proxy, proxy.client() as client:
        started = time.monotonic()
        response = client.get(origin.url + "/bytes/20000")
        paced = time.monotonic() - started
        started = time.monotonic()
        client.get(origin.url + "/json")
        latency = time.monotonic() - started
    assert len(response.content) == 20000
    assert response.headers["content-length"] == "20000"  # pacing keeps the framing
    assert paced >= 0.9
    assert latency >= 0.29


def arrivals(client, url: str) -> list[tuple[float, int]]:
    """(seconds since the request, bytes) for each piece of the body as it arrives."""
    started = time.monotonic()
    pieces: list[tuple[float, int]] = []
    with client.stream("GET", url) as response:
        for chunk in response.iter_raw():
            pieces.append((time.monotonic() - started, len(chunk)))
    return pieces


def assert_steady(pieces: list[tuple[float, int]], size: int, seconds: float) -> None:
    """All the bytes, taking about ``seconds``, and spread out: by the middle of the transfer
    roughly half has arrived (not all at once at the start or at the end)."""
    total = pieces[-1][0]
    assert sum(n for _, n in pieces) == size
    assert total >= seconds * 0.9
    first_half = sum(n for at, n in pieces if at <= total / 2)
    assert size * 0.25 <= first_half <= size * 0.75, pieces
    assert len(pieces) >= 10


def test_throttle_streams_a_buffered_body_steadily(rules_proxy, origin):
    """The whole body is in the proxy at once; it still leaves in small paced slices."""
    rule = {"path": "/bytes/*", "throttle": {"bytes_per_second": 10000}}
    with rules_proxy([rule]) as proxy, proxy.client() as client:
        pieces = arrivals(client, origin.url + "/bytes/20000")
    assert_steady(pieces, 20000, 2.0)


def test_throttle_streams_a_streamed_body_steadily(rules_proxy, origin):
    """A body larger than the buffer limit, from an origin faster than the rate."""
    rule = {"path": "/bytes/*", "throttle": {"bytes_per_second": 10000}}
    with rules_proxy([rule], proxy={"body_buffer_limit": 100}) as proxy, \
            proxy.client() as client:
        pieces = arrivals(client, origin.url + "/bytes/20000?chunked=1")
    assert_steady(pieces, 20000, 2.0)
