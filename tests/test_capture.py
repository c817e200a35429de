"""Capture into the flow store, over real sockets: every flow, bodies byte-exact, heads as seen
and as sent, timings, TLS details, plugin changes, pass-through tunnels, truncation."""

from __future__ import annotations

import gzip
import hashlib
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nectoproxy import Response, hookimpl, replaytag
from nectoproxy.capture import Capture
from nectoproxy.store import CaptureWriter, FlowRecord, SQLiteStore, new_flow_id
from nectoproxy.testing import RunningProxy
from nectoproxy.testing._origin_handler import iter_pattern


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(n: int, seed: int = 0) -> bytes:
    return b"".join(iter_pattern(n, seed))


class Captured:
    """A store and a capture plugin writing to it, for one test."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.store = SQLiteStore(path)
        self.store.start_run()
        self.writer = CaptureWriter(path, max_body_size=options.get("max_body_size",
                                                                     10 * 1024**2))
        self.plugin = Capture(self.writer, token="t0ken", **options)

    def flows(self) -> list[FlowRecord]:
        assert self.writer.flush(30)
        summaries, _ = self.store.list_flows(limit=1000, order="oldest")
        records = [self.store.get_flow(s.id) for s in summaries]
        return [r for r in records if r is not None]

    def one(self) -> FlowRecord:
        flows = self.flows()
        assert len(flows) == 1, flows
        return flows[0]

    def body(self, flow_id: str, direction: str) -> tuple[bytes, bool]:
        got = self.store.get_body(flow_id, direction)  # type: ignore[arg-type]
        assert got is not None
        return got

    def close(self) -> None:
        self.writer.close()
        self.store.close()


@pytest.fixture
def captured(tmp_path: Path) -> Iterator[Captured]:
    c = Captured(tmp_path / "flows.db")
    yield c
    c.close()


def test_plain_http_flow_is_recorded_with_heads_bodies_and_timings(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    body = pattern(70_000, 3)
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        response = client.post(origin.url + "/echo?x=1", content=body,
                               headers={"X-Mixed-Case": "Yes", "Proxy-Connection": "keep-alive"})
    assert response.status_code == 200
    flow = captured.one()
    assert (flow.method, flow.scheme, flow.host, flow.port) == ("POST", "http", "127.0.0.1",
                                                                origin.port)
    assert flow.url == origin.url + "/echo?x=1" and flow.path == "/echo?x=1"
    assert flow.status == 200 and flow.reason == "OK" and flow.error is None
    assert flow.content_type == "application/json"
    # As received: the hop-by-hop header the engine dropped is there, case kept.
    names = [name for name, _ in flow.request_headers]
    assert "X-Mixed-Case" in names and "Proxy-Connection" in names
    assert flow.request_headers_sent is not None
    assert "Proxy-Connection" not in [name for name, _ in flow.request_headers_sent]
    stored, truncated = captured.body(flow.id, "request")
    assert sha(stored) == sha(body) and not truncated
    response_body, _ = captured.body(flow.id, "response")
    assert response_body == response.content
    assert flow.request_size == len(body) == flow.request_size_decoded
    assert flow.response_size == len(response.content)
    assert flow.client_addr is not None and flow.client_addr.startswith("127.0.0.1:")
    assert flow.server_addr == f"127.0.0.1:{origin.port}"
    timings = flow.timings
    assert set(timings) >= {"connect", "request_sent", "first_byte", "complete"}
    assert timings["connect"] <= timings["request_sent"] <= timings["first_byte"] \
        <= timings["complete"]
    assert flow.duration is not None and flow.duration >= timings["first_byte"]
    assert flow.tls_client is None and flow.tls_server is None


def test_https_flow_records_both_tls_sides_and_the_origin_certificate(
        make_proxy: Callable[..., RunningProxy], tls_origin: Any, captured: Captured) -> None:
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        response = client.get(tls_origin.url + "/json")
    assert response.status_code == 200
    flow = captured.one()
    assert flow.scheme == "https" and flow.status == 200
    assert flow.tls_client is not None and flow.tls_client.get("version", "").startswith("TLS")
    assert flow.tls_client.get("sni") is None or flow.tls_client["sni"] == "127.0.0.1"
    server = flow.tls_server
    assert server is not None
    assert server["version"].startswith("TLS") and server["cipher"]
    assert "O=trustme" in server["issuer"] and server["subject"] is not None
    assert datetime.fromisoformat(server["not_after"]) > datetime.now(UTC)
    assert "tls_handshake" in flow.timings
    assert flow.timings["connect"] <= flow.timings["tls_handshake"]
    body, _ = captured.body(flow.id, "response")
    assert body == response.content


def test_chunked_and_gzip_bodies_are_stored_as_relayed(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        chunked = client.get(origin.url + "/bytes/300000?seed=5&framing=chunked")
        gz = client.get(origin.url + "/bytes/200000?seed=6&gzip=1")
    assert chunked.content == pattern(300_000, 5) and gz.content == pattern(200_000, 6)
    first, second = captured.flows()
    stored, _ = captured.body(first.id, "response")
    assert sha(stored) == sha(pattern(300_000, 5))
    assert first.response_size == 300_000
    wire, _ = captured.body(second.id, "response")
    assert gzip.decompress(wire) == pattern(200_000, 6)  # stored content-encoded, as sent
    assert second.response_body_encoding == "gzip"
    assert second.response_size == len(wire)
    assert second.response_size_decoded == 200_000


def test_a_body_over_the_cap_is_truncated_in_the_store_only(
        make_proxy: Callable[..., RunningProxy], origin: Any, tmp_path: Path) -> None:
    captured = Captured(tmp_path / "f.db", max_body_size=100_000)
    try:
        with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
            response = client.get(origin.url + "/bytes/1000000?seed=9")
        assert sha(response.content) == sha(pattern(1_000_000, 9))  # the client got it all
        flow = captured.one()
        stored, truncated = captured.body(flow.id, "response")
        assert truncated and flow.response_truncated
        assert stored == pattern(1_000_000, 9)[:100_000]
        assert flow.response_size == 1_000_000
    finally:
        captured.close()


def test_a_100_mib_download_streams_and_is_stored_byte_exact(
        make_proxy: Callable[..., RunningProxy], origin: Any, tmp_path: Path) -> None:
    size = 100 * 1024**2
    captured = Captured(tmp_path / "big.db", max_body_size=size)
    try:
        # body_buffer_limit keeps the proxy streaming: it never holds the body whole.
        with make_proxy(plugins=[captured.plugin]) as proxy:
            result = proxy.curl("-o", "-", origin.url + f"/bytes/{size}?seed=11", timeout=120)
        assert result.returncode == 0, result.stderr
        expected = hashlib.sha256()
        for chunk in iter_pattern(size, 11):
            expected.update(chunk)
        assert sha(result.stdout) == expected.hexdigest()
        flow = captured.one()
        digest = hashlib.sha256()
        for chunk in captured.store.iter_body(flow.id, "response"):
            digest.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()
        assert flow.response_size == size and not flow.response_truncated
    finally:
        captured.close()


class Rewrite:
    """Changes the request on its way out and the response on its way back."""

    @hookimpl
    def on_request(self, flow: Any) -> None:
        flow.request.headers["X-Added"] = "1"
        flow.request.content = b"changed"

    @hookimpl
    def on_response(self, flow: Any) -> None:
        flow.response.headers["X-From-Plugin"] = "yes"


class Watch:
    """Reads, changes nothing."""

    @hookimpl
    def on_request(self, flow: Any) -> None:
        assert flow.request.method


def test_heads_as_sent_and_the_plugins_that_changed_the_flow(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    with make_proxy(plugins=[captured.plugin, Rewrite(), Watch()]) as proxy, \
            proxy.client() as client:
        response = client.post(origin.url + "/echo", content=b"original")
    assert response.json()["body"] == "changed"
    flow = captured.one()
    assert flow.modified_by == ["Rewrite"]
    assert flow.request_headers_sent is not None
    assert ("X-Added", "1") in flow.request_headers_sent
    assert "X-Added" not in dict(flow.request_headers)
    assert flow.response_headers is not None and flow.response_headers_sent is not None
    assert "X-From-Plugin" not in dict(flow.response_headers)
    assert ("X-From-Plugin", "yes") in flow.response_headers_sent
    stored, _ = captured.body(flow.id, "request")
    assert stored == b"changed"  # the body as sent


class Answer:
    @hookimpl
    def on_request(self, flow: Any) -> None:
        if flow.request.path == "/mocked":
            flow.response = Response.make(201, {"mocked": True})


def test_a_flow_a_plugin_answered_is_stored_with_both_bodies(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    with make_proxy(plugins=[captured.plugin, Answer()]) as proxy, proxy.client() as client:
        response = client.put(origin.url + "/mocked", content=b"payload")
    assert response.status_code == 201
    flow = captured.one()
    assert flow.status == 201 and flow.modified_by == ["Answer"]
    assert flow.request_headers_sent is None  # never forwarded
    assert captured.body(flow.id, "request")[0] == b"payload"
    assert captured.body(flow.id, "response")[0] == response.content
    assert "connect" not in flow.timings


def test_a_failed_flow_is_stored_with_its_error(
        make_proxy: Callable[..., RunningProxy], captured: Captured) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        response = client.get(f"http://127.0.0.1:{port}/x")
    assert response.status_code == 502
    flow = captured.one()
    assert flow.error and "refused" in flow.error.lower()
    assert flow.status == 502  # what the client got
    assert flow.duration is not None


def test_a_pass_through_tunnel_is_an_entry_of_its_own(
        make_proxy: Callable[..., RunningProxy], tls_origin: Any, origin_ca_path: str,
        captured: Captured) -> None:
    with make_proxy(plugins=[captured.plugin],
                    config={"proxy": {"passthrough": ["127.0.0.1"]}}) as proxy:
        result = subprocess.run(
            ["curl", "-sS", "--proxy", proxy.url, "--cacert", origin_ca_path,
             tls_origin.url + "/json"], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    flow = captured.one()
    assert flow.kind == "tunnel" and flow.method == "CONNECT"
    assert flow.url == f"127.0.0.1:{tls_origin.port}"
    assert flow.bytes_up and flow.bytes_down and flow.bytes_down > len(result.stdout)
    assert flow.server_addr == f"127.0.0.1:{tls_origin.port}"
    assert flow.duration is not None


def test_a_replay_tag_names_the_flow_and_never_reaches_the_origin(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    original, new = new_flow_id(), new_flow_id()
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        good = client.get(origin.url + "/echo", headers={
            replaytag.HEADER: replaytag.make("t0ken", original, new)})
        forged = client.get(origin.url + "/echo", headers={
            replaytag.HEADER: replaytag.make("wrong", original, new_flow_id())})
    for response in (good, forged):
        assert replaytag.HEADER.lower() not in {k.lower() for k, _ in response.json()["headers"]}
    first, second = captured.flows()
    assert (first.id, first.replay_of) == (new, original)
    assert second.replay_of is None and second.id != new
    for flow in (first, second):
        assert replaytag.HEADER.lower() not in {k.lower() for k, _ in flow.request_headers}


def test_paused_capture_stores_nothing_and_proxies_everything(
        make_proxy: Callable[..., RunningProxy], origin: Any, captured: Captured) -> None:
    captured.plugin.enabled = False
    with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").status_code == 200
    assert captured.flows() == []


def test_a_capture_that_cannot_write_never_breaks_proxying(
        make_proxy: Callable[..., RunningProxy], origin: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    captured = Captured(tmp_path / "ro.db")
    captured.writer.close()
    captured.store.close()
    try:
        # A store that became read-only (as root only chattr can do that) under a new writer.
        subprocess.run(["chattr", "+i", str(captured.path)], check=True)
        captured.writer = captured.plugin.writer = CaptureWriter(captured.path)
        with make_proxy(plugins=[captured.plugin]) as proxy, proxy.client() as client:
            for _ in range(20):
                response = client.get(origin.url + "/bytes/5000?seed=1")
                assert response.content == pattern(5000, 1)
        captured.writer.flush(10)
        assert captured.writer.stats.flows_written == 0
        assert captured.writer.stats.messages_lost > 0
        failures = [r for r in caplog.records if r.name == "nectoproxy.store"
                    and r.levelname in ("ERROR", "WARNING")]
        assert 1 <= len(failures) <= 2  # logged once, not once per flow
    finally:
        subprocess.run(["chattr", "-i", str(captured.path)], check=False)
        captured.writer.close()


def test_https_client_tls_details_come_from_the_ssl_module(
        make_proxy: Callable[..., RunningProxy], tls_origin: Any, captured: Captured) -> None:
    """A raw ssl-module client asking for a name by SNI: the SNI is recorded."""
    with make_proxy(plugins=[captured.plugin]) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT localhost:{tls_origin.port} HTTP/1.1\r\n"
                    f"Host: localhost:{tls_origin.port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(proxy.ca_path))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    flow = captured.one()
    assert flow.tls_client is not None and flow.tls_client["sni"] == "localhost"
    assert flow.host == "localhost"
