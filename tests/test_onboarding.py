"""The onboarding page (nectoproxy.onboarding), through a real running proxy.

Every request here goes to 127.0.0.1 only: a request for ``http://necto.setup/`` sent through
the proxy is answered by the plugin and never resolved, and nothing asks the proxy to forward
anything to a real host name.
"""

from __future__ import annotations

import plistlib
import socket
import subprocess
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives import serialization

from nectoproxy.certs import CertStore
from nectoproxy.config import ProxyConfig, config_from_dict
from nectoproxy.flow import Connection, Flow, Request, Response
from nectoproxy.onboarding import (
    DER_NAME,
    MOBILECONFIG_NAME,
    PEM_NAME,
    PLATFORMS,
    Onboarding,
)
from nectoproxy.testing import RunningProxy

OPENSSL = "/usr/bin/openssl"
HOST = ProxyConfig().onboarding_host
PAGE = f"http://{HOST}/"


def ca_of(proxy: RunningProxy) -> CertStore:
    store = CertStore(proxy.config.certs_dir)
    store.load_or_create()
    return store


def openssl_sha256(path: Path, *, der: bool = False) -> str:
    args = [OPENSSL, "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"]
    if der:
        args[4:4] = ["-inform", "DER"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return out.strip().partition("=")[2]


def raw_request(proxy: RunningProxy, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send one request exactly as written (no client normalises its path) and read it all."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "href" and value is not None:
                self.hrefs.append(value)
            if name == "src" and value is not None:
                self.sources.append(value)


def test_page_shows_fingerprint_links_and_steps(proxy: RunningProxy, origin: Any) -> None:
    with proxy.client(trust_env=False) as client:
        response = client.get(PAGE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    store = ca_of(proxy)
    assert store.fingerprint("sha256") in page
    links = _Links()
    links.feed(page)
    assert sorted(links.hrefs) == sorted(f"/{n}" for n in (PEM_NAME, DER_NAME, MOBILECONFIG_NAME))
    # Self-contained: no scripts, no external stylesheets or images.
    assert not links.sources and not {"script", "link", "img", "iframe"} & links.tags
    for platform in PLATFORMS:
        assert f"<h2>{platform.title}</h2>" in page
        assert f"docs/certificates/{platform.doc}" in page
    assert origin.requests == []  # answered by the proxy itself


def test_pem_and_der_downloads_are_the_ca(proxy: RunningProxy, tmp_path: Path) -> None:
    expected = ca_of(proxy).fingerprint("sha256")
    for name, der in ((PEM_NAME, False), (DER_NAME, True)):
        target = tmp_path / name
        result = proxy.curl("--fail", "-o", str(target), f"{PAGE}{name}")
        assert result.returncode == 0, result.stderr
        assert openssl_sha256(target, der=der) == expected
    assert b"PRIVATE KEY" not in (tmp_path / PEM_NAME).read_bytes()


def test_download_headers(proxy: RunningProxy) -> None:
    types = {
        PEM_NAME: "application/x-pem-file",
        DER_NAME: "application/x-x509-ca-cert",
        MOBILECONFIG_NAME: "application/x-apple-aspen-config",
    }
    with proxy.client(trust_env=False) as client:
        for name, content_type in types.items():
            response = client.get(PAGE + name)
            assert response.status_code == 200
            assert response.headers["content-type"] == content_type
            assert response.headers["cache-control"] == "no-store"
            kind = "inline" if name == MOBILECONFIG_NAME else "attachment"
            assert response.headers["content-disposition"] == f'{kind}; filename="{name}"'


def test_mobileconfig_embeds_the_ca(proxy: RunningProxy) -> None:
    store = ca_of(proxy)
    with proxy.client(trust_env=False) as client:
        first = client.get(PAGE + MOBILECONFIG_NAME).content
        again = client.get(PAGE + MOBILECONFIG_NAME).content
    profile = plistlib.loads(first)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    assert profile["PayloadDisplayName"] == "NectoProxy CA"
    assert profile["PayloadIdentifier"]
    [payload] = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert payload["PayloadVersion"] == 1
    assert payload["PayloadIdentifier"].startswith(profile["PayloadIdentifier"] + ".")
    assert payload["PayloadContent"] == store.ca_cert.public_bytes(serialization.Encoding.DER)
    uuids = {uuid.UUID(profile["PayloadUUID"]), uuid.UUID(payload["PayloadUUID"])}
    assert len(uuids) == 2
    assert again == first  # stable: derived from the CA, not random per request


def test_mobileconfig_uuids_are_stable_across_restarts(
    make_proxy: Callable[..., RunningProxy],
) -> None:
    bodies = []
    for _ in range(2):
        with make_proxy() as running, running.client(trust_env=False) as client:
            bodies.append(client.get(PAGE + MOBILECONFIG_NAME).content)
    assert bodies[0] == bodies[1]


def test_head_has_headers_and_no_body(proxy: RunningProxy) -> None:
    with proxy.client(trust_env=False) as client:
        got = client.get(PAGE + DER_NAME)
        head = client.head(PAGE + DER_NAME)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == "application/x-x509-ca-cert"
    assert head.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", [
    "/ca-key.pem",
    "/../ca-key.pem",
    "/../../ca-key.pem",
    "/%2e%2e/ca-key.pem",
    "/..%2fca-key.pem",
    "//ca-key.pem",
    "/./ca-key.pem",
    "/ca.pem",
    "/certs/ca-key.pem",
    "/domain-certs/",
    "/nectoproxy-ca.pem/../ca-key.pem",
    "/nectoproxy-ca.pem/",
    "/nectoproxy-ca.pem%00",
    "/index.html",
])
def test_no_route_reaches_files(proxy: RunningProxy, path: str) -> None:
    status, headers, body = raw_request(
        proxy, f"GET http://{HOST}{path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
    assert status == 404
    assert headers["cache-control"] == "no-store"
    assert b"PRIVATE KEY" not in body and b"CERTIFICATE" not in body


def test_key_paths_404_with_curl_path_as_is(proxy: RunningProxy) -> None:
    for path in ("/ca-key.pem", "/../ca-key.pem", "/../certs/ca-key.pem"):
        result = proxy.curl("--path-as-is", "-o", "-", "-w", "%{http_code}", f"http://{HOST}{path}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith(b"404")
        assert b"PRIVATE KEY" not in result.stdout


def test_no_response_contains_the_key(proxy: RunningProxy) -> None:
    key_body = "".join(ca_of(proxy).ca_key_path.read_text().splitlines()[1:-1])
    with proxy.client(trust_env=False) as client:
        for path in ("", PEM_NAME, DER_NAME, MOBILECONFIG_NAME):
            content = client.get(PAGE + path).content
            assert key_body[:64].encode() not in content
            assert b"PRIVATE KEY" not in content


def test_other_methods_are_refused(proxy: RunningProxy) -> None:
    with proxy.client(trust_env=False) as client:
        response = client.post(PAGE + PEM_NAME, content=b"x" * 1000)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_answered_inside_a_plain_http_connect_tunnel(proxy: RunningProxy) -> None:
    # curl --proxytunnel sends CONNECT necto.setup:80, then plain HTTP inside the tunnel.
    result = proxy.curl("--proxytunnel", "--fail", f"{PAGE}{PEM_NAME}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ca_of(proxy).ca_pem()


def test_answered_for_a_direct_request_with_the_host_header(proxy: RunningProxy) -> None:
    status, _, body = raw_request(
        proxy, f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert ca_of(proxy).fingerprint().encode() in body


def test_host_name_is_configurable(make_proxy: Callable[..., RunningProxy]) -> None:
    with make_proxy(config={"proxy": {"onboarding_host": "setup.test"}}) as running, \
            running.client(trust_env=False) as client:
        response = client.get("http://setup.test/")
        pem = client.get(f"http://SETUP.test/{PEM_NAME}")
    assert response.status_code == 200
    assert ca_of(running).fingerprint() in response.text
    assert "http://setup.test/" in response.text
    assert pem.content == ca_of(running).ca_pem()


def test_plugin_can_be_disabled(make_proxy: Callable[..., RunningProxy]) -> None:
    with make_proxy() as running:
        assert "onboarding" in running.proxy.hooks.infos
        info = running.proxy.hooks.infos["onboarding"]
        assert info.source == "built-in"
        # Answered from the headers: a built-in on_request would buffer every flow's body.
        assert info.hooks == ["on_request_headers"]
    with make_proxy(config={"plugins": {"disable": ["onboarding"]}}) as running:
        assert "onboarding" not in running.proxy.hooks.infos
        assert not any(isinstance(i.plugin, Onboarding)
                       for i in running.proxy.hooks.infos.values())


# -- the hook on its own (no socket): cases that would need a real upstream through a proxy --


def _flow(url: str, method: str = "GET") -> Flow:
    return Flow(Connection(client_address=("127.0.0.1", 50000)), Request.make(method, url))


def _run_hook(plugin: Onboarding, flow: Flow) -> None:
    async def call() -> None:
        answer = plugin.on_request_headers(flow)  # (a coroutine only for the setup host)
        if answer is not None:
            await answer

    anyio.run(call)


def _plugin(certs_dir: Path) -> Onboarding:
    return Onboarding(config_from_dict({"certs": {"dir": str(certs_dir)}}))


def test_never_answers_over_https_or_for_other_hosts(shared_certs_dir: Path) -> None:
    plugin = _plugin(shared_certs_dir)
    for url in (f"https://{HOST}/", f"https://{HOST}/{PEM_NAME}", "http://example.test/",
                f"http://sub.{HOST}/", f"http://{HOST}.test/"):
        flow = _flow(url)
        _run_hook(plugin, flow)
        assert flow.response is None, url
    connect = _flow(f"http://{HOST}/", method="CONNECT")
    _run_hook(plugin, connect)
    assert connect.response is None


def test_keeps_an_answer_another_plugin_made(shared_certs_dir: Path) -> None:
    flow = _flow(PAGE)
    flow.response = Response.make(299, "mine")
    _run_hook(_plugin(shared_certs_dir), flow)
    assert flow.response.status_code == 299


def test_reads_the_ca_once(tmp_path: Path) -> None:
    source = CertStore(tmp_path / "certs")
    source.load_or_create()
    plugin = _plugin(tmp_path / "certs")
    first = _flow(PAGE + PEM_NAME)
    _run_hook(plugin, first)
    source.ca_key_path.unlink()  # a second read would now fail
    second = _flow(PAGE + PEM_NAME)
    _run_hook(plugin, second)
    assert first.response is not None and second.response is not None
    assert second.response.status_code == 200
    assert second.response.raw_content == source.ca_pem()


def test_unreadable_ca_is_a_503_not_a_forward(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text("not a certificate\n")  # a certificate without its key
    flow = _flow(PAGE)
    _run_hook(_plugin(certs), flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["cache-control"] == "no-store"
