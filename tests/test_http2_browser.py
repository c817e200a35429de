"""Chromium through the proxy to an HTTP/2 site (issue 16): Debian's chromium, driven by
Playwright, loads a page whose stylesheet, script, images and JSON come from an HTTP/2 origin
(hypercorn over trustme TLS, tests/h2site.py) through a real ``nectoproxy`` process with its
inspector. The store must have recorded every resource as an HTTP/2 flow, the origin must
have served them over HTTP/2, the page must have rendered, the inspector's list must say
``h2``, and the HAR export must say ``h2`` as Chrome's does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from h2site import COLOURS, H2Site
from playwright import sync_api  # the [test] extra
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, Inspector, running, validate_har, wait_for

RESOURCES = ["/", "/style.css", "/app.js", "/data.json",
             *(f"/img/{name}.png" for name in COLOURS)]


@pytest.fixture(autouse=True)
def _chromium_is_required() -> None:
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need /usr/bin/chromium: apt-get install chromium")


def browser_home(inspector: Inspector) -> Path:
    """A home directory for Chromium whose NSS database trusts the proxy's CA, put there by
    ``nectoproxy cert install`` as a user would (certutil, from libnss3-tools)."""
    home = inspector.home.parent / "chromium-home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    installed = subprocess.run(
        [sys.executable, "-m", "nectoproxy", "cert", "install", "--no-system", "--nssdb",
         str(nssdb)], env={**os.environ, "NECTOPROXY_HOME": str(inspector.home)},
        capture_output=True, text=True, timeout=60, check=False)
    assert installed.returncode == 0, installed.stderr
    return home


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
    the implicit bypass), trusting the proxy's CA (and no certificate error ignored)."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        env={**os.environ, "HOME": str(browser_home(inspector))},
        args=[*CHROMIUM_ARGS, f"--proxy-server=http://127.0.0.1:{inspector.port}",
              "--proxy-bypass-list=<-loopback>"])


def test_a_page_over_http2_through_the_proxy_is_recorded_as_http2(
        site: H2Site, inspector: Inspector, tmp_path: Path) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = proxied_chromium(playwright, inspector)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 420})
            page.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
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
            assert {path for path, _ in protocols} >= set(RESOURCES), protocols
            assert {protocol for _, protocol in protocols} == {"h2"}, protocols
            page.screenshot(path=str(tmp_path / "h2-page.png"))
        finally:
            browser.close()
    assert errors == []

    # The origin served every resource over HTTP/2 (the proxy spoke h2 to it too).
    assert set(site.versions) >= set(RESOURCES)
    assert {v for versions in site.versions.values() for v in versions} == {"2"}, site.versions
    # The store recorded every resource as an HTTP/2 flow; /api/traffic says so.
    entries = wait_for(lambda: (found := inspector.entries()) and
                       len({e["path"] for e in found} & set(RESOURCES)) == len(RESOURCES)
                       and found)
    by_path = {e["path"]: e for e in entries if e["host"] == "127.0.0.1"}
    assert set(by_path) >= set(RESOURCES), entries
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
    assert {path for path, _, _ in versions} >= set(RESOURCES)
    assert {(request, response) for _, request, response in versions} == {("h2", "h2")}


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
            sync_api.expect(page.get_by_test_id("request-version")).to_contain_text("HTTP/2 ·")
        finally:
            browser.close()

