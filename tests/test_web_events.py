"""The event socket over real sockets: flows added, updated and deleted, session changes,
resets, one session only, batching under a flood, a client that never reads, clean-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web_support import TOKEN, WebServer, WsClient, record, wait_for

from nectoproxy.store import CaptureWriter
from nectoproxy.web import events


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer(tmp_path) as server:
        yield server


def connect(web: WebServer, query: str = "", **kwargs: Any) -> WsClient:
    client = WsClient(web.port, f"/api/events?token={TOKEN}{query}", **kwargs)
    assert client.rejected is None
    first = client.message()
    assert first is not None and first["type"] == "sessions"  # the state to start from
    return client


def flows_with(ids: set[str]) -> Any:
    return lambda m: m["type"] == "flows" and ids <= {f["id"] for f in m["flows"]}


def test_flows_added_updated_deleted_and_sessions(web: WebServer) -> None:
    with connect(web) as client:
        flow = web.save(status=201)
        got = client.messages_until(flows_with({flow.id}))[-1]
        summary = next(f for f in got["flows"] if f["id"] == flow.id)
        assert summary["status"] == 201 and summary["sessionId"] == web.session.id
        assert set(summary) >= {"url", "method", "host", "startedAt", "mark"}

        web.store.annotate(flow.id, mark="green")
        got = client.messages_until(flows_with({flow.id}))[-1]
        assert got["flows"][-1]["mark"] == "green"

        web.store.delete_flow(flow.id)
        got = client.messages_until(lambda m: flow.id in m.get("deleted", []))[-1]
        assert got["type"] == "flows" and flow.id not in {f["id"] for f in got["flows"]}

        created = web.store.create_session("second")
        got = client.messages_until(lambda m: m["type"] == "sessions")[-1]
        assert created.id in {s["id"] for s in got["sessions"]}
        web.store.activate_session(created.id)
        got = client.messages_until(lambda m: m["type"] == "sessions")[-1]
        assert [s["id"] for s in got["sessions"] if s["active"]] == [created.id]
        web.store.rename_session(created.id, "renamed")
        got = client.messages_until(lambda m: m["type"] == "sessions")[-1]
        assert "renamed" in {s["name"] for s in got["sessions"]}


def test_a_flood_is_batched_to_about_ten_messages_a_second(web: WebServer) -> None:
    writer = CaptureWriter(web.store.path)
    try:
        with connect(web) as client:
            records = [record() for _ in range(2000)]
            started = time.monotonic()
            for burst in range(40):  # 50 flows every 20 ms: 2,000 in about 0.8 s
                for r in records[burst * 50:(burst + 1) * 50]:
                    writer.flow_started(r)
                time.sleep(max(0.0, started + (burst + 1) * 0.02 - time.monotonic()))
            assert writer.flush(30)
            wanted = {r.id for r in records}
            seen: set[str] = set()
            stamps: list[float] = []
            deadline = time.monotonic() + 30
            while not wanted <= seen and time.monotonic() < deadline:
                message = client.message(deadline - time.monotonic())
                assert message is not None
                stamps.append(time.monotonic())
                seen |= {f["id"] for f in message.get("flows", [])}
    finally:
        writer.close()
    assert wanted <= seen
    # However the 2,000 flows arrived, no second holds more than ~10 messages.
    busiest = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert busiest <= 12, (busiest, len(stamps))
    assert len(stamps) < 2000 / 10  # batched: many flows per message


def test_only_one_sessions_flows_when_asked(web: WebServer) -> None:
    other = web.store.create_session("other")
    with connect(web, f"&sessionId={other.id}") as client:
        mine = web.store.save_flow(record(session_id=other.id))
        theirs = web.save()
        last = web.store.save_flow(record(session_id=other.id))
        received = client.messages_until(flows_with({last.id}))
        ids = {f["id"] for m in received for f in m.get("flows", [])}
        assert {mine.id, last.id} <= ids and theirs.id not in ids
        client.send_json({"type": "subscribe", "sessionId": None})  # now every session
        for _ in range(50):  # a flow saved before the subscription is read is not sent
            again = web.save()
            message = client.message(timeout=1.0)
            if message is not None and again.id in {f["id"] for f in message["flows"]}:
                break
        else:
            raise AssertionError("the subscription did not widen the feed")
    with WsClient(web.port, f"/api/events?token={TOKEN}&sessionId=x") as refused:
        assert refused.rejected is not None


def test_a_client_far_behind_gets_reset(web: WebServer, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setattr(events, "PAGE", 10)
    monkeypatch.setattr(events, "MAX_BATCH", 20)
    doomed = web.store.create_session("doomed")
    for _ in range(60):
        web.store.save_flow(record(session_id=doomed.id))
    with connect(web) as client:
        web.store.delete_session_flows(doomed.id)  # 60 deletions in one transaction
        client.messages_until(lambda m: m["type"] == "reset")
        after = web.save()
        client.messages_until(flows_with({after.id}))  # and it goes on from there


def test_a_client_that_never_reads_is_dropped(web: WebServer, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(events, "SEND_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO, logger="nectoproxy.web")
    writer = CaptureWriter(web.store.path)
    try:
        with connect(web, rcvbuf=4096) as client:
            long_url = "https://api.example.test/" + "x" * 30_000
            for _ in range(1500):  # ~45 MB of summaries: more than any socket buffers
                writer.flow_started(record(url=long_url))
            assert writer.flush(60)
            wait_for(lambda: "dropping a client" in caplog.text, timeout=60)
            wait_for(lambda: web.app.state.web.event_clients == 0, timeout=30)
            # Reading now, the client finds what was under way, then the close frame.
            code = None
            for _ in range(10_000):
                try:
                    message = client.message(timeout=10)
                except ConnectionError:
                    break
                if message is None:
                    code = client.closed.code if client.closed else None
                    break
            assert code in (None, events.CLOSE_TOO_SLOW)
    finally:
        writer.close()


def test_disconnect_and_shutdown_clean_up(tmp_path: Path) -> None:
    with WebServer(tmp_path) as web:
        context = web.app.state.web
        clients = [connect(web) for _ in range(3)]
        wait_for(lambda: context.event_clients == 3)
        clients[0].close()
        wait_for(lambda: context.event_clients == 2)
        survivors = clients[1:]
        started = time.monotonic()
    # Leaving the block cancelled serve_web: the sockets were told the server is going away.
    assert time.monotonic() - started < 5
    for client in survivors:
        assert client.message(timeout=5) is None
        assert client.closed is not None and client.closed.code == events.CLOSE_GOING_AWAY
        client.close()
    assert context.event_clients == 0
