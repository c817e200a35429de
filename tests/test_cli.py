"""The `nectoproxy` command starts a real proxy, logs flows, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from nectoproxy.testing.origin import free_port


def test_cli_serves_logs_and_shuts_down(tmp_path, origin):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(tmp_path),
           "NECTOPROXY_WEB_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nectoproxy", "--no-config", "--listen-host", "127.0.0.1",
         "--listen-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False) as client:
                    response = client.get(origin.url + "/json")
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert response.json() == {"hello": "world", "n": 1}
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stderr.count("listening on") == 1, stderr
    assert f"NectoProxy listening on 127.0.0.1:{port}" in stderr
    assert f"GET {origin.url}/json -> 200" in stderr
    assert (tmp_path / "certs" / "ca.pem").is_file()
    assert "Traceback" not in stderr


def test_workers_share_the_port(tmp_path, origin):
    """`workers = 2`: two processes accept on one port; both serve, both stop on SIGTERM."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(tmp_path),
           "NECTOPROXY_WEB_PORT": "0",
           "NECTOPROXY_PROXY_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nectoproxy", "--no-config", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        ok = 0
        while time.monotonic() < deadline and ok < 20:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False) as client:
                    ok += client.get(origin.url + "/").status_code == 200
            except httpx.ConnectError:
                time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
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
    port = free_port()
    env = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(tmp_path),
           "NECTOPROXY_WEB_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nectoproxy", "--no-config", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import threading

    def slow_request() -> None:
        try:
            with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False,
                              timeout=30) as client:
                client.get(origin.url + "/slow?delay=20")
        except httpx.HTTPError:
            pass  # cut off by the forced exit, as intended

    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with httpx.Client(proxy=f"http://127.0.0.1:{port}", trust_env=False) as client:
                    client.get(origin.url + "/")
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)  # the slow request is in flight
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting for the in-flight request
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
        worker.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
