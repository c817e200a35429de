"""Issue 18: chaining through a SOCKS upstream (socks4, socks4a, socks5, socks5h) with
credentials and no_upstream globs. The SOCKS server is pproxy (PyPI), a server that is not
ours, run in its own process; socks4a and refusals, which pproxy does not do, are checked
against stubs that record the bytes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nectoproxy.testing.origin import RawServer, free_port

JSON = b'{"hello": "world", "n": 1}'
# pproxy asks for the current event loop the way Python 3.12 no longer allows, and does not
# start when uvloop is importable: start it on asyncio's loop.
PPROXY = """
import asyncio, sys
sys.modules["uvloop"] = None
asyncio.set_event_loop(asyncio.new_event_loop())
from pproxy.server import main
sys.argv = ["pproxy", *sys.argv[1:]]
main()
"""


class PProxy:
    """``python -m pproxy -l SCHEME://127.0.0.1:PORT[#user:pass] -v`` and what it logged."""

    def __init__(self, scheme: str, credentials: str = "") -> None:
        self.port = free_port()
        self.scheme = scheme
        listen = f"{scheme}://127.0.0.1:{self.port}" + (f"#{credentials}" if credentials else "")
        self.process = subprocess.Popen([sys.executable, "-c", PPROXY, "-l", listen, "-v"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.process.poll() is None, "\n".join(self.lines)
                assert time.monotonic() < deadline, "pproxy did not start"
                time.sleep(0.1)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def targets(self) -> list[str]:
        """The "host:port" of every connection it was asked for (its -v lines)."""
        return [line.rsplit(" -> ", 1)[1] for line in self.lines if " -> " in line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def pproxy() -> Iterator[Any]:
    started: list[PProxy] = []

    def start(scheme: str, credentials: str = "") -> PProxy:
        started.append(PProxy(scheme, credentials))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def wait_for(predicate: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(predicate())


@pytest.mark.parametrize("scheme", ["socks5h", "socks5"])
def test_socks5_upstream_with_credentials(make_proxy, pproxy, origin, tls_origin, scheme):
    """socks5h sends the name for the SOCKS server to resolve, socks5 the address resolved
    here; HTTP and intercepted HTTPS both go through, TLS verified end to end."""
    server = pproxy("socks5", "bob:s3cret")
    config = {"proxy": {"upstream_proxy": f"{scheme}://bob:s3cret@127.0.0.1:{server.port}"}}
    with make_proxy(config=config) as running:
        https = running.curl(f"https://localhost:{tls_origin.port}/json")
        http = running.curl(f"http://localhost:{origin.port}/json")
    assert https.stdout == JSON, https.stderr
    assert http.stdout == JSON, http.stderr
    name = "localhost" if scheme == "socks5h" else "127.0.0.1"
    assert wait_for(lambda: len(server.targets()) == 2), server.lines
    assert server.targets() == [f"{name}:{tls_origin.port}", f"{name}:{origin.port}"]


def test_socks4_upstream(make_proxy, pproxy, origin, tls_origin):
    server = pproxy("socks4")
    config = {"proxy": {"upstream_proxy": f"socks4://127.0.0.1:{server.port}"}}
    with make_proxy(config=config) as running:
        https = running.curl(f"https://localhost:{tls_origin.port}/json")
        http = running.curl(f"http://localhost:{origin.port}/json")
    assert https.stdout == JSON, https.stderr
    assert http.stdout == JSON, http.stderr
    assert wait_for(lambda: len(server.targets()) == 2), server.lines
    assert server.targets() == [f"127.0.0.1:{tls_origin.port}", f"127.0.0.1:{origin.port}"]


def test_no_upstream_globs_and_pass_through_tunnels(make_proxy, pproxy, origin, tls_origin,
                                                    origin_ca_path):
    server = pproxy("socks5")
    config = {"proxy": {"upstream_proxy": f"socks5h://127.0.0.1:{server.port}",
                        "no_upstream": ["127.0.0.*"], "passthrough": ["localhost"]}}
    with make_proxy(config=config) as running:
        direct = running.curl(f"http://127.0.0.1:{origin.port}/json")
        relayed = subprocess.run(
            ["curl", "-sS", "--proxy", running.url, "--cacert", origin_ca_path,
             f"https://localhost:{tls_origin.port}/json"],
            capture_output=True, timeout=30, check=False)
    assert direct.stdout == JSON and relayed.stdout == JSON, (direct.stderr, relayed.stderr)
    assert wait_for(lambda: len(server.targets()) == 1), server.lines
    assert server.targets() == [f"localhost:{tls_origin.port}"]  # only the tunnel


def test_wrong_credentials_are_a_502_that_says_so(make_proxy, pproxy, origin):
    server = pproxy("socks5", "bob:s3cret")
    config = {"proxy": {"upstream_proxy": f"socks5://bob:wrong@127.0.0.1:{server.port}"}}
    with make_proxy(config=config) as running:
        wrong = running.curl("-w", "%{http_code}", f"http://localhost:{origin.port}/json")
    assert wrong.stdout.endswith(b"502"), wrong.stdout
    assert b"upstream proxy socks5://127.0.0.1:" in wrong.stdout
    assert origin.requests == []


def _stub(replies: list[bytes], received: list[bytes], answer: bytes) -> Any:
    """A SOCKS server stub: reads what the client sends, answers ``replies`` in turn, then
    (after a success) plays an HTTP origin answering ``answer``."""

    def handler(sock: socket.socket) -> None:
        sock.settimeout(5)
        for reply in replies:
            received.append(sock.recv(4096))
            sock.sendall(reply)
        if answer:
            received.append(sock.recv(65536))
            sock.sendall(answer)

    return RawServer(handler)


HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_socks4a_sends_the_name(make_proxy):
    received: list[bytes] = []
    with _stub([b"\x00\x5a" + b"\x00" * 6], received, HTTP_OK) as stub:
        config = {"proxy": {"upstream_proxy": f"socks4a://alice@127.0.0.1:{stub.port}"}}
        with make_proxy(config=config) as running:
            result = running.curl("http://far.example.test:8081/x")
    assert result.stdout == b"ok", result
    request = received[0]
    assert request[:4] == b"\x04\x01" + (8081).to_bytes(2, "big")
    assert request[4:8] == b"\x00\x00\x00\x01"  # SOCKS4a: "the name follows"
    assert request[8:] == b"alice\x00far.example.test\x00"
    assert received[1].startswith(b"GET /x HTTP/1.1\r\n")  # origin-form: not a proxy request


@pytest.mark.parametrize(("reply", "message"), [
    (5, b"connection refused"), (4, b"host unreachable"), (2, b"not allowed by ruleset")])
def test_a_socks5_refusal_names_the_reason(make_proxy, reply, message):
    received: list[bytes] = []
    answer = bytes([5, reply, 0, 1, 0, 0, 0, 0, 0, 0])
    with _stub([b"\x05\x00", answer], received, b"") as stub:
        config = {"proxy": {"upstream_proxy": f"socks5h://127.0.0.1:{stub.port}"}}
        with make_proxy(config=config) as running:
            result = running.curl("-w", "%{http_code}", "http://far.example.test/")
    assert result.stdout.endswith(b"502") and message in result.stdout, result.stdout
    assert received[1] == b"\x05\x01\x00\x03\x10far.example.test\x00\x50"


def test_upstream_proxy_urls_are_checked():
    from nectoproxy.config import config_from_dict
    from nectoproxy.errors import ConfigError

    for good in ("socks4://h", "socks4a://u@h:1", "socks5://u:p@h", "socks5h://[::1]:1080"):
        config_from_dict({"proxy": {"upstream_proxy": good}})
    with pytest.raises(ConfigError, match=r"or socks4://, socks4a://, socks5://, socks5h://"):
        config_from_dict({"proxy": {"upstream_proxy": "socks6://h"}})




def test_socks4_cannot_reach_ipv6(make_proxy):
    received: list[bytes] = []
    with _stub([], received, b"") as stub:
        config = {"proxy": {"upstream_proxy": f"socks4://127.0.0.1:{stub.port}"}}
        with make_proxy(config=config) as running:
            result = running.curl("-w", "%{http_code}", "http://[::1]:9/")
    assert result.stdout.endswith(b"502"), result.stdout
    assert b"SOCKS4 reaches IPv4 addresses only, not ::1" in result.stdout
