"""Replay through a real proxy with capture on: the replayed request is the recorded one (no
client defaults added), edits apply, the new flow is stored linked to its original, and the
API answers with it."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_web_support import TOKEN, WebServer, record

from nectoproxy.store import CaptureWriter, SQLiteStore
from nectoproxy.testing import RunningProxy
from nectoproxy.web import Replayer

capture = pytest.importorskip("nectoproxy.capture")


class Rig:
    def __init__(self, proxy: RunningProxy, web: WebServer, writer: CaptureWriter) -> None:
        self.proxy, self.web, self.writer = proxy, web, writer

    def only_flow_id(self) -> str:
        assert self.writer.flush(30)
        flows, _ = self.web.store.list_flows(limit=10)
        assert len(flows) == 1, flows
        return flows[0].id

    def echo_of(self, client: httpx.Client, flow_id: str) -> dict[str, Any]:
        """What the origin saw, from the stored response of the flow (origin /echo)."""
        data = json.loads(client.get(f"/api/traffic/{flow_id}/response/body").content)
        assert isinstance(data, dict)
        return data


@pytest.fixture
def rig(tmp_path: Path, make_proxy: Callable[..., RunningProxy]) -> Iterator[Rig]:
    store = SQLiteStore(tmp_path / "flows.db")
    store.start_run()
    writer = CaptureWriter(store.path)
    plugin = capture.Capture(writer, token=TOKEN)
    try:
        with make_proxy(plugins=[plugin]) as proxy:
            replayer = Replayer(proxy.url, proxy.ca_path, TOKEN)
            with WebServer(tmp_path, replayer=replayer, store=store) as web:
                yield Rig(proxy, web, writer)
    finally:
        writer.close()
        store.close()


def _raw_request(proxy: RunningProxy, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        for _ in range(10_000):  # Connection: close: read to the end
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_replay_as_recorded_then_with_edits(rig: Rig, origin: Any) -> None:
    authority = f"127.0.0.1:{origin.port}"
    answer = _raw_request(rig.proxy, (
        f"POST http://{authority}/echo?x=1 HTTP/1.1\r\nHost: {authority}\r\n"
        "X-Mixed-CASE: Keep\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        "Connection: close\r\n\r\nhello").encode())
    assert answer.startswith(b"HTTP/1.1 200")
    original = rig.only_flow_id()
    with rig.web.client() as client:
        response = client.post(f"/api/traffic/{original}/replay")
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["replayOf"] == original and data["status"] == 200
        assert data["error"] is None
        assert data["flow"]["id"] == data["id"] and data["flow"]["replayOf"] == original
        assert data["flow"]["status"] == 200
        first, again = rig.echo_of(client, original), rig.echo_of(client, data["id"])
        # The origin saw the same request both times: no httpx defaults, no replay header.
        assert again["headers"] == first["headers"]
        assert (again["method"], again["path"], again["body"]) == ("POST", "/echo?x=1", "hello")
        names = {name.lower() for name, _ in again["headers"]}
        assert not names & {"user-agent", "accept", "accept-encoding", "x-nectoproxy-replay"}
        stored = client.get(f"/api/traffic/{data['id']}").json()
        assert not any(k.lower() == "x-nectoproxy-replay" for k, _ in stored["requestHeaders"])

        edited = client.post(f"/api/traffic/{original}/replay", json={
            "method": "PUT", "url": f"http://{authority}/echo?y=2", "body": "changed!",
            "headers": [["Host", authority], ["X-Other", "1"], ["Content-Length", "999"]]})
        assert edited.status_code == 200, edited.text
        echo = rig.echo_of(client, edited.json()["id"])
        assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/echo?y=2", "changed!")
        assert ["X-Other", "1"] in echo["headers"] and ["Content-Length", "8"] in echo["headers"]
        assert "X-Mixed-CASE" not in {name for name, _ in echo["headers"]}

        binary = client.post(f"/api/traffic/{original}/replay",
                             json={"bodyBase64": "AAEC/w=="}).json()
        assert rig.echo_of(client, binary["id"])["body_length"] == 4
        moved = client.post(f"/api/traffic/{original}/replay",
                            json={"url": f"http://localhost:{origin.port}/echo"}).json()
        assert [k for k, v in rig.echo_of(client, moved["id"])["headers"]
                if k == "Host" and v == f"localhost:{origin.port}"]
        for bad in ({"method": "GE T"}, {"url": "ftp://x/"}, {"headers": [["a b", "c"]]},
                    {"headers": "x"}, {"body": "a", "bodyBase64": "YQ=="},
                    {"bodyBase64": "%%"}, {"colour": 1}):
            assert client.post(f"/api/traffic/{original}/replay", json=bad).status_code == 400
        assert client.post(f"/api/traffic/{'0' * 32}/replay").status_code == 404


def test_replay_over_https_and_compose(rig: Rig, tls_origin: Any, origin: Any) -> None:
    with rig.proxy.client() as through_proxy:
        assert through_proxy.get(tls_origin.url + "/json").status_code == 200
    original = rig.only_flow_id()
    with rig.web.client() as client:
        data = client.post(f"/api/traffic/{original}/replay").json()
        assert data["status"] == 200 and data["flow"]["scheme"] == "https"
        body = client.get(f"/api/traffic/{data['id']}/response/body").content
        assert body == client.get(f"/api/traffic/{original}/response/body").content

        composed = client.post("/api/traffic/replay", json={
            "url": origin.url + "/status/404", "headers": [["X-Compose", "yes"]]}).json()
        assert composed["replayOf"] is None and composed["status"] == 404
        assert composed["flow"]["replayOf"] is None and composed["flow"]["status"] == 404

        refused = client.post("/api/traffic/replay", json={"url": "http://127.0.0.1:1/"})
        assert refused.status_code == 200  # the proxy answered: with its own error
        assert refused.json()["status"] == 502 and refused.json()["error"]
        assert client.post("/api/traffic/replay", json={}).status_code == 400


def test_replay_of_a_truncated_body_needs_the_body(rig: Rig, origin: Any) -> None:
    flow = rig.web.store.save_flow(record(method="POST", url=origin.url + "/echo",
                                          request_truncated=True), b"part of it", b"")
    with rig.web.client() as client:
        refused = client.post(f"/api/traffic/{flow.id}/replay")
        assert refused.status_code == 409 and "truncated" in refused.json()["error"]
        given = client.post(f"/api/traffic/{flow.id}/replay", json={"body": "all of it"})
        assert given.status_code == 200 and given.json()["status"] == 200


def test_replayer_reports_an_unreachable_proxy(make_proxy: Callable[..., RunningProxy]) -> None:
    with make_proxy() as proxy:  # for its CA file only
        ca_path = proxy.ca_path
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    replayer = Replayer(f"http://127.0.0.1:{port}", ca_path, TOKEN, timeout=10)
    result = anyio.run(replayer.send, "GET", "http://127.0.0.1:9/", [], b"", None)
    assert result.status is None and result.error and len(result.id) == 32
