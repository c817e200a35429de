"""``serve_web``: a busy port is a ConfigError before anything is served, the real port is
reported, cancellation stops the server and closes its sockets, uvloop works too."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
import pytest
from test_web_support import TOKEN, WebServer

from nectoproxy.errors import ConfigError
from nectoproxy.store import SQLiteStore
from nectoproxy.web import create_app, serve_web


def test_a_busy_port_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as taken, SQLiteStore(tmp_path / "s.db") as store:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(store, token=TOKEN)
        with pytest.raises(ConfigError) as caught:
            anyio.run(serve_web, app, "127.0.0.1", port)
    assert str(caught.value) == (
        f"the inspector's port {port} on 127.0.0.1 is in use: choose another with --web-port "
        "(or [web] port), or turn it off with --no-web")


def test_cancelling_stops_the_server_and_closes_its_socket(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    caplog.set_level(logging.DEBUG, logger="nectoproxy.web")
    with WebServer(tmp_path) as web:
        port = web.port
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(10)
        probe.connect(("127.0.0.1", port))
    with socket.socket() as again:  # the port is free for the next run
        again.bind(("127.0.0.1", port))
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]  # no banner, no errors
    assert not [r for r in caplog.records if r.name.startswith("hypercorn")]


def test_a_client_that_stopped_reading_does_not_hold_the_shutdown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with WebServer(tmp_path) as web:
        flow = web.save(None, bytes(8 * 1024 * 1024))
        stalled = socket.create_connection(("127.0.0.1", web.port), timeout=10)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /api/traffic/{flow.id}/response/body HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{web.port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                        .encode())
        assert stalled.recv(100).startswith(b"HTTP/1.1 200")  # then it reads no more
        started = time.monotonic()
    try:
        assert time.monotonic() - started < 5  # the grace second, then the abort
        stalled.settimeout(10)
        with pytest.raises(ConnectionResetError):  # aborted: reset, its backlog dropped
            for _ in range(100_000):
                if not stalled.recv(1 << 20):
                    break
    finally:
        stalled.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("uvloop", [False, True])
def test_serves_on_the_current_loop(tmp_path: Path, uvloop: bool) -> None:
    if uvloop:
        pytest.importorskip("uvloop")
    with SQLiteStore(tmp_path / "s.db") as store:
        store.start_run()
        app = create_app(store, token=TOKEN)
        options = {"use_uvloop": True} if uvloop else None
        with anyio.from_thread.start_blocking_portal(backend_options=options) as portal:
            future, (host, port) = portal.start_task(serve_web, app, "127.0.0.1", 0)
            assert host == "127.0.0.1" and port > 0
            with httpx.Client(timeout=10, trust_env=False,
                              headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                assert client.get(f"http://127.0.0.1:{port}/api/sessions").status_code == 200
            future.cancel()
