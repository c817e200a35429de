"""Nothing completed is lost: the file is a valid HAR after every flow, whatever happens next."""

from __future__ import annotations

import importlib.metadata
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from har_testing import load_har, validate, wait_for_entries
from nectoproxy_plugin_har import HarPlugin

from nectoproxy.testing.origin import free_port


def test_valid_after_each_flow_while_the_proxy_runs(make_proxy, origin, tls_origin, tmp_path):
    plugin = HarPlugin()
    config = {"plugins": {"har": {"path": str(tmp_path / "live.har")}}}
    urls = [origin.url + "/", tls_origin.url + "/json", origin.url + "/bytes/3000",
            tls_origin.url + "/gzip-text", origin.url + "/status/404"]
    with make_proxy(plugins=[plugin], config=config) as proxy, proxy.client() as client:
        assert load_har(plugin.path)["log"]["entries"] == []  # valid before the first flow
        validate(load_har(plugin.path))
        for done, url in enumerate(urls, start=1):
            client.get(url)
            document = wait_for_entries(plugin.path, done)
            validate(document)
            assert [e["request"]["url"] for e in document["log"]["entries"]] == urls[:done]
        assert not plugin.writer.closed  # all of this happened with the proxy still running
    assert len(load_har(plugin.path)["log"]["entries"]) == len(urls)  # and stopping kept it


def _other_plugins() -> list[str]:
    """Every other installed plugin is disabled, so that only this one is under test."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")}
                  - {"har"})


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the proxy did not listen on {port} within {timeout}s")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_or_interrupted_proxy_leaves_a_valid_file(origin, tmp_path, stop):
    port = free_port()
    disabled = ", ".join(f'"{name}"' for name in _other_plugins())
    (tmp_path / "nectoproxy.toml").write_text(f"""
[proxy]
listen_host = "127.0.0.1"
listen_port = {port}

[certs]
dir = "{tmp_path / 'certs'}"

[plugins]
disable = [{disabled}]

[plugins.har]
path = "out/flows.har"
""", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "nectoproxy", "--config", str(tmp_path / "nectoproxy.toml")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process)
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=30) as client:
            for n in range(3):
                assert client.get(origin.url + f"/echo?n={n}").status_code == 200
        document = wait_for_entries(tmp_path / "out" / "flows.har", 3)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    after = load_har(tmp_path / "out" / "flows.har")
    assert after == document
    validate(after)
    assert [e["request"]["url"] for e in after["log"]["entries"]] == [
        origin.url + f"/echo?n={n}" for n in range(3)]
    if stop == signal.SIGINT:
        assert process.returncode in (0, 130, -signal.SIGINT)
        assert b"recording flows to" in stderr


def test_concurrent_flows_all_recorded(make_proxy, origin, tls_origin, tmp_path):
    import threading

    plugin = HarPlugin()
    config = {"plugins": {"har": {"path": str(tmp_path / "busy.har")}}}
    errors: list[BaseException] = []

    def client_thread(proxy, n: int) -> None:
        try:
            with proxy.client() as client:
                for i in range(3):
                    base = tls_origin.url if (n + i) % 2 else origin.url
                    assert client.get(f"{base}/echo?client={n}&i={i}").status_code == 200
        except BaseException as exc:  # noqa: BLE001 -- reported by the test below
            errors.append(exc)

    with make_proxy(plugins=[plugin], config=config) as proxy:
        threads = [threading.Thread(target=client_thread, args=(proxy, n)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        document = wait_for_entries(plugin.path, 24)
    validate(document)
    queries = sorted(e["request"]["url"].partition("?")[2] for e in document["log"]["entries"])
    assert queries == sorted(f"client={n}&i={i}" for n in range(8) for i in range(3))
