"""The `nectoproxy` command starts a real proxy, logs flows, and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx

from nectoproxy.testing.command import run_nectoproxy
from nectoproxy.testing.origin import free_port

#: The command as these tests start it: no config file, the inspector on a port of its own.
ARGS = ("--no-config", "--listen-host", "127.0.0.1")
ENV = {"NECTOPROXY_WEB_PORT": "0"}


def test_cli_serves_logs_and_shuts_down(tmp_path, origin):
    port = free_port()
    with run_nectoproxy(*ARGS, "--listen-port", str(port), home=tmp_path, env=ENV) as proc:
        assert proc.port == port
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False) as client:
            response = client.get(origin.url + "/json")
        assert response.json() == {"hello": "world", "n": 1}
    stderr = proc.output()
    assert proc.returncode == 0, stderr
    assert stderr.count("listening on") == 1, stderr
    assert f"NectoProxy listening on 127.0.0.1:{port}" in stderr
    assert f"GET {origin.url}/json -> 200" in stderr
    assert (tmp_path / "certs" / "ca.pem").is_file()
    assert "Traceback" not in stderr


def test_workers_share_the_port(tmp_path, origin):
    """`workers = 2`: two processes accept on one port; both serve, both stop on SIGTERM."""
    with run_nectoproxy(*ARGS, "--listen-port", "0", "-q", home=tmp_path,
                        env={**ENV, "NECTOPROXY_PROXY_WORKERS": "2"}) as proc:
        assert proc.workers == 2
        deadline = time.monotonic() + 30
        ok = 0
        while time.monotonic() < deadline and ok < 20:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{proc.port}",
                                  trust_env=False) as client:
                    ok += client.get(origin.url + "/").status_code == 200
            except httpx.ConnectError:
                time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(proc.process.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()
    stderr = proc.output()
    assert ok == 20
    assert "(2 worker processes)" in stderr
    assert len(children) >= 1  # the second worker (multiprocessing may add a tracker)
    assert proc.returncode == 0, stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_second_signal_exits_at_once(tmp_path, origin):
    """Ctrl-C waits for in-flight requests (up to the grace period); a second one does not."""
    import threading

    with run_nectoproxy(*ARGS, "--listen-port", "0", "-q", home=tmp_path, env=ENV) as proxy:
        proc, port = proxy.process, proxy.port

        def slow_request() -> None:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False,
                                  timeout=30) as client:
                    client.get(origin.url + "/slow?delay=20")
            except httpx.HTTPError:
                pass  # cut off by the forced exit, as intended

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)  # the slow request is in flight
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting for the in-flight request
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - started < 5
        worker.join(30)
    assert proc.returncode == 130
