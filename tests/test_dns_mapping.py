"""Issue 18: DNS mapping (``[proxy] hosts``): a name is reached at another address while the
client, the Host header, SNI and the certificate check keep the name. Real sockets, curl with
strict verification."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from nectoproxy import hookimpl
from nectoproxy.config import config_from_dict, load_config
from nectoproxy.errors import ConfigError
from nectoproxy.testing.origin import Origin

JSON = b'{"hello": "world", "n": 1}'


class Addresses:
    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[str, int] | None]] = []

    @hookimpl
    def on_complete(self, flow: Any) -> None:
        self.seen.append((flow.request.url, flow.server_address))


@pytest.fixture
def api_origin(origin_ca: Any) -> Any:
    """An HTTPS origin whose certificate names only api.example.test."""
    with Origin(tls=True, ca=origin_ca, cert_hosts=("api.example.test",)) as server:
        yield server


def test_a_mapped_name_is_verified_against_itself(start_proxy, api_origin):
    recorder = Addresses()
    config = {"proxy": {"hosts": {"api.example.test": f"127.0.0.1:{api_origin.port}"}}}
    with start_proxy(plugins=[recorder], config=config) as running:
        result = running.curl("https://api.example.test/json")
    assert result.returncode == 0 and result.stdout == JSON, result.stderr
    assert recorder.seen == [("https://api.example.test/json", ("127.0.0.1", api_origin.port))]
    (request,) = api_origin.requests
    assert request.tls and request.header("Host") == "api.example.test"


def test_a_pattern_without_a_port_keeps_the_requests(start_proxy, origin):
    config = {"proxy": {"hosts": {"*.test": "127.0.0.1"}}}
    with start_proxy(config=config) as running:
        result = running.curl(f"http://svc.internal.test:{origin.port}/json")
        other = running.curl(f"http://nothing.invalid:{origin.port}/json")
    assert result.stdout == JSON, result.stderr
    assert origin.requests[0].header("Host") == f"svc.internal.test:{origin.port}"
    assert b"cannot resolve nothing.invalid" in other.stdout  # not mapped: resolved as ever


def test_the_mapped_address_must_still_prove_the_name(start_proxy, api_origin):
    """Mapping another name to the same origin: its certificate does not name it, so the
    proxy refuses it (502) as it would without the mapping."""
    config = {"proxy": {"hosts": {"other.example.test": f"127.0.0.1:{api_origin.port}"}}}
    with start_proxy(config=config) as running:
        result = running.curl("-o", "/dev/null", "-w", "%{http_code}",
                              "https://other.example.test/json")
    assert result.stdout == b"502"
    assert api_origin.requests == []


def test_pass_through_tunnels_are_mapped_too(start_proxy, api_origin, origin_ca_path):
    """Relayed TLS: the client itself verifies the origin's certificate for the name."""
    config = {"proxy": {"hosts": {"api.example.test": f"127.0.0.1:{api_origin.port}"},
                        "passthrough": ["api.example.test"]}}
    with start_proxy(config=config) as running:
        result = subprocess.run(
            ["curl", "-sS", "--proxy", running.url, "--cacert", origin_ca_path,
             "https://api.example.test/json"],
            capture_output=True, timeout=30, check=False)
    assert result.stdout == JSON, result.stderr


def test_hosts_from_the_environment_and_bad_addresses():
    env = {"NECTOPROXY_PROXY_HOSTS": "a.test=127.0.0.1:3000, *.b.test=[::1]"}
    assert load_config(use_file=False, env=env).proxy.hosts == {
        "a.test": "127.0.0.1:3000", "*.b.test": "[::1]"}
    assert config_from_dict({"proxy": {"hosts": {"v6.test": "::1"}}}).proxy.hosts
    for bad in ("127.0.0.1:http", "127.0.0.1:99999", "", "[::1]x"):
        with pytest.raises(ConfigError, match="proxy.hosts"):
            config_from_dict({"proxy": {"hosts": {"a.test": bad}}})
    with pytest.raises(ConfigError, match=r"proxy.hosts: expected a table of strings"):
        config_from_dict({"proxy": {"hosts": {"a.test": 3000}}})
