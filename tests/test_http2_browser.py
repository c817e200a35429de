"""Chromium through the proxy to an HTTP/2 site (issue 16): Debian's chromium, driven by
Playwright, loads a page whose stylesheet, script, images and JSON come from an HTTP/2 origin
(hypercorn over trustme TLS, tests/h2site.py) through a real ``nectoproxy`` process with its
inspector. The store must have recorded every resource as an HTTP/2 flow, the origin must
have served them over HTTP/2, the page must have rendered, the inspector's list must say
``h2``, and the HAR export must say ``h2`` as Chrome's does.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from h2site import COLOURS, H2Site
from playwright import sync_api  # the [test] extra
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, Inspector, running, validate_har, wait_for

RESOURCES = ["/", "/style.css", "/app.js", "/data.json",
             *(f"/img/{name}.png" for name in COLOURS)]


@pytest.fixture(autouse=True)
def _chromium_is_required() -> None:
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need /usr/bin/chromium: apt-get install chromium")


def spki_hash(ca_pem: Path) -> str:
    """What ``--ignore-certificate-errors-spki-list`` takes: base64 of the SHA-256 of the
    certificate's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def site(origin_ca: Any, tmp_path: Path) -> Iterator[H2Site]:
    with H2Site(origin_ca, tmp_path) as served:
        yield served


@pytest.fixture
def inspector(tmp_path: Path, origin_ca_path: str) -> Iterator[Inspector]:
    home = tmp_path / "home"
    home.mkdir()
    with running(home, "--upstream-ca", origin_ca_path) as started:
        yield started


def proxied_chromium(playwright: Any, inspector: Inspector) -> Any:
    """Chromium with every request through the proxy (loopback too: ``<-loopback>`` removes
    the implicit bypass), trusting the leaves the proxy's CA signs (and nothing else)."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=[*CHROMIUM_ARGS, f"--proxy-server=http://127.0.0.1:{inspector.port}",
              "--proxy-bypass-list=<-loopback>",
              f"--ignore-certificate-errors-spki-list={spki_hash(inspector.home / 'certs' / 'ca.pem')}"])


def test_a_page_over_http2_through_the_proxy_is_recorded_as_http2(
        site: H2Site, inspector: Inspector, tmp_path: Path) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = proxied_chromium(playwright, inspector)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 420})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            answer = page.goto(site.url + "/")
            assert answer is not None and answer.status == 200
            page.wait_for_selector("body[data-loaded=yes]")
            sync_api.expect(page.locator("#data")).to_have_text("data.json arrived")
            # Every image decoded (a broken one has no natural width), the stylesheet applied.
            widths = page.locator(".tiles img").evaluate_all(
                "images => images.map((i) => i.complete && i.naturalWidth)")
            assert widths == [48] * len(COLOURS)
            assert page.locator("h1").evaluate("h => getComputedStyle(h).color") == \
                "rgb(32, 48, 96)"
            # The browser's own view: every resource came to it over HTTP/2.
            protocols = page.evaluate(
                "[...performance.getEntriesByType('navigation'),"
                " ...performance.getEntriesByType('resource')]"
                ".map((e) => [new URL(e.name).pathname, e.nextHopProtocol])")
            assert sorted(protocols) == sorted([path, "h2"] for path in RESOURCES)
            page.screenshot(path=str(tmp_path / "h2-page.png"))
        finally:
            browser.close()
    assert errors == []

    # The origin served every resource over HTTP/2 (the proxy spoke h2 to it too).
    assert {path: set(versions) for path, versions in site.versions.items()} == \
        {path: {"2"} for path in RESOURCES}
    # The store recorded every resource as an HTTP/2 flow; /api/traffic says so.
    entries = wait_for(lambda: (found := inspector.entries()) and
                       len({e["path"] for e in found} & set(RESOURCES)) == len(RESOURCES)
                       and found)
    by_path = {e["path"]: e for e in entries if e["host"] == "127.0.0.1"}
    assert set(by_path) == set(RESOURCES), entries
    for path in RESOURCES:
        assert (by_path[path]["httpVersion"], by_path[path]["status"]) == ("HTTP/2.0", 200)
        assert by_path[path]["scheme"] == "https"

    # The HAR export names the protocol as Chrome's does.
    with inspector.api() as api:
        session = api.get("/api/sessions/active").json()["id"]
        har = api.get(f"/api/har/export/{session}").json()
    validate_har(har)
    versions = {(e["request"]["url"].split(str(site.port), 1)[1],
                 e["request"]["httpVersion"], e["response"]["httpVersion"])
                for e in har["log"]["entries"] if f":{site.port}/" in e["request"]["url"]}
    assert versions == {(path, "h2", "h2") for path in RESOURCES}


def test_the_inspector_lists_http2_flows_as_h2(site: H2Site, inspector: Inspector) -> None:
    """A flow made over HTTP/2 (Chromium, through the proxy) shows ``h2`` in the list's
    protocol column and ``HTTP/2`` in its detail."""
    with sync_api.sync_playwright() as playwright:
        proxied = proxied_chromium(playwright, inspector)
        try:
            page = proxied.new_page()
            page.goto(site.url + "/")
            page.wait_for_selector("body[data-loaded=yes]")
        finally:
            proxied.close()
        wait_for(lambda: any(e["path"] == "/data.json" for e in inspector.entries()))
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 860})
            page.goto(inspector.url)
            page.wait_for_selector("[data-testid=list-body]")
            row = page.locator("[data-testid=list-body] .row", has_text="/data.json")
            sync_api.expect(row.locator(".c-proto")).to_have_text("TLS h2")
            row.click()
            sync_api.expect(page.get_by_text("HTTP/2", exact=False).first).to_be_visible()
        finally:
            browser.close()

