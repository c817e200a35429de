"""WebSocket messages captured into the store, read and sent through the API, announced on the
event socket: a real websockets client and server through the proxy, the API served in the
proxy's event loop (as the inspector serves it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_support import TOKEN, WsClient
from test_websocket import client, echo_server

from nectoproxy.capture import Capture
from nectoproxy.store import CaptureWriter, ProcessWriter, SQLiteStore, WebSocketEvent, schema
from nectoproxy.testing import RunningProxy
from nectoproxy.web import create_app, serve_web

LIMIT = 100 * 1024  # capture's max_body_size: content kept per direction of a connection


class Inspected:
    def __init__(self, proxy: RunningProxy, store: SQLiteStore, writer: CaptureWriter,
                 port: int) -> None:
        self.proxy, self.store, self.writer, self.port = proxy, store, writer, port

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False)


@pytest.fixture
def inspected(make_proxy: Any, tmp_path: Path) -> Iterator[Inspected]:
    path = tmp_path / "flows.db"
    store = SQLiteStore(path)
    store.start_run()
    writer = CaptureWriter(path, max_body_size=LIMIT)
    capture = Capture(writer, token="t0ken", max_body_size=LIMIT)
    app = create_app(store, token=TOKEN, websockets=capture.websockets.get)
    try:
        with make_proxy(plugins=[capture]) as proxy:
            future, (_, port) = proxy.portal.start_task(serve_web, app, "127.0.0.1", 0)
            try:
                yield Inspected(proxy, store, writer, port)
            finally:
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result(10)
    finally:
        writer.close()
        store.close()


def test_messages_are_stored_listed_announced_and_sent_through_the_api(inspected):
    events = WsClient(inspected.port, f"/api/events?token={TOKEN}")
    assert events.message()["type"] == "sessions"
    big = bytes(range(256)) * (150 * 1024 // 256)  # over what capture keeps of a direction
    flow_ids: list[str] = []

    async def scenario() -> None:
        async with echo_server() as (port, closes):
            async with client(inspected.proxy, port) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
                await ws.send(b"\x00\x01")
                assert await ws.recv() == b"\x00\x01"
                await ws.send(big)
                assert await ws.recv() == big
                assert await asyncio.to_thread(inspected.writer.flush, 30)
                flows, _ = await asyncio.to_thread(inspected.store.list_flows, limit=10)
                flow_ids.append(flows[0].id)
                with inspected.api() as api:
                    sent = await asyncio.to_thread(
                        api.post, f"/api/websocket/{flow_ids[0]}/send",
                        json={"to": "client", "content": "from the api"})
                    assert sent.json() == {"sent": True, "to": "client", "type": "text",
                                           "size": 12}
                    assert await ws.recv() == "from the api"
                    sent = await asyncio.to_thread(
                        api.post, f"/api/websocket/{flow_ids[0]}/send",
                        json={"to": "server", "contentBase64": base64.b64encode(b"raw").decode()})
                    assert sent.status_code == 200
                    assert await ws.recv() == b"raw"  # echoed by the server
                await ws.close(4001, "done")
            await wait_for_async(lambda: closes)

    with events:
        asyncio.run(scenario())
        got = events.messages_until(lambda m: m["type"] == "websocket:close")
    flow_id = flow_ids[0]
    kinds = [m["type"] for m in got if m["type"].startswith("websocket:")]
    assert kinds[0] == "websocket:open" and kinds[-1] == "websocket:close"
    announced = [f for m in got if m["type"] == "websocket:frame" for f in m["frames"]]
    assert len(announced) == 9 and all(f["trafficId"] == flow_id for f in announced)
    assert {(m["code"], m["reason"], m["closedBy"]) for m in got
            if m["type"] == "websocket:close"} == {(4001, "done", "client")}

    assert inspected.writer.flush(30)
    with inspected.api() as api:
        base = f"/api/websocket/{flow_id}"
        frames = api.get(f"{base}/frames").json()
        assert frames["next"] is None
        listed = [(f["direction"], f["type"], f["size"], f["injected"], f["truncated"])
                  for f in frames["frames"]]
        assert listed == [
            ("client", "text", 5, False, False), ("server", "text", 5, False, False),
            ("client", "binary", 2, False, False), ("server", "binary", 2, False, False),
            # 100 KiB of it kept: the rest of the direction's content budget
            ("client", "binary", len(big), False, True),
            ("server", "binary", len(big), False, True),
            # The content budgets are spent: sizes only. (Sent to the client, as if by the
            # server; then to the server, and echoed.)
            ("server", "text", 12, True, True), ("client", "binary", 3, True, True),
            ("server", "binary", 3, False, True)]
        assert api.get(f"{base}/count").json() == {"count": 9, "open": False}
        assert api.get(f"{base}/count?direction=client&type=text").json()["count"] == 1
        texts = api.get(f"{base}/frames?type=text").json()["frames"]
        assert [f["size"] for f in texts] == [5, 5, 12]
        first = api.get(f"{base}/frames?limit=2").json()
        second = api.get(f"{base}/frames?limit=2&after={first['next']}").json()
        assert [f["id"] for f in first["frames"] + second["frames"]] == \
            [f["id"] for f in frames["frames"][:4]]
        ids = [f["id"] for f in frames["frames"]]
        assert api.get(f"{base}/frame/{ids[0]}").json()["content"] == "hello"
        assert api.get(f"{base}/frame/{ids[2]}").json()["contentBase64"] == \
            base64.b64encode(b"\x00\x01").decode()
        kept = base64.b64decode(api.get(f"{base}/frame/{ids[4]}").json()["contentBase64"])
        assert kept == big[:LIMIT - 7]  # 5 + 2 bytes went before it
        # Refusals.
        assert api.get(f"/api/websocket/{'0' * 32}/frames").status_code == 404
        assert api.get(f"{base}/frame/999999").status_code == 404
        assert api.get(f"{base}/frames?direction=up").status_code == 400
        closed = api.post(f"{base}/send", json={"to": "client", "content": "late"})
        assert closed.status_code == 409
        assert api.post(f"{base}/send", json={"to": "nowhere", "content": "x"}).status_code \
            == 400
        assert api.post(f"/api/websocket/{'0' * 32}/send",
                        json={"to": "client", "content": "x"}).status_code == 404
        record = api.get(f"/api/traffic/{flow_id}").json()
        assert record["websocket"] is True and record["status"] == 101


async def wait_for_async(condition: Any, seconds: float = 10) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.02)


def test_deleting_a_flow_deletes_its_messages_and_the_child_writer_stores_them(tmp_path):
    """The events go through the child-process writer too (as the command line captures)."""
    path = tmp_path / "flows.db"
    with SQLiteStore(path) as store:
        store.start_run()
        record = store.save_flow(_record())
        with ProcessWriter(path) as writer:
            writer.websocket(WebSocketEvent(record.id, "open", 1.0, info={
                "subprotocol": None, "extensions": None}))
            for n in range(3):
                writer.websocket(WebSocketEvent(record.id, "message", 2.0 + n,
                                                direction="client", opcode=1, size=1,
                                                data=str(n).encode()))
            assert writer.flush(30)
        assert store.websocket_message_count(record.id) == 3
        page = store.websocket_messages(record.id)
        assert page is not None
        event = store.websocket_event(record.id, page[2].id)
        assert event is not None and event.data == b"2"
        assert store.websocket_marker() == page[2].id
        assert [e.kind for e, _ in store.websocket_events_since(0)] == \
            ["open", "message", "message", "message"]
        assert store.delete_flow(record.id)
        assert store.websocket_events_since(0) == []
        assert "websocket_events" in {r[0] for r in store._read().execute(
            "SELECT name FROM sqlite_master")}
        assert schema.user_version(store._conn) == schema.SCHEMA_VERSION


def _record() -> Any:
    from nectoproxy.store import FlowRecord, new_flow_id

    return FlowRecord(id=new_flow_id(), scheme="http", method="GET", url="http://x/chat",
                      host="x", port=80, path="/chat", started_at=0.5, request_headers=[],
                      status=101, websocket=True)
