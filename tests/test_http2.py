"""HTTP/2 (issue 16, the engine): h2 clients and origins through intercepted TLS, each side
speaking what it negotiated; every stream a flow, failures confined to their stream.

Real clients (curl --http2, httpx http2=True, a raw ``h2`` client in h2wire.py), real
origins (the HTTP/1.1 :class:`Origin`, the HTTP/2 :class:`H2Origin`), real TLS.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import httpx
import pytest
from h2wire import H2Client, StreamResult
from test_capture import Captured
from wire import read_head, wait_until

from nectoproxy.flow import Response
from nectoproxy.testing import RunningProxy
from nectoproxy.testing.h2origin import H2Origin
from nectoproxy.testing.origin import Origin, RawServer, pattern_bytes

KIB = 1024
MIB = 1024 * KIB
SIZES = [0, 1, 64 * KIB, 5 * MIB]


@pytest.fixture
def h2_origin(origin_ca: Any) -> Iterator[H2Origin]:
    with H2Origin(ca=origin_ca) as server:
        yield server
    assert not server.errors


@pytest.fixture(params=["h1-origin", "h2-origin"])
def any_origin(request: pytest.FixtureRequest, origin_ca: Any) -> Iterator[Origin | H2Origin]:
    """An HTTPS origin speaking HTTP/1.1 only, or HTTP/2 only."""
    if request.param == "h2-origin":
        with H2Origin(ca=origin_ca) as h2_server:
            yield h2_server
        assert not h2_server.errors
    else:
        with Origin(tls=True, ca=origin_ca) as h1_server:
            yield h1_server


def base(server: Origin | H2Origin) -> str:
    return f"https://localhost:{server.port}"


def h2_client(proxy: RunningProxy, **kwargs: Any) -> httpx.Client:
    return proxy.client(http2=True, **kwargs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_client(proxy: RunningProxy, server: Origin | H2Origin, **kwargs: Any) -> H2Client:
    return H2Client(proxy.port, str(proxy.ca_path), "localhost", server.port, **kwargs)


# -- clients and origins -------------------------------------------------------------------------


def test_curl_http2_through_the_proxy(proxy: RunningProxy, any_origin: Origin | H2Origin
                                      ) -> None:
    result = proxy.curl("--http2", "-w", "\n%{http_version}", base(any_origin) + "/bytes/1000")
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2" and body == pattern_bytes(1000)


@pytest.mark.parametrize("size", SIZES)
def test_httpx_http2_bodies_are_byte_exact_both_ways(proxy: RunningProxy,
                                                      any_origin: Origin | H2Origin,
                                                      size: int) -> None:
    body = pattern_bytes(size, seed=7)
    with h2_client(proxy) as client:
        down = client.get(base(any_origin) + f"/bytes/{size}?seed=3")
        assert down.http_version == "HTTP/2" and down.status_code == 200
        assert down.content == pattern_bytes(size, seed=3)
        if isinstance(any_origin, H2Origin):
            up = client.post(base(any_origin) + "/echo", content=body)
            assert up.http_version == "HTTP/2" and sha(up.content) == sha(body)
        else:
            up = client.post(base(any_origin) + "/upload", content=body)
            assert up.http_version == "HTTP/2"
            assert up.json() == {"sha256": sha(body), "length": size}


@pytest.mark.parametrize("size", SIZES)
def test_http1_client_to_an_h2_origin(proxy: RunningProxy, h2_origin: H2Origin,
                                      size: int) -> None:
    body = pattern_bytes(size, seed=5)
    with proxy.client() as client:
        up = client.post(base(h2_origin) + "/echo", content=body)
        assert up.http_version == "HTTP/1.1" and up.status_code == 200
        assert sha(up.content) == sha(body)
        down = client.get(base(h2_origin) + f"/bytes/{size}")
        assert down.content == pattern_bytes(size)
    request = h2_origin.requests[0]
    assert request.header(":authority") == f"localhost:{h2_origin.port}"
    assert request.header(":scheme") == "https" and request.header(":method") == "POST"
    assert request.header("host") is None and request.header("connection") is None
    assert request.body_length == size and request.body_sha256 == sha(body)


def test_h2_client_to_h1_origin_gets_a_host_header(proxy: RunningProxy, tls_origin: Origin
                                                   ) -> None:
    with h2_client(proxy) as client:
        response = client.get(base(tls_origin) + "/echo")
    echoed = response.json()
    headers = {k.lower(): v for k, v in echoed["headers"]}
    assert headers["host"] == f"localhost:{tls_origin.port}"
    assert echoed["http_version"] == "HTTP/1.1"
    assert not any(k.startswith(":") for k in headers)


def test_one_origin_connection_multiplexes_many_flows(make_proxy: Callable[..., RunningProxy],
                                                      h2_origin: H2Origin) -> None:
    with make_proxy() as proxy:
        for _ in range(2):  # two client connections, one HTTP/1.1 and one HTTP/2
            with proxy.client() as h1, h2_client(proxy) as h2c:
                assert h1.get(base(h2_origin) + "/bytes/10").status_code == 200
                assert h2c.get(base(h2_origin) + "/bytes/10").status_code == 200
    assert h2_origin.connections == 1
    assert len(h2_origin.requests) == 4


def test_http2_off_offers_only_http11(make_proxy: Callable[..., RunningProxy],
                                      h2_origin: H2Origin, tls_origin: Origin) -> None:
    with make_proxy(config={"proxy": {"http2": False}}) as proxy:
        with raw_client(proxy, tls_origin, preface=False) as raw:
            assert raw.alpn == "http/1.1"
        with h2_client(proxy) as client:
            response = client.get(base(tls_origin) + "/json")
            assert response.http_version == "HTTP/1.1"
            # The origin is offered http/1.1 only too: an h2-only origin cannot answer.
            assert client.get(base(h2_origin) + "/bytes/1").status_code == 505


def test_http11_only_client_is_unaffected(proxy: RunningProxy, tls_origin: Origin) -> None:
    with raw_client(proxy, tls_origin, alpn=("http/1.1",), preface=False) as raw:
        assert raw.alpn == "http/1.1"
        raw.sock.sendall(f"GET /json HTTP/1.1\r\nHost: localhost:{tls_origin.port}\r\n\r\n"
                         .encode())
        head, _ = read_head(raw.sock)
        assert head.startswith(b"HTTP/1.1 200")


def test_through_an_upstream_proxy(make_proxy: Callable[..., RunningProxy],
                                   h2_origin: H2Origin, tls_origin: Origin) -> None:
    with make_proxy() as upstream, \
            make_proxy(config={"proxy": {"upstream_proxy": upstream.url,
                                         "upstream_ca": str(upstream.ca_path)}}) as proxy, \
            h2_client(proxy) as client:
        to_h2 = client.get(base(h2_origin) + "/bytes/70000")
        to_h1 = client.get(base(tls_origin) + "/bytes/70000")
    assert to_h2.http_version == to_h1.http_version == "HTTP/2"
    assert to_h2.content == to_h1.content == pattern_bytes(70000)
    assert h2_origin.requests[0].header(":authority") == f"localhost:{h2_origin.port}"


# -- bodies, trailers, streaming -------------------------------------------------------------------


class Watcher:
    """Implements the body hooks, so the proxy tries to buffer every body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool, str | None]] = []

    def on_request(self, flow: Any) -> None:
        self.seen.append(("request", flow.request.http_version, flow.request.streamed,
                          flow.request.headers.get("host")))

    def on_response(self, flow: Any) -> None:
        self.seen.append(("response", flow.response.http_version, flow.response.streamed,
                          None))


