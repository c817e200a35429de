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
    env = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(tmp_path)}
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
    assert f"NectoProxy listening on 127.0.0.1:{port}" in stderr
    assert f"GET {origin.url}/json -> 200" in stderr
    assert (tmp_path / "certs" / "ca.pem").is_file()
    assert "Traceback" not in stderr
