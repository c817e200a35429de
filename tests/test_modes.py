"""Issue 18: several ways in at once ([[proxy.listen]], --mode), and reverse mode, over real
sockets with curl pointed straight at the listener."""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from typing import Any

import httpx
import pytest
import tomli_w

from nectoproxy import hookimpl
from nectoproxy.capture import Capture
from nectoproxy.cli import build_parser, config_from_args
from nectoproxy.config import ListenConfig, config_from_dict, config_to_dict, load_config
from nectoproxy.errors import ConfigError
from nectoproxy.store import CaptureWriter, SQLiteStore
from nectoproxy.testing.command import Listener, run_nectoproxy
from nectoproxy.testing.origin import free_port

JSON = b'{"hello": "world", "n": 1}'


def listen_port(running: Any, mode: str) -> int:
    """The port the running proxy's first listener of ``mode`` got."""
    return next(address[1] for m, address in running.proxy.listening if m.mode == mode)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """curl with only the proxy its arguments name (none from the environment)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], env=env,
                          capture_output=True, timeout=30, check=False)


class Modes:
    """Records each flow's mode, URL and the Host header the origin is sent."""

    def __init__(self) -> None:
        self.flows: list[tuple[str, str, str | None]] = []

    @hookimpl
    def on_request(self, flow: Any) -> None:
        self.flows.append((flow.connection.mode, flow.request.url,
                           flow.request.headers.get("Host")))


# -- configuration ---------------------------------------------------------------------------


def test_listen_tables_strings_environment_and_command_line():
    config = config_from_dict({"proxy": {"listen_host": "127.0.0.2", "listen": [
        {"mode": "regular", "port": 8000},
        {"mode": "reverse", "origin": "https://api.example.com", "port": 8443,
         "keep_host": True},
        "socks5@[::1]:1081",
        "reverse:http://127.0.0.1:3000",
        "socks5",
        {"mode": "reverse", "origin": "http://127.0.0.1:3000"},
    ]}})
    assert config.proxy.modes == (
        ListenConfig("regular", "127.0.0.2", 8000),
        ListenConfig("reverse", "127.0.0.2", 8443, "https://api.example.com", True),
        ListenConfig("socks5", "::1", 1081),
        ListenConfig("reverse", "127.0.0.2", 8080, "http://127.0.0.1:3000"),
        ListenConfig("socks5", "127.0.0.2", 1080),
        ListenConfig("reverse", "127.0.0.2", 8080, "http://127.0.0.1:3000"),
    )
    assert config.proxy.modes[1].origin_parts() == ("https", "api.example.com", 443)
    # No list: the regular proxy on listen_host:listen_port, as before.
    plain = config_from_dict({"proxy": {"listen_host": "127.0.0.3", "listen_port": 9000}})
    assert plain.proxy.modes == (ListenConfig("regular", "127.0.0.3", 9000),)
    env = {"NECTOPROXY_PROXY_LISTEN": "regular@7000, socks5@7001"}
    assert [m.port for m in load_config(use_file=False, env=env).proxy.modes] == [7000, 7001]
    args = build_parser().parse_args(["--no-config", "--mode", "regular@127.0.0.1:7100",
                                      "--mode", "reverse:https://a.test:444@7101"])
    modes = config_from_args(args).proxy.modes
    assert [(m.mode, m.port, m.origin) for m in modes] == [
        ("regular", 7100, ""), ("reverse", 7101, "https://a.test:444")]
    # What `config show` prints reads back the same.
    shown = tomllib.loads(tomli_w.dumps(config_to_dict(config)))
    assert config_from_dict(shown).proxy.modes == config.proxy.modes


@pytest.mark.parametrize(("listen", "message"), [
    (["ftp@1"], r"unknown mode 'ftp'"),
    (["regular@http"], r"expected @PORT or @HOST:PORT"),
    ([{"mode": "reverse", "port": 1}], r"proxy.listen\[0\] \(reverse\): origin must be"),
    ([{"mode": "reverse", "origin": "https://a.test/path"}], r"origin must be"),
    ([{"mode": "reverse", "origin": "https://a.test:99999"}], r"bad port in origin"),
    ([{"mode": "socks5", "origin": "http://a.test"}], r"for reverse mode only"),
    ([{"mode": "regular", "port": 70000}], r"70000 is not a port number"),
    ([{"mode": "regular", "prot": 1}], r"proxy.listen\[0\]: unknown key prot"),
    ([{"mode": "bogus"}], r"proxy.listen\[0\].mode: expected one of"),
    ("regular@1", r"proxy.listen: expected a list"),
])
def test_bad_listen_entries_say_which(listen, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"proxy": {"listen": listen}})