def test_bodies_over_the_buffer_limit_stream(make_proxy: Callable[..., RunningProxy],
                                             any_origin: Origin | H2Origin) -> None:
    watcher = Watcher()
    body = pattern_bytes(3 * MIB + 5, seed=2)
    path = "/echo" if isinstance(any_origin, H2Origin) else "/upload"
    with make_proxy(plugins=[watcher], config={"proxy": {"body_buffer_limit": 64 * KIB}}) \
            as proxy, h2_client(proxy) as client:
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 100_000):
                yield body[start:start + 100_000]

        up = client.post(base(any_origin) + path, content=chunks())
        down = client.get(base(any_origin) + f"/bytes/{3 * MIB}")
    assert up.status_code == 200 and down.content == pattern_bytes(3 * MIB)
    if isinstance(any_origin, H2Origin):
        assert sha(up.content) == sha(body)
        assert watcher.seen[1][1] == "HTTP/2.0"  # the response came over HTTP/2 too
    else:
        assert up.json()["sha256"] == sha(body)
        assert watcher.seen[1][1] == "HTTP/1.1"
    host = f"localhost:{any_origin.port}"
    assert watcher.seen[0] == ("request", "HTTP/2.0", True, host)
    assert watcher.seen[3][2] is True
    assert watcher.seen[2] == ("request", "HTTP/2.0", False, host)


