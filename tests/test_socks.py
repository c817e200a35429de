"""Issue 18: the socks5 listener, with real clients (curl --socks5 and --socks5-hostname,
httpx over socksio) and with raw sockets for what they never send."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import subprocess
from typing import Any

import httpx
import pytest

from nectoproxy import hookimpl
from nectoproxy.testing.origin import RawServer

JSON = b'{"hello": "world", "n": 1}'
SOCKS = {"proxy": {"listen": ["socks5@0"]}}


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """curl with only the proxy its arguments name (none from the environment)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], env=env,
                          capture_output=True, timeout=30, check=False)


class Seen:
    def __init__(self) -> None:
        self.flows: list[tuple[str, str, str | None]] = []
        self.targets: list[tuple[str, int] | None] = []

    @hookimpl
    def on_connect(self, connection: Any) -> None:
        self.targets.append(connection.target)

    @hookimpl
    def on_request(self, flow: Any) -> None:
        tls = flow.connection.tls
        self.flows.append((flow.connection.mode, flow.request.url, tls.sni if tls else None))


def handshake(port: int, request: bytes, *, greeting: bytes = b"\x05\x01\x00",
              timeout: float = 5) -> tuple[socket.socket, bytes]:
    """A raw SOCKS5 client: greeting, then ``request``; the socket and the reply read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(greeting)
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(request)
    return sock, _read(sock, 10)


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def connect_request(host: str, port: int, *, command: int = 1) -> bytes:
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        kind = b"\x01"
    except OSError:
        try:
            packed, kind = socket.inet_pton(socket.AF_INET6, host), b"\x04"
        except OSError:
            packed, kind = bytes([len(host)]) + host.encode(), b"\x03"
    return bytes([5, command, 0]) + kind + packed + struct.pack("!H", port)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(logging.getLogger("nectoproxy"), "propagate", True)
    caplog.set_level(logging.INFO, logger="nectoproxy")
    return caplog


# -- real clients ----------------------------------------------------------------------------


def test_curl_socks5_hostname_and_socks5_http_and_https_intercepted(start_proxy, origin,
                                                                    tls_origin):
    seen = Seen()
    with start_proxy(plugins=[seen], config=SOCKS) as running:
        socks = f"127.0.0.1:{running.port}"
        ca = str(running.ca_path)
        https = f"https://localhost:{tls_origin.port}/json"
        results = [
            curl("--socks5-hostname", socks, "--cacert", ca, https),
            curl("--socks5", socks, "--cacert", ca, https),  # curl resolves: an address
            curl("--socks5-hostname", socks, origin.url + "/json"),
            curl("--socks5", socks, origin.url + "/json"),
        ]
    for result in results:
        assert result.returncode == 0 and result.stdout == JSON, result.stderr
    assert [mode for mode, _, _ in seen.flows] == ["socks5"] * 4
    assert seen.flows[0] == ("socks5", https, "localhost")
    assert seen.flows[1][2] == "localhost"  # the SNI names the leaf, whatever the address
    assert seen.flows[2][1] == seen.flows[3][1] == origin.url + "/json"
    targets = [t for t in seen.targets if t is not None]
    assert targets[0] == ("localhost", tls_origin.port)
    assert targets[1][0] in ("127.0.0.1", "::1")  # --socks5 sends an address
    assert tls_origin.errors == [] and origin.errors == []


def test_httpx_with_a_socks5_proxy(start_proxy, tls_origin):
    with start_proxy(config=SOCKS) as running:
        verify = ssl.create_default_context(cafile=str(running.ca_path))
        with httpx.Client(proxy=f"socks5://127.0.0.1:{running.port}", verify=verify,
                          trust_env=False, timeout=20) as client:
            for _ in range(3):  # one tunnel, requests kept alive in it
                response = client.get(f"https://localhost:{tls_origin.port}/json")
                assert response.content == JSON
            assert client.post(f"https://localhost:{tls_origin.port}/echo",
                               content=b"x" * 70_000).json()["body_length"] == 70_000


def test_username_and_password(start_proxy, origin, logs):
    config = {"proxy": {"listen": ["socks5@0"], "proxy_auth": "user:s3cret"}}
    with start_proxy(config=config) as running:
        good = curl("--socks5-hostname", f"user:s3cret@127.0.0.1:{running.port}",
                    origin.url + "/json")
        bad = curl("--socks5-hostname", f"user:wrong@127.0.0.1:{running.port}",
                   origin.url + "/json")
        none = curl("--socks5-hostname", f"127.0.0.1:{running.port}", origin.url + "/json")
        with httpx.Client(proxy=f"socks5://user:s3cret@127.0.0.1:{running.port}",
                          trust_env=False, timeout=20) as client:
            assert client.get(origin.url + "/json").content == JSON
    assert good.stdout == JSON, good.stderr
    assert bad.returncode != 0 and none.returncode != 0
    assert "username/password rejected" in logs.text
    assert "offers no acceptable authentication method" in logs.text
    assert len(origin.requests) == 2


def test_ipv6_and_ipv4_addresses_and_opaque_bytes_relayed(start_proxy):
    """ATYP 1 and 4 (curl only sends what it resolved), and bytes that are neither TLS nor
    HTTP, relayed both ways untouched."""

    def echo(sock: socket.socket) -> None:
        while data := sock.recv(65536):
            sock.sendall(data)

    with RawServer(echo, host="::1") as v6, RawServer(echo) as v4, \
            start_proxy(config=SOCKS) as running:
        for host, server in (("::1", v6), ("127.0.0.1", v4)):
            sock, reply = handshake(running.port, connect_request(host, server.port))
            with sock:
                assert reply[:2] == b"\x05\x00", reply
                data = b"\x00\x01binary, not HTTP\r\n\r\n"
                sock.sendall(data)
                assert _read(sock, len(data)) == data


def test_pass_through_and_refusals_from_on_connect(start_proxy, tls_origin, origin_ca_path):
    class Refuse:
        def __init__(self) -> None:
            self.tunnels: list[tuple[str, str, int]] = []

        @hookimpl
        def on_connect(self, connection: Any) -> None:
            if connection.target and connection.target[0] == "refused.test":
                connection.refuse(403, "no")

        @hookimpl
        def on_tunnel(self, tunnel: Any) -> None:
            self.tunnels.append((tunnel.connection.mode, tunnel.host, tunnel.port))

    config = {"proxy": {"listen": ["socks5@0"], "passthrough": ["localhost"]}}
    plugin = Refuse()
    with start_proxy(plugins=[plugin], config=config) as running:
        relayed = curl("--socks5-hostname", f"127.0.0.1:{running.port}", "--cacert",
                       origin_ca_path, f"https://localhost:{tls_origin.port}/json")
        sock, reply = handshake(running.port, connect_request("refused.test", 80))
        sock.close()
    assert relayed.stdout == JSON, relayed.stderr  # the origin's own certificate, verified
    assert plugin.tunnels == [("socks5", "localhost", tls_origin.port)]
    assert reply[:2] == b"\x05\x02"  # connection not allowed by ruleset


def test_access_control_as_in_the_regular_mode(start_proxy, origin):
    config = {"proxy": {"listen": ["socks5@0"], "allow_clients": ["10.0.0.0/8"]}}
    with start_proxy(config=config) as running:
        result = curl("--socks5-hostname", f"127.0.0.1:{running.port}", origin.url + "/")
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(b"\x05\x01\x00")
            try:  # closed (reset, since the greeting was not read), no HTTP answer
                assert _read(sock, 2) == b""
            except ConnectionResetError:
                pass
    assert result.returncode != 0 and origin.requests == []


# -- what real clients never send ------------------------------------------------------------


@pytest.mark.parametrize(("request_bytes", "reply"), [
    (connect_request("127.0.0.1", 80, command=2), 7),  # BIND
    (connect_request("127.0.0.1", 80, command=3), 7),  # UDP ASSOCIATE
    (b"\x05\x01\x00\x09\x00\x00", 8),  # address type 9
    (b"\x05\x01\x00\x03\x05bad\xffx\x00\x50", 1),  # a name that is not one
    (b"\x05\x01\x00\x03\x00\x00\x50", 1),  # an empty name
    (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 1),  # a request of version 4
])
def test_bad_requests_get_the_right_reply_and_a_log_line(start_proxy, request_bytes, reply,
                                                         logs):
    with start_proxy(config=SOCKS) as running:
        sock, answer = handshake(running.port, request_bytes)
        with sock:
            assert answer[:2] == bytes([5, reply]), answer
            assert _read(sock, 1) == b""  # then closed
    assert "SOCKS5 client 127.0.0.1:" in logs.text
    assert "Traceback" not in logs.text


@pytest.mark.parametrize(("greeting", "answer"), [
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"\x00\x5b\x00"),  # SOCKS4: "rejected"
    (b"\x05\x01\x02", b"\x05\xff"),  # username/password only, and none is configured
    (b"\x05\x00", b"\x05\xff"),  # no method at all
    (b"GET / HTTP/1.1\r\n\r\n", b""),
])
def test_bad_greetings(start_proxy, greeting, answer, logs):
    with start_proxy(config=SOCKS) as running, \
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(greeting)
        assert _read(sock, 3) == answer
    assert "SOCKS5 client 127.0.0.1:" in logs.text
    assert "Traceback" not in logs.text


def test_a_client_that_stalls_is_dropped_after_header_timeout(start_proxy, logs):
    config = {"proxy": {"listen": ["socks5@0"], "header_timeout": 0.3}}
    with start_proxy(config=config) as running, \
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"\x05\x01")  # and never the methods
        assert _read(sock, 1) == b""
    assert "handshake not finished in time" in logs.text




def test_credentials_split_at_the_first_colon(start_proxy):
    """proxy_auth "us:er:pw" is user "us" with password "er:pw", as in Basic authentication;
    user "us:er" with password "pw" is not the same."""
    config = {"proxy": {"listen": ["socks5@0"], "proxy_auth": "us:er:pw"}}
    answers = []
    with start_proxy(config=config) as running:
        for user, password in ((b"us:er", b"pw"), (b"us", b"er:pw")):
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
                sock.sendall(b"\x05\x01\x02")
                assert _read(sock, 2) == b"\x05\x02"
                sock.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
                answers.append(_read(sock, 2))
    assert answers == [b"\x01\x01", b"\x01\x00"]


def test_an_ipv6_listener(start_proxy, origin):
    with start_proxy(config={"proxy": {"listen": ["socks5@[::1]:0"]}}) as running:
        assert running.proxy.listening[0][1][0] == "::1"
        result = curl("--socks5-hostname", f"[::1]:{running.port}", origin.url + "/json")
    assert result.stdout == JSON, result.stderr


def test_a_socks4_client_is_told_no(start_proxy, origin, logs):
    with start_proxy(config=SOCKS) as running:
        result = curl("--socks4", f"127.0.0.1:{running.port}", origin.url + "/")
    assert result.returncode != 0 and b"rejected" in result.stderr.lower(), result.stderr
    assert "SOCKS4 is not served (only SOCKS5)" in logs.text