# -- several listeners -----------------------------------------------------------------------


def test_one_process_listens_several_ways_at_once(start_proxy, origin):
    recorder = Modes()
    listen = ["regular@0", "regular@0", f"reverse:{origin.url}@0", "socks5@0"]
    with start_proxy(plugins=[recorder], config={"proxy": {"listen": listen}}) as running:
        listening = running.proxy.listening
        assert [m.mode for m, _ in listening] == ["regular", "regular", "reverse", "socks5"]
        assert running.proxy.address == listening[0][1]
        ports = {address[1] for _, address in listening}
        assert len(ports) == 4 and 0 not in ports
        for _, (host, port) in listening[:2]:
            result = curl("--proxy", f"http://{host}:{port}", origin.url + "/json")
            assert result.stdout == JSON, result.stderr
        result = curl(f"http://127.0.0.1:{listen_port(running, 'reverse')}/json")
        assert result.stdout == JSON, result.stderr
        result = curl("--socks5-hostname", f"127.0.0.1:{listen_port(running, 'socks5')}",
                      origin.url + "/json")
        assert result.stdout == JSON, result.stderr
    assert [mode for mode, _, _ in recorder.flows] == ["regular", "regular", "reverse",
                                                       "socks5"]


def test_a_port_in_use_names_the_mode_and_frees_the_others(make_proxy):
    import socket

    from nectoproxy.errors import PortInUse

    port = free_port()
    with pytest.raises(PortInUse, match=rf"the port {port} on 127.0.0.1 \(socks5 mode\) is in"):
        make_proxy(config={"proxy": {"listen": [f"regular@{port}", f"socks5@{port}"]}}) \
            .__enter__()
    with socket.socket() as again:  # the regular listener made first was closed
        again.bind(("127.0.0.1", port))


def test_command_line_modes_and_banner(tmp_path, origin):
    regular, reverse = free_port(), free_port()
    with run_nectoproxy("--no-config", "--no-web", "--mode", f"regular@127.0.0.1:{regular}",
                        "--mode", f"reverse:{origin.url}@127.0.0.1:{reverse}", home=tmp_path,
                        env={"NECTOPROXY_WEB_PORT": "0"}) as proxy:
        assert proxy.listening == [Listener("127.0.0.1", regular, "regular"),
                                   Listener("127.0.0.1", reverse, f"reverse:{origin.url}")]
        response = httpx.get(f"http://127.0.0.1:{reverse}/json", trust_env=False)
        assert response.content == JSON
        with httpx.Client(proxy=f"http://127.0.0.1:{regular}", trust_env=False) as client:
            assert client.get(origin.url + "/json").content == JSON
    stderr = proxy.output()
    assert proxy.returncode == 0, stderr
    assert f"NectoProxy listening on 127.0.0.1:{regular} (regular mode)" in stderr
    assert f"NectoProxy listening on 127.0.0.1:{reverse} (reverse:{origin.url} mode)" in stderr
    assert "Traceback" not in stderr


# -- reverse mode ----------------------------------------------------------------------------


def test_reverse_in_front_of_an_https_origin(start_proxy, tls_origin, tmp_path):
    """curl straight at the listener, over TLS (a leaf for the origin's name, verified
    strictly against the proxy's CA) and in plain HTTP; the Host is the origin's; capture
    stores the flows as reverse-mode ones."""
    store_path = tmp_path / "flows.db"
    store = SQLiteStore(store_path)
    store.start_run()
    writer = CaptureWriter(store_path, max_body_size=1 << 20)
    recorder = Modes()
    origin = f"https://localhost:{tls_origin.port}"
    config = {"proxy": {"listen": [{"mode": "reverse", "origin": origin}]}}
    try:
        with start_proxy(plugins=[recorder, Capture(writer)], config=config) as running:
            port = running.port
            result = curl("--cacert", str(running.ca_path), f"https://localhost:{port}/json")
            assert result.returncode == 0 and result.stdout == JSON, result.stderr
            result = curl(f"http://127.0.0.1:{port}/echo")
            assert result.returncode == 0, result.stderr
            echoed = dict(httpx.Response(200, content=result.stdout).json()["headers"])
            assert echoed["Host"] == f"localhost:{tls_origin.port}"
            # An absolute-form target goes to the origin too: never a forward proxy.
            result = curl("--proxy", f"http://127.0.0.1:{port}", "http://elsewhere.test/json")
            assert result.stdout == JSON, result.stderr
        assert writer.flush(30)
        summaries, _ = store.list_flows(limit=10, order="oldest")
        records = [store.get_flow(s.id) for s in summaries]
        assert [r.mode for r in records if r is not None] == ["reverse"] * 3
        assert len(store.list_flows(filter="mode:reverse", limit=10)[0]) == 3
        assert store.list_flows(filter="mode:regular", limit=10)[0] == []
        stored = records[1]
        assert stored is not None
        assert (stored.url, stored.scheme) == (f"{origin}/echo", "https")
        assert ("Host", f"127.0.0.1:{port}") in stored.request_headers  # as the client sent it
    finally:
        writer.close()
        store.close()
    assert recorder.flows == [
        ("reverse", f"{origin}/json", f"localhost:{tls_origin.port}"),
        ("reverse", f"{origin}/echo", f"localhost:{tls_origin.port}"),
        ("reverse", f"{origin}/json", f"localhost:{tls_origin.port}"),
    ]
    assert tls_origin.errors == []