def test_trailers_from_an_h2_origin_reach_h2_and_h1_clients(proxy: RunningProxy,
                                                           h2_origin: H2Origin) -> None:
    with raw_client(proxy, h2_origin) as raw:
        result = raw.get("/trailers", headers=[(b"te", b"trailers")])
    assert result.status == 200 and bytes(result.body) == b"ok"
    assert result.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
    assert h2_origin.requests[0].header("te") == "trailers"  # kept for gRPC
    # An HTTP/1.1 client that accepts trailers gets them as chunked trailers.
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    target = f"localhost:{h2_origin.port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    read_head(sock)
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(f"GET /trailers HTTP/1.1\r\nHost: {target}\r\nTE: trailers\r\n"
                    "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"2\r\nok\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n"


def test_request_trailers_reach_an_h2_origin(proxy: RunningProxy, h2_origin: H2Origin) -> None:
    with raw_client(proxy, h2_origin) as raw:
        result = raw.get("/echo", method="POST", body=b"payload",
                         headers=[(b"te", b"trailers")],
                         trailers=[(b"x-checksum", b"abc")])
    assert bytes(result.body) == b"payload"
    assert h2_origin.requests[0].trailers == [(b"x-checksum", b"abc")]
    assert result.trailers == [(b"x-checksum", b"abc")]


def test_trailers_from_an_h1_origin_reach_an_h2_client(proxy: RunningProxy,
                                                       origin_ca: Any) -> None:
    def handler(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n"
                     b"\r\n5\r\nhello\r\n0\r\ngrpc-status: 7\r\n\r\n")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_ca.issue_cert("localhost").configure_cert(context)
    with RawServer(handler, ssl_context=context) as server, raw_client(proxy, server) as raw:
        result = raw.get("/")
    assert result.status == 200 and bytes(result.body) == b"hello"
    assert result.trailers == [(b"grpc-status", b"7")]
    assert b"transfer-encoding" not in dict(result.headers)


def test_bidirectional_streaming(proxy: RunningProxy, h2_origin: H2Origin) -> None:
    """Each request chunk comes back before the next is sent: nothing waits for the end of
    a body (gRPC bidirectional streaming)."""
    with raw_client(proxy, h2_origin) as raw:
        stream_id = raw.request("/stream", method="POST",
                                headers=[(b"content-type", b"application/grpc"),
                                         (b"te", b"trailers")], end=False)
        result = raw.results[stream_id]
        for n in range(1, 6):
            raw.send_body(stream_id, f"ping {n};".encode(), end=False)
            expected = "".join(f"ping {i};" for i in range(1, n + 1)).encode()
            assert raw.until(lambda e=expected: bytes(result.body) == e), result
        raw.conn.end_stream(stream_id)
        raw.flush()
        assert raw.until(lambda: result.done)
    assert result.ended and result.trailers == [(b"x-chunks", b"5")]


# -- hooks, kills and answers per stream ---------------------------------------------------------


class KillOne:
    """Kills the flow of ``/bytes/...?kill``; answers ``/answer`` itself."""

    def __init__(self) -> None:
        self.versions: set[str] = set()

    def on_request(self, flow: Any) -> None:
        self.versions.add(flow.request.http_version)
        if "kill" in flow.request.query:
            flow.kill("killed by the test")
        elif flow.request.path == "/answer":
            flow.response = Response.make(201, b"from the plugin")


@pytest.mark.parametrize("kind", ["h1-origin", "h2-origin"])
def test_hundred_streams_one_killed(make_proxy: Callable[..., RunningProxy], origin_ca: Any,
                                    kind: str) -> None:
    plugin = KillOne()
    server: Origin | H2Origin = H2Origin(ca=origin_ca) if kind == "h2-origin" \
        else Origin(tls=True, ca=origin_ca)
    with server, make_proxy(plugins=[plugin]) as proxy, raw_client(proxy, server) as raw:
        ids = {}
        for n in range(100):
            query = "&kill=1" if n == 37 else ""
            ids[n] = raw.request(f"/bytes/{20_000 + n}?seed={n}{query}")
        assert raw.until(lambda: all(r.done for r in raw.results.values()), timeout=60)
        killed = raw.results[ids[37]]
        assert killed.reset == h2.errors.ErrorCodes.CANCEL and not killed.ended
        for n, stream_id in ids.items():
            if n != 37:
                result = raw.results[stream_id]
                assert result.reset is None and result.status == 200
                assert bytes(result.body) == pattern_bytes(20_000 + n, seed=n), n
        assert raw.terminated is None and not raw.closed
        # The connection still serves; a plugin's answer goes to its stream.
        answered = raw.get("/answer")
        assert answered.status == 201 and bytes(answered.body) == b"from the plugin"
        assert raw.get("/bytes/5").status == 200
    assert plugin.versions == {"HTTP/2.0"}
    if isinstance(server, H2Origin):  # all of them on one origin connection, too
        assert server.connections == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_origin_is_a_502_on_the_stream(proxy: RunningProxy) -> None:
    port = _closed_port()
    with H2Client(proxy.port, str(proxy.ca_path), "localhost", port) as raw:
        first = raw.get("/")
        second = raw.get("/again")
    assert first.status == second.status == 502
    assert b"connection refused" in bytes(first.body)
    assert raw.terminated is None


def test_an_h2_flow_is_captured_with_its_protocol(make_proxy: Callable[..., RunningProxy],
                                                  h2_origin: H2Origin, tmp_path: Path
                                                  ) -> None:
    captured = Captured(tmp_path / "flows.db")
    try:
        with make_proxy(plugins=[captured.plugin]) as proxy, h2_client(proxy) as client:
            response = client.post(base(h2_origin) + "/echo", content=b"captured body")
        assert response.content == b"captured body"
        flow = captured.one()
        assert flow.http_version == "HTTP/2.0" and flow.status == 200
        assert flow.tls_client is not None and flow.tls_client.get("alpn") == "h2"
        assert flow.tls_server is not None and flow.tls_server.get("alpn") == "h2"
        assert captured.body(flow.id, "request")[0] == b"captured body"
        assert captured.body(flow.id, "response")[0] == b"captured body"
        names = [name for name, _ in flow.request_headers]
        assert not any(name.startswith(":") for name in names)
    finally:
        captured.close()


def test_trailers_both_ways_are_in_the_store(make_proxy: Callable[..., RunningProxy],
                                              h2_origin: H2Origin, tmp_path: Path) -> None:
    """gRPC's status lives in trailers: the store keeps them, the request's and the
    response's, relayed (not buffered), and the API shows them."""
    captured = Captured(tmp_path / "flows.db")
    try:
        with make_proxy(plugins=[captured.plugin]) as proxy, \
                raw_client(proxy, h2_origin) as raw:
            echoed = raw.get("/echo", method="POST", body=b"payload",
                             headers=[(b"te", b"trailers")],
                             trailers=[(b"x-checksum", b"abc")])
            status = raw.get("/trailers", headers=[(b"te", b"trailers")])
        assert echoed.trailers == [(b"x-checksum", b"abc")]
        assert status.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
        by_path = {flow.path: flow for flow in captured.flows()}
        assert by_path["/echo"].request_trailers == [("x-checksum", "abc")]
        assert by_path["/echo"].response_trailers == [("x-checksum", "abc")]
        assert by_path["/trailers"].request_trailers is None
        assert by_path["/trailers"].response_trailers == [("grpc-status", "0"),
                                                          ("grpc-message", "fine")]
        assert by_path["/trailers"].to_json()["responseTrailers"] == [
            ["grpc-status", "0"], ["grpc-message", "fine"]]
    finally:
        captured.close()


def test_headers_json_shows_the_mapping(proxy: RunningProxy, h2_origin: H2Origin) -> None:
    with raw_client(proxy, h2_origin) as raw:
        result = raw.get("/headers", headers=[(b"x-custom", b"1"), (b"cookie", b"a=1"),
                                              (b"cookie", b"b=2")])
    fields = [tuple(pair) for pair in json.loads(bytes(result.body))]
    names = [name for name, _ in fields]
    assert names[:4] == [":method", ":scheme", ":authority", ":path"]
    assert ("x-custom", "1") in fields
    assert "host" not in names and "transfer-encoding" not in names


def test_curl_h2_to_h2_and_back_with_a_body(proxy: RunningProxy, h2_origin: H2Origin,
                                            tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(300_000, seed=9))
    result = subprocess.run(
        ["curl", "-sS", "--http2", "--proxy", proxy.url, "--cacert", str(proxy.ca_path),
         "--data-binary", f"@{upload}", base(h2_origin) + "/echo"],
        capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == pattern_bytes(300_000, seed=9)


class PauseOne:
    """Pauses the flow of ``/bytes/...?pause`` (a breakpoint), remembering it."""

    def __init__(self) -> None:
        self.paused: list[Any] = []

    def on_request(self, flow: Any) -> None:
        if "pause" in flow.request.query:
            flow.intercept()
            self.paused.append(flow)


def test_a_breakpoint_holds_only_its_stream(make_proxy: Callable[..., RunningProxy],
                                            h2_origin: H2Origin) -> None:
    plugin = PauseOne()
    with make_proxy(plugins=[plugin]) as proxy, raw_client(proxy, h2_origin) as raw:
        held = raw.request("/bytes/300?pause=1")
        others = [raw.request(f"/bytes/{n}") for n in (100, 200, 400)]
        assert raw.until(lambda: all(raw.results[i].done for i in others))
        assert [len(raw.results[i].body) for i in others] == [100, 200, 400]
        assert not raw.results[held].done and len(plugin.paused) == 1
        proxy.portal.call(plugin.paused[0].resume)
        assert raw.until(lambda: raw.results[held].done)
        assert bytes(raw.results[held].body) == pattern_bytes(300)


def test_a_client_reset_reaches_the_origin_stream(proxy: RunningProxy, h2_origin: H2Origin
                                                  ) -> None:
    with raw_client(proxy, h2_origin) as raw:
        stream_id = raw.request("/stream", method="POST", end=False)
        raw.send_body(stream_id, b"first", end=False)
        result = raw.results[stream_id]
        assert raw.until(lambda: bytes(result.body) == b"first")
        raw.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        raw.flush()
        assert wait_until(lambda: h2_origin.resets == 1, timeout=30)
        assert raw.get("/bytes/10").status == 200  # the connection goes on
    assert h2_origin.reset_codes == [h2.errors.ErrorCodes.CANCEL]


def test_an_origin_failing_mid_body_resets_that_stream(proxy: RunningProxy,
                                                       origin_ca: Any) -> None:
    def handler(sock: socket.socket) -> None:
        head, _ = read_head(sock)
        if b"GET /broken" in head:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            return  # (closed mid-body)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_ca.issue_cert("localhost").configure_cert(context)
    with RawServer(handler, ssl_context=context) as server, raw_client(proxy, server) as raw:
        broken = raw.get("/broken")
        fine = raw.get("/fine")
    assert broken.status == 200 and broken.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    assert fine.status == 200 and bytes(fine.body) == b"ok" and raw.terminated is None


def test_an_origin_that_stops_reading_holds_the_client_back(proxy: RunningProxy,
                                                            origin_ca: Any) -> None:
    """Back-pressure: the client's window closes once the proxy holds what the origin does
    not read (flow-control credit is given back only as bodies move on)."""
    release = threading.Event()

    def handler(sock: socket.socket) -> None:
        read_head(sock)
        release.wait(30)  # reads nothing meanwhile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_ca.issue_cert("localhost").configure_cert(context)
    with RawServer(handler, ssl_context=context) as server, raw_client(proxy, server) as raw:
        stream_id = raw.request("/upload", method="POST",
                                headers=[(b"content-length", str(64 * MIB).encode())],
                                end=False)
        sent, chunk = 0, b"x" * 16384
        for _ in range(64 * MIB // len(chunk)):  # bounded: the whole body at most
            if raw.conn.local_flow_control_window(stream_id) < len(chunk):
                raw.sock.settimeout(1.0)  # (what comes now are window updates, if any)
                try:
                    raw.read_once()
                except TimeoutError:
                    break
                continue
            raw.conn.send_data(stream_id, chunk)
            raw.flush()
            sent += len(chunk)
        release.set()
    # The proxy took no more than its window plus what the sockets buffer in between.
    assert sent < 16 * MIB, sent  # (4.3 MiB here: the sockets; 64 MiB if acked at once)


def test_reverse_mode_speaks_http2_both_ways(make_proxy: Callable[..., RunningProxy],
                                             h2_origin: H2Origin) -> None:
    config = {"proxy": {"listen": [{"mode": "reverse", "origin": base(h2_origin)}]}}
    with make_proxy(config=config) as proxy:
        result = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "--http2", "--cacert", str(proxy.ca_path),
             "-w", "\n%{http_version}", f"https://localhost:{proxy.port}/headers"],
            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2"
    fields = dict(tuple(pair) for pair in json.loads(body))
    assert fields[":authority"] == f"localhost:{h2_origin.port}"  # the origin's, not ours


def test_every_io_mode(start_proxy: Callable[..., RunningProxy], any_origin: Origin | H2Origin
                       ) -> None:
    """The loop's transports (asyncio, uvloop) and anyio's streams, both sides."""
    body = pattern_bytes(MIB + 3, seed=4)
    path = "/echo" if isinstance(any_origin, H2Origin) else "/upload"
    with start_proxy() as proxy, h2_client(proxy) as client:
        down = client.get(base(any_origin) + f"/bytes/{MIB}")
        up = client.post(base(any_origin) + path, content=body)
    assert down.http_version == "HTTP/2" and down.content == pattern_bytes(MIB)
    if isinstance(any_origin, H2Origin):
        assert sha(up.content) == sha(body)
    else:
        assert up.json()["sha256"] == sha(body)


def test_too_many_header_fields_is_a_431_on_the_stream(proxy: RunningProxy,
                                                       tls_origin: Origin) -> None:
    with raw_client(proxy, tls_origin) as raw:
        many = raw.get("/", headers=[(f"x-{n}".encode(), b"1") for n in range(120)])
        fine = raw.get("/bytes/3")
    assert many.status == 431 and b"proxy.max_header_count" in bytes(many.body)
    assert fine.status == 200 and raw.terminated is None


def test_connect_on_a_stream_is_refused(proxy: RunningProxy, tls_origin: Origin) -> None:
    with raw_client(proxy, tls_origin) as raw:
        stream_id = raw.conn.get_next_available_stream_id()
        raw.results[stream_id] = StreamResult()
        raw.conn.send_headers(stream_id, [(b":method", b"CONNECT"),
                                          (b":authority", b"elsewhere.test:443")])
        raw.flush()
        assert raw.until(lambda: raw.results[stream_id].done)
    assert raw.results[stream_id].status == 501


def test_expect_100_continue(proxy: RunningProxy, h2_origin: H2Origin) -> None:
    with raw_client(proxy, h2_origin) as raw:
        stream_id = raw.request("/echo", method="POST", end=False,
                                headers=[(b"expect", b"100-continue"),
                                         (b"content-length", b"4")])
        assert raw.until(lambda: any(isinstance(e, h2.events.InformationalResponseReceived)
                                     for e in raw.events))
        raw.send_body(stream_id, b"body")
        assert raw.until(lambda: raw.results[stream_id].done)
    assert raw.results[stream_id].status == 200 and bytes(raw.results[stream_id].body) == b"body"
    assert h2_origin.requests[0].header("expect") is None


def test_inside_a_socks5_tunnel(make_proxy: Callable[..., RunningProxy],
                                h2_origin: H2Origin) -> None:
    with make_proxy(config={"proxy": {"listen": ["socks5@0"]}}) as proxy:
        result = subprocess.run(
            ["curl", "-sS", "--noproxy", "", "--http2", "--socks5-hostname",
             f"127.0.0.1:{proxy.port}", "--cacert", str(proxy.ca_path),
             "-w", "\n%{http_version}", base(h2_origin) + "/bytes/70000"],
            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2" and body == pattern_bytes(70000)


def test_an_origin_that_ends_its_connection_gets_a_new_one(proxy: RunningProxy,
                                                           h2_origin: H2Origin) -> None:
    with h2_client(proxy) as client:
        first = client.get(base(h2_origin) + "/goaway")
        second = client.get(base(h2_origin) + "/bytes/10")
    assert first.content == b"bye" and second.content == pattern_bytes(10)
    assert h2_origin.connections == 2
