"""The ``nectoproxy`` command with its inspector: capture on by default, the web API on its own
port with a token, sessions per run, workers sharing one store, kill -9, retention, errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from nectoproxy.store import FlowRecord, SQLiteStore, new_flow_id
from nectoproxy.testing.command import NectoProxyCommand, run_nectoproxy
from nectoproxy.testing.origin import free_port

#: How every test here starts the command (the addresses follow).
ARGS = ("--no-config", "--no-entry-points", "-q", "--listen-host", "127.0.0.1")


def _start(home: Path, *args: str) -> subprocess.Popen[str]:
    """The command, for one that is to fail at start (no banner)."""
    environ = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "nectoproxy", *ARGS, *args],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


@contextmanager
def nectoproxy(home: Path, *args: str, env: dict[str, str] | None = None,
               web: bool = True) -> Iterator[NectoProxyCommand]:
    with run_nectoproxy(*ARGS, "--listen-port", "0", "--web-port", "0", *args, home=home,
                        env=env) as command:
        assert command.web_port or not web, command.output()
        yield command


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_the_command_captures_and_serves_the_inspector(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path) as proxy:
        with proxy.client() as client:
            assert client.get(origin.url + "/json").status_code == 200
        with proxy.api() as api:
            assert api.get("/api/health").json()["status"] == "ok"
            entries = wait_for(lambda: api.get("/api/traffic").json()["entries"])
            assert [e["url"] for e in entries] == [origin.url + "/json"]
            assert entries[0]["status"] == 200
            body = api.get(f"/api/traffic/{entries[0]['id']}/response/body")
            assert body.json() == {"hello": "world", "n": 1}
            session = api.get("/api/sessions/active").json()
            assert session["name"].startswith("Run ")
            status = api.get("/api/status").json()
            assert status["proxy"] == f"127.0.0.1:{proxy.port}" and status["capturing"]
        refused = httpx.get(f"http://127.0.0.1:{proxy.web_port}/api/traffic", trust_env=False)
        assert refused.status_code == 401
    store = tmp_path / "flows.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    token_file = tmp_path / "web-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == proxy.token


def test_the_token_is_kept_and_each_run_starts_a_session(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path) as first, first.client() as client:
        client.get(origin.url + "/")
    with nectoproxy(tmp_path) as second:
        assert second.token == first.token  # the bookmarked URL still works
        with second.api() as api:
            sessions = api.get("/api/sessions").json()["sessions"]
            assert len(sessions) == 2
            active = [s for s in sessions if s["active"]]
            assert len(active) == 1 and active[0]["flowCount"] == 0
    with nectoproxy(tmp_path, "--session", str(active[0]["id"])) as third, third.api() as api:
        assert api.get("/api/sessions/active").json()["id"] == active[0]["id"]
        assert len(api.get("/api/sessions").json()["sessions"]) == 2


def test_the_token_comes_from_the_environment(tmp_path: Path) -> None:
    with nectoproxy(tmp_path, env={"NECTOPROXY_WEB_TOKEN": "from-env"}) as proxy:
        assert proxy.token == "from-env"
        with proxy.api() as api:
            assert api.get("/api/sessions").status_code == 200
    assert not (tmp_path / "web-token").exists()


def test_a_busy_inspector_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        process = _start(tmp_path, "--listen-port", str(free_port()), "--web-port", str(busy))
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("nectoproxy: error:")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    assert str(busy) in errors[0] and "--web-port" in errors[0] and "Traceback" not in stderr
    assert "NectoProxy listening" not in stderr  # it failed before serving anyone
    with SQLiteStore(tmp_path / "flows.db") as store:
        assert store.list_sessions() == [] or all(s.flow_count == 0
                                                 for s in store.list_sessions())


def test_a_public_inspector_address_needs_a_token(tmp_path: Path) -> None:
    process = _start(tmp_path, "--listen-port", str(free_port()), "--web-host", "0.0.0.0")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "web.token" in stderr and "Traceback" not in stderr


def test_no_web_captures_nothing(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path, "--no-web", web=False) as proxy:
        with proxy.client() as client:
            assert client.get(origin.url + "/").status_code == 200
        assert not any("Inspector" in line for line in proxy.banner)
    assert not (tmp_path / "flows.db").exists()


def test_kill_9_mid_capture_keeps_every_completed_flow(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path) as proxy:
        with proxy.client() as client:
            for n in range(30):
                assert client.get(origin.url + f"/echo?n={n}").status_code == 200
        with proxy.api() as api:  # completed flows are written within a moment
            wait_for(lambda: len(api.get("/api/traffic?filter=status:200").json()["entries"])
                     == 30)
        # One more still streaming when the process dies.
        slow = subprocess.Popen(["curl", "-sS", "--proxy", f"http://127.0.0.1:{proxy.port}",
                                 origin.url + "/drip?n=50&delay=0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(10)
        slow.wait(30)
    with SQLiteStore(tmp_path / "flows.db") as store:
        flows, _ = store.list_flows(session_id=store.active_session().id, limit=100,
                                    order="oldest")
        done = [f for f in flows if f.status == 200 and f.path.startswith("/echo")]
        assert [f.path for f in done] == [f"/echo?n={n}" for n in range(30)]
        for summary in done:
            body = store.get_body(summary.id, "response")
            assert body is not None and summary.path.encode() in body[0]


def test_workers_write_to_one_store(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path, env={"NECTOPROXY_PROXY_WORKERS": "2"}) as proxy:
        assert any("(2 worker processes)" in line for line in proxy.banner)
        for n in range(40):  # a new connection each: the kernel spreads them over both
            with proxy.client() as client:
                assert client.get(origin.url + f"/echo?n={n}").status_code == 200
        with proxy.api() as api:
            def all_there() -> bool:
                page = api.get("/api/traffic?limit=100").json()["entries"]
                return len(page) == 40 and all(e["status"] == 200 for e in page)

            assert wait_for(all_there, 15)
        children = subprocess.run(["pgrep", "-P", str(proxy.process.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()
        assert children
    ports = {int(r.split(":")[1]) for r in _client_ports(tmp_path)}
    assert len(ports) == 40


def _client_ports(home: Path) -> list[str]:
    with SQLiteStore(home / "flows.db") as store:
        flows, _ = store.list_flows(limit=100)
        records = [store.get_flow(f.id) for f in flows]
    return [r.client_addr for r in records if r is not None and r.client_addr]


def _age_sessions(home: Path, days: float) -> None:
    """Make the sessions look as old as their flows (captured then, not imported today)."""
    with contextlib.closing(sqlite3.connect(home / "flows.db")) as conn, conn:
        conn.execute("UPDATE sessions SET created_at = ?", (time.time() - days * 86400,))


def test_retention_runs_at_start(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "flows.db") as store:
        store.start_run()
        old = time.time() - 10 * 86400
        for n in range(50):
            store.save_flow(FlowRecord(id=new_flow_id(), method="GET", url=f"http://x/{n}",
                                       host="x", path=f"/{n}", started_at=old + n, status=200))
    _age_sessions(tmp_path, 10)
    with nectoproxy(tmp_path, env={"NECTOPROXY_WEB_MAX_FLOWS": "10"}) as proxy, \
            proxy.api() as api:
        def pruned() -> bool:
            sessions = api.get("/api/sessions").json()["sessions"]
            return sum(s["flowCount"] for s in sessions) == 10

        assert wait_for(pruned, 15)


def test_retention_by_age(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "flows.db") as store:
        store.start_run()
        for age in (9, 7, 2, 1):  # captured in that order
            store.save_flow(FlowRecord(id=new_flow_id(), method="GET", url="http://x/",
                                       host="x", path=f"/{age}",
                                       started_at=time.time() - age * 86400, status=200))
    _age_sessions(tmp_path, 10)
    with nectoproxy(tmp_path, env={"NECTOPROXY_WEB_MAX_AGE_DAYS": "5"}) as proxy, \
            proxy.api() as api:
        def kept() -> set[str]:
            sessions = api.get("/api/sessions").json()["sessions"]
            paths: set[str] = set()
            for session in sessions:
                page = api.get(f"/api/traffic?sessionId={session['id']}").json()["entries"]
                paths |= {e["path"] for e in page}
            return paths

        assert wait_for(lambda: kept() == {"/1", "/2"}, 15)


def test_replays_reach_the_proxy_on_loopback_with_its_credentials() -> None:
    from nectoproxy.config import config_from_dict
    from nectoproxy.inspector import proxy_url, ui_url

    config = config_from_dict({"proxy": {"proxy_auth": "me:p@ss:word"}})
    assert proxy_url(config, ("0.0.0.0", 8888)) == "http://me:p%40ss%3Aword@127.0.0.1:8888"
    assert proxy_url(config_from_dict({}), ("::", 9)) == "http://[::1]:9"
    assert ui_url("127.0.0.1", 8889, "a/b+c") == "http://127.0.0.1:8889/?token=a/b%2Bc"