def test_reverse_keeps_the_host_when_asked(start_proxy, origin):
    config = {"proxy": {"listen": [{"mode": "reverse", "origin": origin.url,
                                    "keep_host": True}]}}
    with start_proxy(config=config) as running:
        result = curl("-H", "Host: app.example.test", f"http://127.0.0.1:{running.port}/echo")
    echoed = dict(httpx.Response(200, content=result.stdout).json()["headers"])
    assert echoed["Host"] == "app.example.test"


def test_reverse_tls_handshake_failure_is_one_log_line(start_proxy, tls_origin, caplog,
                                                       monkeypatch):
    """A client that does not trust the CA: the handshake fails, the proxy logs it and goes
    on serving."""
    import logging

    monkeypatch.setattr(logging.getLogger("nectoproxy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="nectoproxy")
    config = {"proxy": {"listen": [f"reverse:https://localhost:{tls_origin.port}@0"]}}
    with start_proxy(config=config) as running:
        result = curl(f"https://localhost:{running.port}/json")  # the system store only
        assert result.returncode != 0
        result = curl("--cacert", str(running.ca_path), f"https://localhost:{running.port}/json")
        assert result.stdout == JSON, result.stderr
    assert "TLS handshake with client 127.0.0.1 for localhost failed" in caplog.text
    assert "Traceback" not in caplog.text


def test_reverse_mode_serves_the_onboarding_host_no_differently(start_proxy, origin):
    """Reverse mode is the origin's, whatever the Host: no proxy pages answer there."""
    config = {"proxy": {"listen": [f"reverse:{origin.url}@0"]}}
    with start_proxy(config=config) as running:
        result = curl("-H", "Host: necto.setup", f"http://127.0.0.1:{running.port}/json")
    assert result.stdout == JSON



def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` has listening sockets on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_workers_share_every_listener_even_on_port_0(tmp_path, origin):
    """``workers = 2`` with two modes on port 0: the second worker listens on the ports the
    first got, for each mode."""
    with run_nectoproxy("--no-config", "--no-web", "-q", "--mode", "regular@127.0.0.1:0",
                        "--mode", "socks5@127.0.0.1:0", home=tmp_path,
                        env={"NECTOPROXY_WEB_PORT": "0", "NECTOPROXY_PROXY_WORKERS": "2"}
                        ) as proxy:
        assert proxy.workers == 2 and [listener.mode for listener in proxy.listening] == \
            ["regular", "socks5"]
        regular, socks = (listener.port for listener in proxy.listening)
        deadline = time.monotonic() + 30
        children: list[int] = []
        while time.monotonic() < deadline:
            children = [int(pid) for pid in subprocess.run(
                ["pgrep", "-P", str(proxy.process.pid)], capture_output=True, text=True,
                check=False).stdout.split()]
            if any(_listening_ports(pid) >= {regular, socks} for pid in children):
                break
            time.sleep(0.1)
        assert any(_listening_ports(pid) >= {regular, socks} for pid in children)
        assert _listening_ports(proxy.process.pid) >= {regular, socks}
        with httpx.Client(proxy=f"http://127.0.0.1:{regular}", trust_env=False) as client:
            assert client.get(origin.url + "/json").content == JSON
        with httpx.Client(proxy=f"socks5://127.0.0.1:{socks}", trust_env=False) as client:
            assert client.get(origin.url + "/json").content == JSON
    assert proxy.returncode == 0, proxy.output()
    assert "Traceback" not in proxy.output()
