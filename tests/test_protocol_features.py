"""Upgrade/WebSocket relay, upstream proxy chaining, proxy authentication, limits, OPTIONS *."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time

import pytest
from wire import UPGRADE_REQUEST, read_head, recv_exactly, upgrade_echo

from nectoproxy.testing import RunningProxy, proxy_config
from nectoproxy.testing.origin import RawServer, free_port


def test_websocket_upgrade_relays_both_ways(make_proxy):
    completed = []

    class Watch:
        def on_complete(self, flow):
            completed.append((flow.response.status_code, flow.metadata.get("upgraded")))

    with RawServer(upgrade_echo) as origin, make_proxy(plugins=[Watch()]) as proxy:
        url = f"http://127.0.0.1:{origin.port}/chat"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(UPGRADE_REQUEST.format(target=url, host=f"127.0.0.1:{origin.port}")
                         .encode())
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 101")
            assert b"sec-websocket-accept: dummy" in head.lower()
            assert recv_exactly(sock, 5, rest) == b"hello"
            for message in (b"ping", b"frame two" * 1000):
                sock.sendall(message)
                assert recv_exactly(sock, len(message)) == message.upper()
        deadline = time.monotonic() + 5
        while not completed and time.monotonic() < deadline:
            time.sleep(0.02)
    assert completed == [(101, "websocket")]


def test_websocket_upgrade_inside_intercepted_tls(make_proxy, origin_ca):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("localhost").configure_cert(server_context)
    with RawServer(upgrade_echo, ssl_context=server_context) as origin, make_proxy() as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(f"CONNECT localhost:{origin.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        client_context = ssl.create_default_context(cafile=str(proxy.ca_path))
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(UPGRADE_REQUEST.format(target="/chat", host="localhost").encode())
            head, rest = read_head(tls)
            assert head.startswith(b"HTTP/1.1 101")
            assert recv_exactly(tls, 5, rest) == b"hello"
            tls.sendall(b"over tls")
            assert recv_exactly(tls, 8) == b"OVER TLS"


def test_upgrade_refused_by_origin_is_a_normal_response(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(UPGRADE_REQUEST.format(target=f"{origin.url}/json", host="x").encode())
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert recv_exactly(sock, 26, rest) == b'{"hello": "world", "n": 1}'


@pytest.fixture
def chained(shared_certs_dir, origin_ca_path, tmp_path):
    """Proxy A (the one tested) chained to proxy B (with authentication) as its upstream."""
    # B relays TLS to localhost untouched, so A's upstream TLS reaches the real origin.
    upstream = RunningProxy(proxy_config(tmp_path / "b-certs", origin_ca_path, {"proxy": {
        "proxy_auth": "bob:s3cret", "passthrough": ["localhost"]}}))
    with upstream:
        requests = []

        class Seen:
            def on_request_headers(self, flow):
                requests.append((flow.request.method, flow.request.url))

        upstream.proxy.hooks.register(Seen(), __import__("nectoproxy.plugins").plugins.PluginInfo(
            "seen", "object", "test"))
        config = proxy_config(shared_certs_dir, origin_ca_path, {"proxy": {
            "upstream_proxy": f"http://bob:s3cret@127.0.0.1:{upstream.port}",
            "no_upstream": ["direct.test"]}})
        with RunningProxy(config) as front:
            yield front, requests


def test_upstream_proxy_chaining_plain_and_https(chained, origin, tls_origin):
    front, seen_by_upstream = chained
    with front.client() as client:
        assert client.get(origin.url + "/json").json() == {"hello": "world", "n": 1}
    result = front.curl(f"https://localhost:{tls_origin.port}/json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'{"hello": "world", "n": 1}'
    # The upstream proxy saw the plain request in absolute form and the TLS as a CONNECT.
    assert ("GET", origin.url + "/json") in seen_by_upstream
    assert any(method == "GET" and url.startswith("https://localhost:")
               for method, url in seen_by_upstream) is False  # TLS stays opaque to it


def test_upstream_proxy_refusal_is_reported(origin_ca_path, shared_certs_dir, tmp_path, origin):
    with RunningProxy(proxy_config(tmp_path / "b", origin_ca_path,
                                   {"proxy": {"proxy_auth": "bob:right"}})) as upstream:
        config = proxy_config(shared_certs_dir, origin_ca_path, {"proxy": {
            "upstream_proxy": f"http://bob:wrong@127.0.0.1:{upstream.port}"}})
        with RunningProxy(config) as front:
            with front.client() as client:
                plain = client.get(origin.url + "/")
            tls = front.curl("https://localhost:1/")
    assert plain.status_code == 407  # the upstream proxy's own answer, relayed
    assert tls.returncode == 0, tls.stderr  # our own answer inside the intercepted tunnel:
    assert tls.stdout == (f"upstream proxy 127.0.0.1:{upstream.port} refused CONNECT "
                          "localhost:1: 407 Proxy Authentication Required\n").encode()


def test_unreachable_upstream_proxy_is_502(make_proxy, origin):
    port = free_port()
    config = {"proxy": {"upstream_proxy": f"http://127.0.0.1:{port}"}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/")
    assert response.status_code == 502 and "refused" in response.text


def test_proxy_authentication(make_proxy, origin, tls_origin, caplog):
    config = {"proxy": {"proxy_auth": "alice:wonder land"}}
    with make_proxy(config=config) as proxy:
        with proxy.client() as client:
            denied = client.get(origin.url + "/")
        assert denied.status_code == 407
        assert denied.headers["proxy-authenticate"] == 'Basic realm="NectoProxy"'
        ok = proxy.curl("--proxy-user", "alice:wonder land", f"{origin.url}/echo")
        assert ok.returncode == 0, ok.stderr
        assert b"Proxy-Authorization" not in ok.stdout  # never forwarded upstream
        tls = proxy.curl("--proxy-user", "alice:wonder land",
                         f"https://localhost:{tls_origin.port}/json")
        assert tls.returncode == 0, tls.stderr
        wrong = proxy.curl("--proxy-user", "alice:nope", "-o", "/dev/null", "-w",
                           "%{http_code}", f"{origin.url}/")
        assert wrong.stdout == b"407"
    secret = base64.b64encode(b"alice:wonder land").decode()
    assert "wonder land" not in caplog.text and secret not in caplog.text
    assert "proxy authentication failed" in caplog.text


def test_too_many_headers_is_431(make_proxy, origin):
    with make_proxy(config={"proxy": {"max_header_count": 20}}) as proxy:
        headers = "".join(f"X-H{i}: {i}\r\n" for i in range(30))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(f"GET {origin.url}/ HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 431")


def test_max_body_size(make_proxy, origin):
    with (make_proxy(config={"proxy": {"max_body_size": 100_000}}) as proxy,
          proxy.client() as client):
        too_big = client.post(origin.url + "/upload", content=b"x" * 200_000)
        assert too_big.status_code == 413
        chunked = client.post(origin.url + "/upload",
                              content=iter([b"y" * 60_000, b"y" * 60_000]))
        assert chunked.status_code == 413
        fits = client.post(origin.url + "/upload", content=b"z" * 1000)
        assert fits.json()["length"] == 1000
        big_response = client.get(origin.url + "/bytes/200000")
        assert big_response.status_code == 502
        assert "max_body_size" in big_response.text


def test_options_asterisk_in_absolute_form(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"OPTIONS http://127.0.0.1:{origin.port} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        head, _ = read_head(sock)
    assert origin.requests[-1].method == "OPTIONS" and origin.requests[-1].path == "*"
    assert head.split(b" ")[1] in (b"200", b"204", b"404", b"405", b"501")


def test_graceful_shutdown_lets_in_flight_request_finish(make_proxy, origin):
    result = {}
    running = make_proxy()
    with running:
        client = running.client()

        def slow_request():
            result["response"] = client.get(origin.url + "/slow?delay=1")

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)  # the request is in flight
    # Leaving the block stopped the proxy: the in-flight request was allowed to finish.
    worker.join(10)
    client.close()
    assert result["response"].status_code == 200 and result["response"].text == "slow"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
