"""The web UI in a real browser: Debian's chromium driven by Playwright, against a real
``nectoproxy`` process (its own home, a free port for the proxy and the inspector) and the
local origins of ``nectoproxy.testing``. Every page fails its test on a console error.

The screenshots in docs/images/ (used by docs/inspector.md) are taken here.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from playwright import sync_api  # the [test] extra
from test_live_settings import config_text

from nectoproxy.store import CaptureWriter, FlowRecord, SQLiteStore, new_flow_id
from nectoproxy.testing.command import NectoProxyCommand, run_nectoproxy
from nectoproxy.testing.origin import free_port, pattern_sha256

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
HAR_SCHEMA = ROOT / "plugins" / "nectoproxy-plugin-har" / "tests" / "har-1.2.schema.json"


@pytest.fixture(autouse=True)
def _chromium_is_required() -> None:
    """Debian's chromium is a system tool the suite needs, like curl (the README lists them;
    .ci/run installs it): without it these tests fail, they are not skipped."""
    if not CHROMIUM.exists():
        pytest.fail("the web UI's browser tests need /usr/bin/chromium: apt-get install chromium")

Page = Any  # playwright.sync_api.Page


# -- the proxy --------------------------------------------------------------------------------


class Inspector:
    """A running ``nectoproxy``: its proxy port, the UI's URL, API and proxied clients."""

    def __init__(self, home: Path, command: NectoProxyCommand) -> None:
        self.home = home
        self.command = command
        self.port = command.port
        self.url = command.inspector_url
        self.web_port = command.web_port
        self.token = command.token

    def api(self) -> httpx.Client:
        return self.command.api()

    def client(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.home / "certs" / "ca.pem"))
        return self.command.client(verify=verify)

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """curl through the proxy (a new client, a new connection, each time)."""
        return subprocess.run(["curl", "-sS", "--noproxy", "", "--proxy",
                               f"http://127.0.0.1:{self.port}", *args],
                              capture_output=True, text=True, timeout=30, check=False)

    def entries(self, **params: Any) -> list[dict[str, Any]]:
        with self.api() as api:
            answer = api.get("/api/traffic", params={"limit": 1000, **params})
            answer.raise_for_status()
            entries: list[dict[str, Any]] = answer.json()["entries"]
            return entries


@contextmanager
def running(home: Path, *args: str, config: str | None = None) -> Iterator[Inspector]:
    """``config``: the text of a nectoproxy.toml to run with (written into ``home``); without
    one, no configuration file and no plugins of entry points."""
    if config is None:
        configuration = ["--no-config", "--no-entry-points"]
    else:
        (home / "nectoproxy.toml").write_text(config, encoding="utf-8")
        configuration = ["--config", str(home / "nectoproxy.toml")]
    with run_nectoproxy(*configuration, "-q", "--listen-host", "127.0.0.1",
                        "--listen-port", str(free_port()), "--web-port", "0", *args,
                        home=home) as command:
        assert command.web_port, command.output()
        yield Inspector(home, command)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


class Pages:
    """Opens the UI in new pages; each page's console errors fail the test (except those a
    test expects, in ``allowed``)."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def open(self, inspector: Inspector, width: int = 1440, height: int = 860) -> Page:
        context = self.browser.new_context(viewport={"width": width, "height": height},
                                           accept_downloads=True, color_scheme="light")
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.goto(inspector.url)
        assert "token=" not in page.url  # the server set the cookie and redirected
        page.wait_for_selector("[data-testid=list-body]")
        # (expect, not wait_for_function: that evals in the page, which its CSP forbids)
        sync_api.expect(page.get_by_test_id("statusbar")).to_contain_text("live")
        return page

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
        assert opened.unexpected() == [], "console errors"
    finally:
        opened.close()


def rows(page: Page) -> Any:
    return page.locator("[data-testid=list-body] .row:not(.placeholder)")


def row_with(page: Page, text: str) -> Any:
    return page.locator("[data-testid=list-body] .row", has_text=text)


def shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name))


def validate_har(document: dict[str, Any]) -> None:
    schema = json.loads(HAR_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(document)


# -- the tests --------------------------------------------------------------------------------


def test_flows_before_and_after_opening_appear_live(tmp_path: Path, pages: Pages,
                                                    origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        assert client.get(origin.url + "/json").status_code == 200
        wait_for(lambda: inspector.entries())
        page = pages.open(inspector)
        sync_api.expect(row_with(page, "/json")).to_be_visible()
        sync_api.expect(row_with(page, "/json").locator(".c-status")).to_have_text("200")
        assert client.get(origin.url + "/html").status_code == 200
        started = time.monotonic()
        sync_api.expect(row_with(page, "/html")).to_be_visible(timeout=2000)
        assert time.monotonic() - started < 2.0
        for path in ("/status/404", "/status/500", "/bytes/20000", "/gzip-text",
                     "/headers?x-a=1", "/status/302", "/echo?q=search"):
            client.get(origin.url + path)
        client.post(origin.url + "/upload", content=b'{"name": "new"}',
                    headers={"Content-Type": "application/json"})
        sync_api.expect(rows(page)).to_have_count(10)
        sync_api.expect(row_with(page, "/status/404").locator(".c-status")).to_have_class(
            re.compile("s-4xx"))
        sync_api.expect(row_with(page, "/status/500").locator(".c-status")).to_have_class(
            re.compile("s-5xx"))
        # keyboard: k moves up from the newest, ? lists the shortcuts, Esc closes
        page.keyboard.press("k")
        sync_api.expect(page.locator(".row.selected")).to_have_count(1)
        page.keyboard.press("?")
        sync_api.expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
        page.keyboard.press("Escape")
        sync_api.expect(page.get_by_role("dialog")).to_have_count(0)
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Filter"
        page.keyboard.press("Escape")
        # the status bar: the store's count (polled), flows a second (from the events)
        status = page.get_by_test_id("statusbar")
        sync_api.expect(status).to_contain_text("10 stored")
        sync_api.expect(status).to_contain_text("capturing")
        sync_api.expect(page.get_by_test_id("rate")).not_to_have_text("0.0 flows/s")
        sync_api.expect(status.get_by_role("link", name=re.compile("CA certificate"))
                        ).to_have_attribute("href", "http://necto.setup/")
        shot(page, "ui-list.png")


def test_an_https_flow_shows_its_response_body(tmp_path: Path, pages: Pages, tls_origin: Any,
                                               origin_ca_path: str) -> None:
    with running(tmp_path, "--upstream-ca", origin_ca_path) as inspector, \
            inspector.client() as client:
        assert client.get(tls_origin.url + "/json?user=ann&page=2",
                          headers={"Cookie": "session=abc; theme=dark"}).json()["hello"] == "world"
        wait_for(lambda: [e for e in inspector.entries() if e["status"]])
        page = pages.open(inspector)
        row_with(page, "/json").click()
        detail = page.get_by_test_id("detail")
        body = detail.get_by_test_id("response-body")
        sync_api.expect(body).to_contain_text('"hello": "world"')
        sync_api.expect(detail).to_contain_text("TLS with the origin")
        sync_api.expect(detail.locator("details", has_text="Query (2)")).to_contain_text("ann")
        sync_api.expect(detail.locator("details", has_text="Cookies (2)")).to_contain_text("dark")
        body.get_by_role("button", name="tree").click()
        sync_api.expect(body.locator(".json-tree")).to_contain_text("hello")
        body.get_by_role("button", name="pretty").click()
        shot(page, "ui-detail.png")
        columns = "getComputedStyle(document.querySelector('.sides')).gridTemplateColumns"
        assert len(page.evaluate(columns).split()) == 2  # side by side
        page.set_viewport_size({"width": 900, "height": 800})
        sync_api.expect(body).to_contain_text('"hello": "world"')
        assert len(page.evaluate(columns).split()) == 1  # stacked on a narrow window
        page.keyboard.press("Escape")
        sync_api.expect(page.get_by_test_id("detail")).to_have_count(0)


def test_a_large_body_pages_in(tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        assert len(client.get(origin.url + "/bytes/3000000").content) == 3_000_000
        wait_for(lambda: [e for e in inspector.entries() if e["status"]])
        page = pages.open(inspector)
        row_with(page, "/bytes/3000000").click()
        body = page.get_by_test_id("response-body")
        more = body.get_by_role("button", name=re.compile("Load more"))
        sync_api.expect(more).to_contain_text("the first 256 KiB of 2.86 MiB")
        more.click()
        sync_api.expect(more).to_contain_text("the first 1 MiB of 2.86 MiB")
        more.click()
        sync_api.expect(body).to_contain_text("Download has it all")
        # the hex view of its first 512 KiB is 32,768 lines: only those in view are drawn
        sync_api.expect(body.locator(".code-line").first).to_contain_text("00000000  ")
        assert 10 < body.locator(".code-line").count() < 200
        body.locator(".code").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        sync_api.expect(body.locator(".code-line").last).to_contain_text("0007fff0  ")
        sync_api.expect(body.get_by_role("link", name="Download")).to_have_attribute(
            "href", re.compile(r"/response/body$"))


def test_a_filter_narrows_the_list_and_a_bad_one_shows_its_error(
        tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        for path in ("/json", "/html", "/status/404", "/status/404?again=1"):
            client.get(origin.url + path)
        wait_for(lambda: len(inspector.entries()) == 4)
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(4)
        search = page.get_by_label("Filter")
        search.fill("status:404")
        search.press("Enter")
        sync_api.expect(rows(page)).to_have_count(2)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("2 in the list")
        # a flow that matches arrives live; one that does not, does not show
        client.get(origin.url + "/status/404?live=1")
        client.get(origin.url + "/json?live=1")
        sync_api.expect(rows(page)).to_have_count(3)
        page.wait_for_timeout(500)
        sync_api.expect(rows(page)).to_have_count(3)
        pages.allowed.append(re.compile(r"status of 400"))  # the API's answer to a bad filter
        search.fill("host:127.0.0.1 status:4x4")
        search.press("Enter")
        alert = page.get_by_role("alert")
        sync_api.expect(alert).to_contain_text("invalid status '4x4'")
        sync_api.expect(page.get_by_test_id("filter-error-at")).to_have_text("4x4")
        # remembered: the page opened again starts with the last filter
        search.fill("status:200")
        search.press("Enter")
        sync_api.expect(rows(page)).to_have_count(3)  # /json, /html, /json?live=1
        page.reload()
        sync_api.expect(page.get_by_label("Filter")).to_have_value("status:200")
        sync_api.expect(rows(page)).to_have_count(3)
        page.get_by_label("Search").fill("live=1")
        page.get_by_label("Search").press("Enter")
        sync_api.expect(rows(page)).to_have_count(1)
        sync_api.expect(row_with(page, "/json?live=1")).to_be_visible()


def test_replay_and_edit_and_replay_make_new_flows(tmp_path: Path, pages: Pages,
                                                   origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.post(origin.url + "/echo?first=1", content=b"original",
                    headers={"Content-Type": "text/plain"})
        wait_for(lambda: [e for e in inspector.entries() if e["status"]])
        page = pages.open(inspector)
        row_with(page, "/echo").click()
        detail = page.get_by_test_id("detail")
        detail.get_by_role("button", name="Replay", exact=True).click()
        sync_api.expect(rows(page)).to_have_count(2)
        sync_api.expect(page.get_by_role("status")).to_contain_text("Replayed: 200")
        detail.get_by_role("button", name="Edit & replay").click()
        dialog = page.get_by_role("dialog", name="Edit and replay")
        sync_api.expect(dialog.get_by_label("Body")).to_have_value("original")
        dialog.get_by_label("URL").fill(origin.url + "/echo?edited=1")
        dialog.get_by_label("Method").fill("PUT")
        dialog.get_by_label("Body").fill("changed body")
        dialog.get_by_role("button", name="Send").click()
        sync_api.expect(dialog).to_have_count(0)
        sync_api.expect(rows(page)).to_have_count(3)
        sync_api.expect(row_with(page, "edited=1").locator(".c-method")).to_have_text("PUT")
        with inspector.api() as api:
            records = [api.get(f"/api/traffic/{e['id']}").json() for e in inspector.entries()]
        original = [r for r in records if r["replayOf"] is None]
        assert len(original) == 1 and "first=1" in original[0]["url"]
        assert [r["replayOf"] for r in records if r["replayOf"]] == [original[0]["id"]] * 2
        assert origin.requests[-1].body == b"changed body"
        assert origin.requests[-1].method == "PUT"
        # copy as curl: the export in a dialog
        row_with(page, "edited=1").click()
        detail.get_by_role("button", name="curl").click()
        sync_api.expect(page.get_by_test_id("export-text")).to_have_value(
            re.compile(r"^curl .*edited=1.*changed body", re.DOTALL))


def test_compose_sends_a_new_request_that_appears_selected(tmp_path: Path, pages: Pages,
                                                           origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.get(origin.url + "/json")
        wait_for(lambda: [e for e in inspector.entries() if e["status"]])
        page = pages.open(inspector)
        page.keyboard.press("?")
        help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
        sync_api.expect(help_dialog.locator("tr", has_text="compose a new request")
                        ).to_contain_text("n")
        page.keyboard.press("Escape")
        page.keyboard.press("n")
        dialog = page.get_by_role("dialog", name="Compose a request")
        dialog.get_by_label("Method").fill("post")
        dialog.get_by_label("URL").fill(origin.url + "/echo?composed=1")
        dialog.get_by_label("Header name 1").fill("X-Composed")
        dialog.get_by_label("Header value 1").fill("yes")
        dialog.get_by_role("button", name="Add header").click()
        dialog.get_by_label("Header name 2").fill("Content-Type")
        dialog.get_by_label("Header value 2").fill("text/plain")
        dialog.get_by_role("button", name="Add header").click()
        dialog.get_by_label("Header name 3").evaluate("""(el) => {
            const data = new DataTransfer();
            data.setData("text", "X-Pasted-A: 1\\nX-Pasted-B:  two\\n");
            el.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
                                                          cancelable: true}));
        }""")  # lines pasted into an empty row: a row each
        sync_api.expect(dialog.get_by_label("Header name 4")).to_have_value("X-Pasted-B")
        sync_api.expect(dialog.get_by_label("Header value 4")).to_have_value("two")
        dialog.get_by_role("button", name="Add header").click()
        dialog.get_by_label("Header name 5").fill("X-Dropped")
        dialog.get_by_role("button", name="Remove header 5").click()
        dialog.get_by_label("Body").fill("hello from compose")
        dialog.get_by_role("button", name="Send").click()
        sync_api.expect(dialog).to_have_count(0)
        sync_api.expect(page.get_by_role("status")).to_contain_text("Sent: 200")
        arrived = origin.requests[-1]
        assert (arrived.method, arrived.path) == ("POST", "/echo?composed=1")
        assert arrived.body == b"hello from compose" and arrived.header("X-Composed") == "yes"
        assert arrived.header("X-Dropped") is None
        assert (arrived.header("X-Pasted-A"), arrived.header("X-Pasted-B")) == ("1", "two")
        # the new flow is in the list, selected, and its detail is open
        sync_api.expect(row_with(page, "composed=1")).to_have_class(re.compile("selected"))
        detail = page.get_by_test_id("detail")
        sync_api.expect(detail.locator(".detail-title .url")).to_contain_text("composed=1")
        # compose from this flow: the editor starts from it; the new flow replays nothing
        detail.get_by_role("button", name="Compose from this").click()
        dialog = page.get_by_role("dialog", name="Compose a request")
        sync_api.expect(dialog.get_by_label("Body")).to_have_value("hello from compose")
        sync_api.expect(dialog.get_by_label("Method")).to_have_value("POST")
        dialog.get_by_label("URL").fill(origin.url + "/echo?composed=2")
        dialog.get_by_role("button", name="Send").click()
        sync_api.expect(row_with(page, "composed=2")).to_have_class(re.compile("selected"))
        assert origin.requests[-1].header("X-Composed") == "yes"
        # a URL the API refuses: its message in the editor, which stays open
        pages.allowed.append(re.compile(r"status of 400"))
        page.locator(".toolbar").get_by_role("button", name="Compose").click()
        dialog = page.get_by_role("dialog", name="Compose a request")
        dialog.get_by_label("URL").fill("ftp://nowhere.test/")
        dialog.get_by_role("button", name="Send").click()
        sync_api.expect(dialog.get_by_role("alert")).to_contain_text("http:// or https://")
        with inspector.api() as api:
            records = [api.get(f"/api/traffic/{e['id']}").json() for e in inspector.entries()]
        assert [r["replayOf"] for r in records] == [None, None, None]
        assert sorted(r["url"].rsplit("/", 1)[1] for r in records) == [
            "echo?composed=1", "echo?composed=2", "json"]


def test_compare_shows_a_changed_header_and_body_line(tmp_path: Path, pages: Pages,
                                                       origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        for variant in ("a", "b"):
            client.post(origin.url + f"/echo?v={variant}", headers={
                "X-Variant": variant, "Content-Type": "text/plain"},
                content=f"first line\nsame line\nvariant {variant}\nlast line\n".encode())
        for path in ("/bytes/5000", "/bytes/5000?seed=1"):
            client.get(origin.url + path)
        wait_for(lambda: len([e for e in inspector.entries() if e["status"]]) == 4)
        page = pages.open(inspector)
        row_with(page, "/echo?v=a").click()
        sync_api.expect(page.get_by_role("button", name="Compare")).to_have_count(0)
        row_with(page, "/echo?v=b").click(modifiers=["Control"])
        page.get_by_role("button", name="Compare").click()
        dialog = page.get_by_role("dialog", name="Compare flows")
        head = dialog.get_by_test_id("compare-request-head")
        sync_api.expect(head.locator(".d-del")).to_contain_text(["X-Variant: a"])
        sync_api.expect(head.locator(".d-add")).to_contain_text(["X-Variant: b"])
        body = dialog.get_by_test_id("compare-request-body")
        sync_api.expect(body.locator(".d-del")).to_have_text(["variant a"])
        sync_api.expect(body.locator(".d-add")).to_have_text(["variant b"])
        sync_api.expect(body).to_contain_text("2 lines removed or added")
        # the origin's echo is JSON: compared pretty, keys sorted; its sha256 line differs
        response = dialog.get_by_test_id("compare-response-body")
        sync_api.expect(response).to_contain_text("JSON, pretty-printed with keys sorted")
        sync_api.expect(response.locator(".d-del", has_text='"body_sha256"')).to_have_count(1)
        shot(page, "ui-compare.png")
        dialog.get_by_role("button", name="Unified").click()
        unified = body.locator("tr.d-del, tr.d-add")
        sync_api.expect(unified.locator(".d-sign")).to_have_text(["-", "+"])
        sync_api.expect(unified.locator("td:last-child")).to_have_text(["variant a", "variant b"])
        page.keyboard.press("Escape")
        # binary bodies: by size and sha256
        row_with(page, "/bytes/5000?seed=1").click()
        row_with(page, "/bytes/5000").filter(has_not_text="seed").click(modifiers=["Control"])
        page.get_by_role("button", name="Compare").click()
        binary = page.get_by_role("dialog", name="Compare flows").get_by_test_id(
            "compare-response-body")
        sync_api.expect(binary).to_contain_text("Binary bodies differ")
        sync_api.expect(binary).to_contain_text(f"sha256 {pattern_sha256(5000)}")
        sync_api.expect(binary).to_contain_text(f"sha256 {pattern_sha256(5000, seed=1)}")


def test_copy_as_httpie_shows_the_command(tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.post(origin.url + "/echo?q=1", content=b"-a body", headers={"X-It": "=x"})
        wait_for(lambda: [e for e in inspector.entries() if e["status"]])
        page = pages.open(inspector)
        row_with(page, "/echo").click()
        page.get_by_test_id("detail").get_by_role("button", name="HTTPie").click()
        sync_api.expect(page.get_by_role("dialog", name="Copy as httpie")).to_be_visible()
        text = page.get_by_test_id("export-text")
        sync_api.expect(text).to_have_value(re.compile(
            rf"^http --ignore-stdin POST '{re.escape(origin.url)}/echo\?q=1' \\\n"))
        sync_api.expect(text).to_have_value(re.compile(r"'X-It:\\=x' \\\n"))
        sync_api.expect(text).to_have_value(re.compile(r"  Content-Type: \\\n  --raw='-a body'\n$"))


def test_mark_tag_comment_and_quick_filters(tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.get(origin.url + "/json")
        client.get(origin.url + "/status/404")
        wait_for(lambda: len([e for e in inspector.entries() if e["status"]]) == 2)
        page = pages.open(inspector)
        row_with(page, "/json").click()
        detail = page.get_by_test_id("detail")
        detail.get_by_title("mark green").click()
        sync_api.expect(row_with(page, "/json")).to_have_class(re.compile("mark-green"))
        detail.get_by_label("Tags").fill("login, slow")
        detail.get_by_label("Tags").press("Enter")
        detail.get_by_label("Comment").fill("the first one")
        detail.get_by_label("Comment").press("Enter")
        wait_for(lambda: inspector.entries(filter="tag:slow comment:first"))
        [flow] = inspector.entries(filter="mark:green")
        assert flow["tags"] == ["login", "slow"] and flow["comment"] == "the first one"
        page.keyboard.press("Escape")  # the detail closes; m clears the focused flow's mark
        page.keyboard.press("m")
        sync_api.expect(row_with(page, "/json")).not_to_have_class(re.compile("mark-"))
        page.keyboard.press("m")  # and marks an unmarked one red
        sync_api.expect(row_with(page, "/json")).to_have_class(re.compile("mark-red"))
        # quick filters: Alt+click a status in the list, click the host in the detail
        row_with(page, "/status/404").locator(".c-status").click(modifiers=["Alt"])
        sync_api.expect(page.get_by_label("Filter")).to_have_value("status:404")
        sync_api.expect(rows(page)).to_have_count(1)
        row_with(page, "/status/404").click()
        page.get_by_test_id("detail").get_by_title("Filter by this host").click()
        sync_api.expect(page.get_by_label("Filter")).to_have_value("status:404 host:127.0.0.1")
        sync_api.expect(rows(page)).to_have_count(1)
        # the dark theme, chosen in the status bar, stays chosen
        page.get_by_label("Theme").select_option("dark")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        page.reload()
        sync_api.expect(page.get_by_label("Theme")).to_have_value("dark")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(23, 25, 29)"


def test_har_export_validates_and_an_import_shows_its_entries(tmp_path: Path, pages: Pages,
                                                              origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        for path in ("/json", "/html", "/status/404"):
            client.get(origin.url + path)
        wait_for(lambda: len([e for e in inspector.entries() if e["status"]]) == 3)
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(3)
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Export HAR").click()
        document = json.loads(Path(download_info.value.path()).read_text())
        validate_har(document)
        assert sorted(e["request"]["url"].rsplit("/", 1)[1] for e in document["log"]["entries"]) \
            == ["404", "html", "json"]
        # the selection: click one, shift+click another
        row_with(page, "/json").click()
        row_with(page, "/status/404").click(modifiers=["Shift"])
        sync_api.expect(page.locator(".row.selected")).to_have_count(3)
        row_with(page, "/html").click(modifiers=["Control"])
        with page.expect_download() as selection_info:
            page.get_by_role("button", name="HAR of 2 selected").click()
        selection = json.loads(Path(selection_info.value.path()).read_text())
        validate_har(selection)
        assert len(selection["log"]["entries"]) == 2
        # import by drag and drop: a new session, shown with its entries
        page.evaluate("""(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "recorded.har", {type: "application/json"}));
            window.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
            window.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""", json.dumps(document))
        sync_api.expect(page.get_by_role("status")).to_contain_text("Imported recorded.har")
        sync_api.expect(page.get_by_role("button", name=re.compile("Imported recorded.har"))
                        ).to_be_visible()
        sync_api.expect(rows(page)).to_have_count(3)
        with inspector.api() as api:
            sessions = api.get("/api/sessions").json()["sessions"]
        imported = next(s for s in sessions if s["name"] == "Imported recorded.har")
        assert imported["flowCount"] == 3 and not imported["active"]


def test_sessions_create_switch_rename_delete(tmp_path: Path, pages: Pages,
                                              origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.get(origin.url + "/json")
        wait_for(lambda: inspector.entries())
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(1)
        page.locator(".toolbar").get_by_role("button", name=re.compile("^Run ")).click()
        panel = page.get_by_test_id("sessions")
        sync_api.expect(panel.locator("li")).to_have_count(1)
        sync_api.expect(panel.locator("li").first).to_contain_text("1 flow")
        panel.get_by_label("New session name").fill("checkout bug")
        panel.get_by_role("button", name="Create").click()
        sync_api.expect(panel.locator("li")).to_have_count(2)
        sync_api.expect(rows(page)).to_have_count(0)  # the new session is shown, and empty
        client.get(origin.url + "/html")  # it is active: new flows go to it
        sync_api.expect(row_with(page, "/html")).to_be_visible()
        first = panel.locator("li", has_text="Run ")
        first.get_by_role("button", name=re.compile("^Run ")).click()
        sync_api.expect(rows(page)).to_have_count(1)
        sync_api.expect(row_with(page, "/json")).to_be_visible()
        first.get_by_role("button", name="Rename").click()
        panel.get_by_label("Session name", exact=True).fill("first run")
        panel.get_by_label("Session name", exact=True).press("Enter")
        sync_api.expect(panel.locator("li", has_text="first run")).to_have_count(1)
        panel.locator("li", has_text="first run").get_by_role("button", name="Activate").click()
        sync_api.expect(panel.locator("li", has_text="first run")).to_contain_text("active")
        shot(page, "ui-sessions.png")
        page.once("dialog", lambda d: d.accept())
        panel.locator("li", has_text="checkout bug").get_by_role("button", name="Delete").click()
        sync_api.expect(panel.locator("li")).to_have_count(1)
        with inspector.api() as api:
            sessions = api.get("/api/sessions").json()["sessions"]
        assert [(s["name"], s["active"]) for s in sessions] == [("first run", True)]


def _fill(path: Path, count: int) -> int:
    with SQLiteStore(path) as store:
        session = store.start_run()
        now = time.time() - count / 100
        for n in range(count):
            store.save_flow(FlowRecord(
                id=new_flow_id(), session_id=session.id, method="GET",
                url=f"http://many.test/item/{n}", host="many.test", path=f"/item/{n}",
                started_at=now + n / 100, status=200 if n % 10 else 404, duration=1.5,
                content_type="application/json", response_size=100 + n % 1000))
        return session.id


@pytest.mark.timeout(600)
def test_a_session_of_100000_flows_opens_and_scrolls_to_the_end(tmp_path: Path,
                                                                 pages: Pages) -> None:
    session_id = _fill(tmp_path / "flows.db", 100_000)
    with running(tmp_path, "--session", str(session_id)) as inspector:
        page = pages.open(inspector)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("100,000 in the list")
        # it opens at the newest flow (following), then goes to the oldest and back
        sync_api.expect(row_with(page, "/item/99999")).to_be_visible()
        page.keyboard.press("Home")
        sync_api.expect(row_with(page, "/item/0").first).to_be_visible()
        focused = page.locator("[data-testid=list-body] .row.focused .c-num")
        sync_api.expect(focused).to_have_text("1")
        # drag the scroll position to the middle (once the jump to the top has settled: the
        # virtualizer corrects its position for a few frames), and page through from there
        page.wait_for_timeout(500)
        page.get_by_test_id("list-body").evaluate(
            "el => { el.scrollTop = el.scrollHeight / 2; }")
        sync_api.expect(page.locator("[data-testid=list-body] .row.placeholder")).to_have_count(0)
        middle = int(rows(page).nth(10).locator(".c-num").inner_text())
        assert 45_000 < middle < 55_000
        assert rows(page).nth(10).locator(".c-path").inner_text() == f"/item/{middle - 1}"
        for _ in range(5):
            page.get_by_test_id("list-body").evaluate("el => { el.scrollTop += 3000; }")
            sync_api.expect(page.locator("[data-testid=list-body] .row.placeholder")
                            ).to_have_count(0)
        page.keyboard.press("End")
        sync_api.expect(focused).to_have_text("100000")
        sync_api.expect(row_with(page, "/item/99999")).to_be_visible()
        loaded = int(re.sub(r"\D", "", page.get_by_test_id("loaded").inner_text()))
        assert loaded < 20_000  # paged in, never the whole session
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
        print(f"JS heap after scrolling 100,000 flows: {heap / 1e6:.1f} MB, {loaded} rows held")


LATENCY_PROBE = """() => {
  window.__latencies = [];
  window.__frames = [];
  document.addEventListener("keydown", (e) => {
    if (e.key === "x") window.__latencies.push(performance.now() - e.timeStamp);
  }, true);
  let last = performance.now();
  const frame = (now) => {
    window.__frames.push(now - last); last = now; requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


@pytest.mark.timeout(300)
def test_2000_flows_a_second_keep_the_page_responsive(tmp_path: Path, pages: Pages) -> None:
    with running(tmp_path) as inspector:
        page = pages.open(inspector)
        page.evaluate(LATENCY_PROBE)
        writer = CaptureWriter(tmp_path / "flows.db")
        stop = threading.Event()
        written = [0]

        def flood() -> None:
            rate, total = 2000, 10_000  # five seconds
            start = time.monotonic()
            while not stop.is_set() and written[0] < total:
                due = int((time.monotonic() - start) * rate) - written[0]
                for _ in range(min(due, 400, total - written[0])):
                    n = written[0]
                    flow_id = new_flow_id()
                    writer.flow_started(FlowRecord(
                        id=flow_id, method="GET", url=f"http://fast.test/{n}", host="fast.test",
                        path=f"/{n}", started_at=time.time()))
                    writer.flow_finished(flow_id, {"status": 200, "duration": 2.0,
                                                   "response_size": 512})
                    written[0] += 1
                time.sleep(0.01)

        thread = threading.Thread(target=flood)
        started = time.monotonic()
        thread.start()
        try:
            while thread.is_alive():
                page.keyboard.press("x")  # no shortcut: only the latency probe sees it
                page.wait_for_timeout(100)
        finally:
            stop.set()
            thread.join()
            writer.close()
        elapsed = time.monotonic() - started
        assert written[0] == 10_000 and elapsed < 8, (written[0], elapsed)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("10,000 in the list",
                                                                    timeout=10_000)
        sync_api.expect(row_with(page, "fast.test/9999")).to_be_visible()
        latencies = page.evaluate("window.__latencies")
        frames = page.evaluate("window.__frames")
        print(f"input latency: max {max(latencies):.0f} ms over {len(latencies)} keys; "
              f"longest frame {max(frames):.0f} ms")
        assert len(latencies) >= 20
        assert max(latencies) < 500, latencies
        assert sorted(latencies)[len(latencies) // 2] < 100, latencies
        assert max(frames) < 1000, "the page froze"


# -- live configuration: rules, network profile, pass-through hosts -----------------------------

#: How long a change made in the UI may take to apply to the next request (the API answers at
#: once; the UI waits for that answer first).
APPLIED_WITHIN = 2.0


def curl_answers(inspector: Inspector, url: str, text: str,
                 within: float = APPLIED_WITHIN) -> float:
    """Seconds until curl through the proxy is answered with ``text``; fails after ``within``."""
    started = time.monotonic()
    while True:
        result = inspector.curl(url)
        if result.stdout == text:
            return time.monotonic() - started
        assert time.monotonic() - started < within, (
            f"not answered with {text!r} within {within} s: {result.stdout!r} {result.stderr}")
        time.sleep(0.05)


def open_rules(page: Page) -> Any:
    page.keyboard.press("Shift+R")
    panel = page.get_by_test_id("rules-panel")
    sync_api.expect(panel).to_be_visible()
    return panel


def new_mock(page: Page, name: str, url: str, body: str, status: str = "") -> None:
    panel = page.get_by_test_id("rules-panel")
    panel.get_by_role("button", name="New rule").click()
    editor = page.get_by_test_id("rule-editor")
    editor.get_by_label("Name", exact=True).fill(name)
    editor.get_by_label("URL", exact=True).fill(url)
    editor.get_by_label("Kind").select_option("mock")
    if status:
        editor.get_by_label("Status").fill(status)
    editor.get_by_label("Response body").fill(body)
    editor.get_by_role("button", name="Create").click()


def rule_item(page: Page, name: str) -> Any:
    return page.get_by_test_id("rules").locator(f'li[data-rule="{name}"]')


def test_a_mock_rule_made_in_the_ui_answers_then_survives_a_restart_and_switches_off(
        tmp_path: Path, pages: Pages, origin: Any) -> None:
    url = origin.url + "/json"
    config = config_text(throttle=False)
    with running(tmp_path, config=config) as inspector:
        assert json.loads(inspector.curl(url).stdout) == {"hello": "world", "n": 1}
        page = pages.open(inspector)
        open_rules(page)
        sync_api.expect(page.get_by_test_id("rules-panel")).to_contain_text("No rules yet")
        new_mock(page, "hello from the UI", origin.url + "/js*", "mocked in the UI\n", "203")
        sync_api.expect(page.get_by_test_id("rule-editor")).to_have_count(0)
        took = curl_answers(inspector, url, "mocked in the UI\n")
        assert "203" in inspector.curl("-o", "/dev/null", "-w", "%{http_code}", url).stdout
        item = rule_item(page, "hello from the UI")
        sync_api.expect(item).to_contain_text("Mock")
        sync_api.expect(item).to_contain_text(origin.url + "/js*")
        with inspector.api() as api:
            [rule] = api.get("/api/rules").json()["rules"]
        assert rule["mock"] == {"status": 203, "body": "mocked in the UI\n"}
        page.close()  # before the proxy stops: its event socket would retry, as a console error
    print(f"a mock rule made in the UI answered curl after {took:.2f} s")
    with running(tmp_path, config=config) as again:
        assert again.curl(url).stdout == "mocked in the UI\n"  # kept in rules.toml
        page = pages.open(again)
        open_rules(page)
        item = rule_item(page, "hello from the UI")
        switch = item.get_by_role("switch", name="Enabled: hello from the UI")
        sync_api.expect(switch).to_be_checked()
        switch.click()
        sync_api.expect(switch).not_to_be_checked()
        sync_api.expect(item).to_have_class(re.compile("disabled"))
        curl_answers(again, url, json.dumps({"hello": "world", "n": 1}))  # the origin again
        switch.click()
        curl_answers(again, url, "mocked in the UI\n")
        # edit it: the form holds the rule, the change applies
        item.get_by_role("button", name="Edit").click()
        editor = page.get_by_test_id("rule-editor")
        sync_api.expect(editor.get_by_label("Response body")).to_have_value("mocked in the UI\n")
        editor.get_by_label("Response body").fill("edited in the UI")
        editor.get_by_role("button", name="Save").click()
        curl_answers(again, url, "edited in the UI")
        # delete it, after saying yes
        page.once("dialog", lambda d: d.accept())
        item.get_by_role("button", name="Delete").click()
        sync_api.expect(rule_item(page, "hello from the UI")).to_have_count(0)
        curl_answers(again, url, json.dumps({"hello": "world", "n": 1}))
        page.keyboard.press("Shift+R")  # and back to the traffic
        sync_api.expect(page.get_by_test_id("list-body")).to_be_visible()


def test_reordering_rules_in_the_ui_changes_which_one_answers(tmp_path: Path, pages: Pages,
                                                              origin: Any) -> None:
    url = origin.url + "/which"
    config = config_text(throttle=False) + (
        '[[plugins.rules.rule]]\nname = "from the config"\nhost = "config.example.test"\n'
        'mock = { body = "configured" }\n')
    with running(tmp_path, config=config) as inspector:
        with inspector.api() as api:
            for name in ("first", "second"):
                created = api.post("/api/rules", json={"name": name, "url": url,
                                                       "mock": {"body": name}})
                assert created.status_code == 201, created.text
            api.post("/api/rules", json={"name": "beta header", "host": "api.example.test",
                                         "priority": 10, "modify_request": {
                                             "set_headers": {"X-Beta": "1"}}})
            api.post("/api/rules", json={"name": "slow", "path": "/reports/*",
                                         "delay": {"ms": 300, "variance_ms": 100},
                                         "enabled": False})
        assert inspector.curl(url).stdout == "first"
        page = pages.open(inspector)
        panel = open_rules(page)
        names = page.get_by_test_id("rules").locator("li .rule-name")
        sync_api.expect(names).to_have_text(["first", "second", "beta header", "slow"])
        rule_item(page, "second").get_by_role("button", name="Move second up").click()
        sync_api.expect(names).to_have_text(["second", "first", "beta header", "slow"])
        curl_answers(inspector, url, "second")
        # dragging works as well: first back above second
        rule_item(page, "first").drag_to(rule_item(page, "second"))
        sync_api.expect(names).to_have_text(["first", "second", "beta header", "slow"])
        curl_answers(inspector, url, "first")
        # the rules of nectoproxy.toml are shown, read-only
        configured = page.get_by_test_id("configured-rules").locator("li")
        sync_api.expect(configured).to_contain_text("from the config")
        sync_api.expect(configured.get_by_role("switch")).to_be_disabled()
        sync_api.expect(configured.get_by_role("button", name="Delete")).to_have_count(0)
        configured.get_by_role("button", name="View").click()
        editor = page.get_by_test_id("rule-editor")
        sync_api.expect(editor).to_contain_text("read-only")
        sync_api.expect(editor.get_by_label("Response body")).to_be_disabled()
        sync_api.expect(editor.get_by_role("button", name="Save")).to_have_count(0)
        editor.get_by_role("button", name="Close").click()
        # a rule made elsewhere (the API) shows up: the event socket announces the change
        with inspector.api() as api:
            assert api.post("/api/rules", json={
                "name": "maintenance", "host": "app.example.test", "enabled": False,
                "mock": {"status": 503, "body": "Back soon"}}).status_code == 201
        sync_api.expect(names).to_have_text(["first", "second", "beta header", "slow",
                                             "maintenance"])
        rule_item(page, "second").get_by_role("button", name="Edit").click()
        sync_api.expect(panel).to_contain_text("Edit \"second\"")
        shot(page, "ui-rules.png")
    with running(tmp_path, config=config) as again:
        assert again.curl(url).stdout == "first"  # the order was saved


def test_an_invalid_rule_shows_the_apis_error(tmp_path: Path, pages: Pages,
                                              origin: Any) -> None:
    with running(tmp_path, config=config_text(throttle=False)) as inspector:
        page = pages.open(inspector)
        open_rules(page)
        pages.allowed.append(re.compile(r"status of 400"))  # the API's refusals
        new_mock(page, "bad", origin.url + "/bad", "x", status="two hundred")
        editor = page.get_by_test_id("rule-editor")
        alert = editor.get_by_test_id("rule-error")
        sync_api.expect(alert).to_contain_text("mock: status")
        sync_api.expect(alert).not_to_contain_text("rules[0]")
        sync_api.expect(editor.locator("fieldset.invalid .field-error")).to_contain_text(
            "mock: status")
        # the JSON of the rule, with a misspelled key: the API's message names it
        editor.get_by_role("button", name="JSON").click()
        text = editor.get_by_label("Rule JSON")
        text.fill(json.dumps({"name": "bad", "url": origin.url + "/bad",
                              "mock": {"stauts": 500}}))
        editor.get_by_role("button", name="Create").click()
        sync_api.expect(alert).to_contain_text(
            "mock: unknown key 'stauts' (known: status, headers, body, body_file, delay_ms)")
        # a bad pattern is marked at the URL field
        editor.get_by_role("button", name="Form").click()
        editor.get_by_label("URL", exact=True).fill("/(/")
        editor.get_by_label("Status").fill("")
        editor.get_by_role("button", name="Create").click()
        sync_api.expect(editor.locator(".rule-field.invalid")).to_contain_text("URL")
        sync_api.expect(editor.locator(".rule-field.invalid .field-error")).to_contain_text(
            "url:")
        with inspector.api() as api:
            assert api.get("/api/rules").json()["rules"] == []  # nothing was saved


def test_a_pass_through_host_added_in_the_ui_is_relayed_untouched(
        tmp_path: Path, pages: Pages, tls_origin: Any) -> None:
    url = f"https://localhost:{tls_origin.port}/json"
    trust_the_origin_only = ("--cacert", tls_origin.ca_pem_path, url)
    with running(tmp_path, config=config_text()) as inspector:
        intercepted = inspector.curl(*trust_the_origin_only)
        assert intercepted.returncode == 60, intercepted  # the proxy's certificate
        page = pages.open(inspector)
        panel = open_rules(page)
        panel.get_by_role("tab", name="Pass-through hosts").click()
        editor = page.get_by_test_id("passthrough-editor")
        pages.allowed.append(re.compile(r"status of 400"))
        editor.get_by_label("Pass-through host 1", exact=True).fill("not a host")
        editor.get_by_role("button", name="Add a host").click()
        editor.get_by_label("Pass-through host 2", exact=True).fill("LOCALHOST")
        editor.get_by_role("button", name="Save").click()
        sync_api.expect(editor.get_by_test_id("settings-error")).to_contain_text(
            "not a host name")
        sync_api.expect(editor.get_by_label("Pass-through host 1", exact=True)).to_have_class(
            re.compile("invalid"))
        assert inspector.curl(*trust_the_origin_only).returncode == 60  # nothing changed
        editor.get_by_role("button", name="Remove pass-through host 1").click()
        editor.get_by_role("button", name="Save").click()
        sync_api.expect(editor.get_by_role("status")).to_contain_text("Saved")
        sync_api.expect(editor.get_by_label("Pass-through host 1", exact=True)).to_have_value("localhost")
        started = time.monotonic()
        while (relayed := inspector.curl(*trust_the_origin_only)).returncode != 0:
            assert time.monotonic() - started < APPLIED_WITHIN, relayed.stderr
            time.sleep(0.05)
        assert json.loads(relayed.stdout) == {"hello": "world", "n": 1}
        verbose = inspector.curl("-v", "-o", "/dev/null", *trust_the_origin_only).stderr
        assert re.search(r"issuer: .*trustme", verbose), verbose  # the origin's certificate
        # the network profile: a refused profile is shown; a good one is saved
        panel.get_by_role("tab", name="Network profile").click()
        throttle = page.get_by_test_id("throttle-editor")
        throttle.get_by_label("Default profile").fill("warp speed")
        throttle.get_by_role("button", name="Save").click()
        sync_api.expect(throttle.get_by_test_id("settings-error")).to_contain_text(
            "unknown profile 'warp speed'")
        throttle.get_by_role("button", name="Add a profile").click()
        throttle.get_by_label("Profile name 1").fill("dial-up")
        throttle.get_by_label("download_bps 1").fill("100000")
        throttle.get_by_label("Default profile").fill("dial-up")
        throttle.get_by_role("button", name="Add a host").click()
        throttle.get_by_label("Host pattern 1").fill("localhost")
        throttle.get_by_label("Host profile 1").fill("none")
        throttle.get_by_role("button", name="Save").click()
        sync_api.expect(throttle.get_by_role("status")).to_contain_text("Saved")
        with inspector.api() as api:
            value = api.get("/api/settings/throttle").json()
        assert value["profile"] == "dial-up" and value["source"] == "inspector"
        assert value["profiles"] == {"dial-up": {"download_bps": 100000}}
        assert value["hosts"] == {"localhost": "none"}


def test_a_plugin_that_is_not_enabled_says_how_to_enable_it(tmp_path: Path,
                                                            pages: Pages) -> None:
    with running(tmp_path) as inspector:  # no configuration: no rules, no throttle plugin
        page = pages.open(inspector)
        page.locator(".toolbar").get_by_role("button", name="Rules").click()
        panel = page.get_by_test_id("rules-panel")
        sync_api.expect(panel.get_by_test_id("not-enabled")).to_contain_text(
            "pip install nectoproxy-plugin-rules")
        sync_api.expect(panel.get_by_test_id("not-enabled")).to_contain_text("[plugins.rules]")
        panel.get_by_role("tab", name="Network profile").click()
        sync_api.expect(panel.get_by_test_id("not-enabled")).to_contain_text("[plugins.throttle]")
        panel.get_by_role("tab", name="Pass-through hosts").click()  # built in: always there
        sync_api.expect(page.get_by_test_id("passthrough-editor")).to_be_visible()
        page.keyboard.press("?")
        sync_api.expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_contain_text(
            "Shift+R")
        page.keyboard.press("Escape")  # the dialog, then the view, close
        sync_api.expect(page.get_by_role("dialog")).to_have_count(0)
        sync_api.expect(panel).to_be_visible()
        page.keyboard.press("Escape")
        sync_api.expect(panel).to_have_count(0)
        sync_api.expect(page.get_by_test_id("list-body")).to_be_visible()


def make_rule(page: Page, name: str, match: dict[str, str], kind: str,
              fields: dict[str, str], replace: tuple[str, str] | None = None) -> None:
    """A rule made with the form: ``match`` and ``fields`` map the inputs' labels to text."""
    page.get_by_test_id("rules-panel").get_by_role("button", name="New rule").click()
    editor = page.get_by_test_id("rule-editor")
    editor.get_by_label("Name", exact=True).fill(name)
    for label, value in match.items():
        editor.get_by_label(label, exact=True).fill(value)
    editor.get_by_label("Kind").select_option(kind)
    for label, value in fields.items():
        editor.get_by_label(label, exact=True).fill(value)
    if replace is not None:
        editor.get_by_role("button", name="Add a replacement").click()
        editor.get_by_label("Find 1").fill(replace[0])
        editor.get_by_label("Replace 1").fill(replace[1])
    editor.get_by_role("button", name="Create").click()
    sync_api.expect(editor).to_have_count(0)
    sync_api.expect(rule_item(page, name)).to_be_visible()


def timed_curl(inspector: Inspector, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    result = inspector.curl(*args)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started, result.stdout


def test_each_kind_of_rule_made_with_its_form_applies(tmp_path: Path, pages: Pages,
                                                      origin: Any) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "page.html").write_text("<p>from a local folder</p>")
    with running(tmp_path, config=config_text(throttle=False)) as inspector:
        page = pages.open(inspector)
        open_rules(page)
        make_rule(page, "blocked", {"Host": "blocked.example.test"}, "block",
                  {"Status": "451", "Response body": "no, thanks"})
        make_rule(page, "to the origin", {"Host": "mapped.example.test"}, "map_remote",
                  {"Target URL": origin.url})
        make_rule(page, "local files", {"Host": "local.example.test"}, "map_local",
                  {"Folder or file": "site"})
        make_rule(page, "slow html", {"Path": "/html"}, "delay", {"Delay (ms)": "400"})
        make_rule(page, "slow start", {"Path": "/bytes/*"}, "throttle",
                  {"Bytes per second": "1000000", "Latency (ms)": "400"})
        make_rule(page, "beta", {"Path": "/echo", "Methods": "POST"}, "modify_request",
                  {"Set headers": "X-Beta: 1", "Set query": "from=ui"})
        make_rule(page, "rewritten", {"Path": "/json"}, "modify_response",
                  {"Set headers": "X-From-UI: yes"}, replace=("world", "UI"))
        kinds = page.get_by_test_id("rules").locator("li .rule-kind")
        sync_api.expect(kinds).to_have_text(["Block", "Map remote", "Map local", "Delay",
                                             "Throttle", "Modify request", "Modify response"])

        blocked = inspector.curl("-w", " %{http_code}", "http://blocked.example.test/x")
        assert blocked.stdout == "no, thanks 451", blocked
        assert json.loads(inspector.curl("http://mapped.example.test/json").stdout)["n"] == 1
        assert inspector.curl("http://local.example.test/page.html").stdout == \
            "<p>from a local folder</p>"
        took, html = timed_curl(inspector, origin.url + "/html")
        assert took >= 0.4 and "<html" in html.lower()
        took, size = timed_curl(inspector, "-o", "/dev/null", "-w", "%{size_download}",
                                origin.url + "/bytes/1000")
        assert took >= 0.4 and size == "1000"
        inspector.curl("-X", "POST", "-d", "hi", origin.url + "/echo")
        [echoed] = [r for r in origin.requests if r.path.startswith("/echo")]
        assert echoed.header("X-Beta") == "1" and "from=ui" in echoed.path
        rewritten = inspector.curl("-i", origin.url + "/json").stdout
        assert re.search(r"(?im)^x-from-ui: yes\r?$", rewritten), rewritten
        assert rewritten.rstrip().endswith('{"hello": "UI", "n": 1}'), rewritten
        with inspector.api() as api:
            rules = {r["name"]: r for r in api.get("/api/rules").json()["rules"]}
        assert rules["blocked"]["block"] == {"status": 451, "body": "no, thanks"}
        assert rules["to the origin"]["map_remote"] == origin.url
        assert rules["local files"]["map_local"] == "site"
        assert rules["slow start"]["throttle"] == {"bytes_per_second": 1000000,
                                                   "latency_ms": 400}
        assert rules["rewritten"]["modify_response"] == {
            "set_headers": {"X-From-UI": "yes"}, "replace": [{"find": "world", "replace": "UI"}]}


# -- breakpoints ------------------------------------------------------------------------------


class Background:
    """curl through the proxy from another thread (it waits at a breakpoint meanwhile)."""

    def __init__(self, inspector: Inspector, *args: str) -> None:
        self.result: subprocess.CompletedProcess[str] | None = None
        self._thread = threading.Thread(target=self._run, args=(inspector, args))
        self._thread.start()

    def _run(self, inspector: Inspector, args: tuple[str, ...]) -> None:
        self.result = inspector.curl(*args)

    def done(self) -> subprocess.CompletedProcess[str]:
        self._thread.join(30)
        assert self.result is not None
        return self.result


def test_a_curl_paused_at_a_breakpoint_is_edited_in_the_page_and_reaches_the_origin(
        tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector:
        page = pages.open(inspector)
        page.get_by_label("Filter", exact=True).fill("path:/echo")
        page.get_by_label("Filter", exact=True).press("Enter")
        page.get_by_role("button", name="Breakpoints").click()
        panel = page.get_by_test_id("breakpoints-panel")
        panel.get_by_label("Phase of a new breakpoint").select_option("request")
        panel.get_by_role("button", name="Add from the filter").click()
        sync_api.expect(panel.get_by_test_id("breakpoints")).to_contain_text("path:/echo")
        sync_api.expect(panel.get_by_test_id("breakpoints")).to_contain_text("request")

        edited = Background(inspector, "-d", "as sent", origin.url + "/echo?from=curl")
        queue = panel.get_by_test_id("paused-queue")
        sync_api.expect(queue).to_contain_text("/echo?from=curl")
        sync_api.expect(page.get_by_role("button", name="Breakpoints (1 paused)")).to_be_visible()
        editor = page.get_by_test_id("paused-editor")
        sync_api.expect(editor.get_by_label("Body")).to_have_value("as sent")
        editor.get_by_label("URL").fill(origin.url + "/echo?edited")
        headers = editor.get_by_label("Headers")
        headers.fill(headers.input_value() + "\nX-Edited: in the page")
        editor.get_by_label("Body").fill("edited in the page")
        shot(page, "breakpoints.png")
        editor.get_by_label("Body").press("Control+Enter")  # continue, from the keyboard
        echo = json.loads(edited.done().stdout)
        assert echo["path"] == "/echo?edited" and echo["body"] == "edited in the page"
        assert ["X-Edited", "in the page"] in echo["headers"]
        assert origin.requests[-1].body == b"edited in the page"
        sync_api.expect(panel).to_contain_text("No flow is paused")

        aborted = Background(inspector, "-d", "never sent", origin.url + "/echo?aborted")
        sync_api.expect(queue).to_contain_text("/echo?aborted")
        sync_api.expect(editor.get_by_label("Body")).to_have_value("never sent")
        page.keyboard.press("Control+Shift+Enter")  # abort
        assert aborted.done().returncode != 0  # the connection closed without an answer
        sync_api.expect(panel).to_contain_text("No flow is paused")
        assert [r.path for r in origin.requests] == ["/echo?edited"]
        sync_api.expect(page.get_by_role("button", name="Breakpoints", exact=True)).to_be_visible()
        page.close()  # before the proxy stops: its event socket would retry, as a console error


# -- columns (sort, resize, choose), filter suggestions, pause and clear ----------------------


def _fill_hosts(path: Path, hosts: list[str]) -> int:
    with SQLiteStore(path) as store:
        session = store.start_run()
        for n, host in enumerate(hosts):
            store.save_flow(FlowRecord(
                id=new_flow_id(), session_id=session.id, method="GET", url=f"http://{host}/{n}",
                host=host, path=f"/{n}", started_at=time.time(), status=200, duration=1.0))
        return session.id


def test_filter_suggestions_come_when_the_words_arrive_after_the_first_keystrokes(
        tmp_path: Path, pages: Pages) -> None:
    """The filter language's words are fetched when the field takes the focus: typed before
    they arrive, the suggestions appear as they do, not at the next keystroke."""
    session_id = _fill_hosts(tmp_path / "flows.db", ["api.shop.test"])
    with running(tmp_path, "--session", str(session_id)) as inspector:
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(1)
        held: list[Any] = []
        page.route("**/api/filter", lambda route: held.append(route))  # answered when told
        field = page.get_by_label("Filter")
        field.click()
        field.press_sequentially("ho")
        for _ in range(100):  # the fetch the focus started reaches the route
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the field did not ask for the filter language on focus"
        listbox = page.get_by_role("listbox", name="Suggestions")
        sync_api.expect(listbox).to_have_count(0)  # no words yet
        held[0].continue_()
        sync_api.expect(listbox.get_by_role("option").first).to_contain_text("host:")
        sync_api.expect(field).to_have_value("ho")


def header(page: Page, column: str) -> Any:
    return page.locator(f".row.header [data-column={column}]")


@pytest.mark.timeout(300)
def test_sort_by_status_pages_both_ways_and_new_flows_wait(tmp_path: Path, pages: Pages,
                                                           origin: Any) -> None:
    session_id = _fill(tmp_path / "flows.db", 3000)  # 404 every tenth (the last: /item/2990)
    with running(tmp_path, "--session", str(session_id)) as inspector, \
            inspector.client() as client:
        page = pages.open(inspector)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("3,000 in the list")
        focused = page.locator("[data-testid=list-body] .row.focused")
        header(page, "status").click()  # ascending: the 200s first, each status in arrival order
        sync_api.expect(header(page, "status")).to_have_attribute("aria-sort", "ascending")
        sync_api.expect(rows(page).first.locator(".c-path")).to_have_text("/item/1")
        page.keyboard.press("End")
        sync_api.expect(focused.locator(".c-path")).to_have_text("/item/2990")
        sync_api.expect(focused.locator(".c-status")).to_have_text("404")
        header(page, "status").click()  # descending: the 404s, newest first, then the 200s
        sync_api.expect(header(page, "status")).to_have_attribute("aria-sort", "descending")
        sync_api.expect(rows(page).first.locator(".c-path")).to_have_text("/item/2990")
        page.keyboard.press("Home")
        for _ in range(15):  # 300 rows down: past the first pages, to the first 200
            page.keyboard.press("PageDown")
        sync_api.expect(focused.locator(".c-num")).to_have_text("301")
        sync_api.expect(focused.locator(".c-path")).to_have_text("/item/2999")
        sync_api.expect(focused.locator(".c-status")).to_have_text("200")
        page.keyboard.press("End")
        sync_api.expect(focused.locator(".c-path")).to_have_text("/item/1")
        # a live flow does not move the sorted rows: it waits behind the button
        assert client.get(origin.url + "/status/500").status_code == 500
        new = page.get_by_test_id("new-flows")
        sync_api.expect(new).to_have_text("1 new flow · show")
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("3,000 in the list")
        new.click()
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("3,001 in the list")
        sync_api.expect(new).to_have_count(0)
        page.keyboard.press("Home")  # (showing them keeps the scroll position)
        sync_api.expect(focused.locator(".c-status")).to_have_text("500")
        page.reload()  # the sort is remembered
        sync_api.expect(header(page, "status")).to_have_attribute("aria-sort", "descending")
        sync_api.expect(rows(page).first.locator(".c-status")).to_have_text("500")
        header(page, "status").focus()  # a third time (from the keyboard): arrival order,
        page.keyboard.press("Enter")     # following the newest
        sync_api.expect(header(page, "status")).to_have_attribute("aria-sort", "none")
        sync_api.expect(row_with(page, "/status/500")).to_be_visible()
        sync_api.expect(rows(page).last.locator(".c-path")).to_have_text("/status/500")


def test_columns_are_resized_hidden_and_remembered(tmp_path: Path, pages: Pages,
                                                   origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.get(origin.url + "/json")
        wait_for(lambda: inspector.entries())
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(1)
        host = header(page, "host")
        before = host.bounding_box()
        handle = host.locator(".col-resize").bounding_box()
        x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y, steps=5)
        page.mouse.move(x + 120, y, steps=5)
        page.mouse.up()
        after = host.bounding_box()
        assert abs(after["width"] - before["width"] - 120) <= 2, (before, after)
        cell = row_with(page, "/json").locator(".c-host").bounding_box()
        assert abs(cell["width"] - after["width"]) <= 2  # the rows follow the header
        assert header(page, "status").get_attribute("aria-sort") == "none"  # a drag is no click
        # right-click the header: the column menu; hide the content type
        header(page, "path").click(button="right")
        menu = page.get_by_role("menu", name="Columns")
        menu.get_by_role("menuitemcheckbox", name="Type").click()
        sync_api.expect(header(page, "type")).to_have_count(0)
        sync_api.expect(row_with(page, "/json").locator(".c-type")).to_have_count(0)
        page.keyboard.press("Escape")
        sync_api.expect(menu).to_have_count(0)
        page.reload()
        sync_api.expect(rows(page)).to_have_count(1)
        sync_api.expect(header(page, "type")).to_have_count(0)
        remembered = header(page, "host").bounding_box()
        assert abs(remembered["width"] - after["width"]) <= 2
        # the ⋮ button opens the same menu; showing the column again brings it back
        page.get_by_role("button", name="Columns").click()
        page.get_by_role("menu", name="Columns").get_by_role(
            "menuitemcheckbox", name="Type").click()
        sync_api.expect(row_with(page, "/json").locator(".c-type")).to_have_text("application/json")


def test_filter_suggests_fields_and_hosts_seen_and_accepting_filters(
        tmp_path: Path, pages: Pages) -> None:
    session_id = _fill_hosts(tmp_path / "flows.db",
                             ["api.shop.test", "cdn.shop.test", "api.shop.test", "img.other.test"])
    with running(tmp_path, "--session", str(session_id)) as inspector:
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(4)
        field = page.get_by_label("Filter")
        field.click()
        field.press_sequentially("ho")
        listbox = page.get_by_role("listbox", name="Suggestions")
        sync_api.expect(listbox.get_by_role("option").first).to_contain_text("host:")
        field.press("Tab")
        sync_api.expect(field).to_have_value("host:")
        sync_api.expect(listbox.get_by_role("option")).to_have_count(3)  # the hosts seen
        field.press_sequentially("sho")
        sync_api.expect(listbox.get_by_role("option")).to_have_count(2)
        field.press("ArrowDown")
        sync_api.expect(listbox.get_by_role("option", selected=True)).to_contain_text(
            "cdn.shop.test")
        field.press("Enter")
        sync_api.expect(field).to_have_value("host:cdn.shop.test ")
        sync_api.expect(rows(page)).to_have_count(1)
        sync_api.expect(rows(page).first.locator(".c-host")).to_have_text("cdn.shop.test")
        # Esc closes the suggestions and leaves the field (and the filter) as they are
        field.press_sequentially("!me")
        sync_api.expect(listbox).to_be_visible()
        field.press("Escape")
        sync_api.expect(listbox).to_have_count(0)
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Filter"
        field.press_sequentially("thod:")
        sync_api.expect(listbox.get_by_role("option").locator("code")).to_have_text(["GET"])


def test_pause_stops_capture_resume_brings_it_back_and_clear_empties(
        tmp_path: Path, pages: Pages, origin: Any) -> None:
    with running(tmp_path) as inspector, inspector.client() as client:
        client.get(origin.url + "/json")
        wait_for(lambda: inspector.entries())
        page = pages.open(inspector)
        sync_api.expect(rows(page)).to_have_count(1)
        status = page.get_by_test_id("capture-state")
        sync_api.expect(status).to_have_text("capturing")
        page.get_by_role("button", name="Pause", exact=True).click()
        sync_api.expect(status).to_have_text("capture paused")
        resume = page.get_by_role("button", name="▶ Resume")
        sync_api.expect(resume).to_have_attribute("aria-pressed", "true")
        assert client.get(origin.url + "/html").status_code == 200  # proxied...
        page.wait_for_timeout(1500)
        sync_api.expect(rows(page)).to_have_count(1)  # ...not stored, not shown
        assert [e["path"] for e in inspector.entries()] == ["/json"]
        resume.click()
        sync_api.expect(status).to_have_text("capturing")
        client.get(origin.url + "/status/404")
        sync_api.expect(row_with(page, "/status/404")).to_be_visible()
        sync_api.expect(rows(page)).to_have_count(2)
        # clear, after a confirmation (cancel first: nothing happens)
        page.get_by_role("button", name="Clear").click()
        dialog = page.get_by_role("dialog", name="Clear the session?")
        dialog.get_by_role("button", name="Cancel").click()
        sync_api.expect(rows(page)).to_have_count(2)
        page.get_by_role("button", name="Clear").click()
        dialog.get_by_role("button", name="Clear").click()
        sync_api.expect(rows(page)).to_have_count(0)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("0 in the list")
        sync_api.expect(page.get_by_role("status")).to_contain_text("Cleared 2 flows")
        assert inspector.entries() == []
        client.get(origin.url + "/json?after=1")  # capture goes on into the emptied session
        sync_api.expect(row_with(page, "/json?after=1")).to_be_visible()


@pytest.mark.timeout(600)
def test_a_sorted_session_of_100000_flows_reaches_its_middle(tmp_path: Path,
                                                             pages: Pages) -> None:
    session_id = _fill(tmp_path / "flows.db", 100_000)
    with running(tmp_path, "--session", str(session_id)) as inspector:
        page = pages.open(inspector)
        sync_api.expect(page.get_by_test_id("shown")).to_have_text("100,000 in the list")
        header(page, "size").click()  # 100..1099 bytes, a hundred flows of each
        sync_api.expect(rows(page).first.locator(".c-size")).to_have_text("100 B")
        page.wait_for_timeout(500)
        started = time.monotonic()
        page.get_by_test_id("list-body").evaluate("el => { el.scrollTop = el.scrollHeight / 2; }")
        placeholders = page.locator("[data-testid=list-body] .row.placeholder")
        sync_api.expect(placeholders).to_have_count(0, timeout=60_000)
        elapsed = time.monotonic() - started
        middle = int(rows(page).nth(10).locator(".c-num").inner_text())
        assert 45_000 < middle < 55_000
        # rows n-1..: size 100 + n // 100 in the sorted order, ties in arrival order
        size = 100 + (middle - 1) // 100
        assert rows(page).nth(10).locator(".c-size").inner_text() == f"{size} B"
        loaded = int(re.sub(r"\D", "", page.get_by_test_id("loaded").inner_text()))
        print(f"a jump to the middle of 100,000 flows sorted by size: {elapsed:.1f} s, "
              f"{loaded} rows held")
        assert loaded <= 20_000


@contextmanager
def websocket_echo() -> Iterator[int]:
    """A websockets echo server in a thread; yields its port."""
    from websockets.sync.server import ServerConnection, serve

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(10)


def test_a_websocket_flow_lists_filters_shows_and_sends_messages(tmp_path: Path,
                                                                 pages: Pages) -> None:
    from websockets.sync.client import connect

    with running(tmp_path) as inspector, websocket_echo() as port, \
            connect(f"ws://127.0.0.1:{port}/chat", proxy=f"http://127.0.0.1:{inspector.port}",
                    open_timeout=10) as ws:
        ws.send("hello ui")
        assert ws.recv(10) == "hello ui"
        ws.send(b"\x01\x02\xff")
        assert ws.recv(10) == b"\x01\x02\xff"
        page = pages.open(inspector)
        row_with(page, "/chat").click()
        detail = page.get_by_test_id("detail")
        detail.get_by_role("tab", name="Messages").click()
        messages = detail.get_by_test_id("ws-messages")
        items = messages.get_by_role("listitem")
        sync_api.expect(items).to_have_count(4)
        sync_api.expect(messages.get_by_test_id("ws-count")).to_contain_text("open")
        messages.get_by_label("Direction").select_option("client")
        sync_api.expect(items).to_have_count(2)
        messages.get_by_label("Type").select_option("text")
        sync_api.expect(items).to_have_count(1)
        items.first.click()
        sync_api.expect(messages.get_by_test_id("ws-content")).to_have_text("hello ui")
        messages.get_by_label("Type").select_option("binary")
        items.first.click()
        sync_api.expect(messages.get_by_test_id("ws-content")).to_have_text("01 02 ff")
        messages.get_by_label("Direction").select_option("")
        messages.get_by_label("Type").select_option("")
        # Send one to the client, and one to the server (which echoes it).
        messages.get_by_label("Send to").select_option("client")
        messages.get_by_label("Message to send").fill("from the ui")
        messages.get_by_role("button", name="Send").click()
        assert ws.recv(10) == "from the ui"
        messages.get_by_label("Send to").select_option("server")
        messages.get_by_label("Message to send").fill("via the server")
        messages.get_by_role("button", name="Send").click()
        assert ws.recv(10) == "via the server"
        sync_api.expect(items).to_have_count(7)  # the list follows the open connection
        sync_api.expect(messages.locator(".chip", has_text="injected")).to_have_count(2)
        shot(page, "ui-websocket.png")
        ws.close()
        sync_api.expect(messages.get_by_test_id("ws-count")).to_contain_text("closed",
                                                                            timeout=10_000)
        sync_api.expect(messages.get_by_role("button", name="Send")).to_be_disabled()


@pytest.mark.timeout(300)
def test_the_detail_shows_a_flows_trailers(tmp_path: Path, pages: Pages) -> None:
    """gRPC's status is in the response's trailers: the detail lists them beside the heads."""
    with SQLiteStore(tmp_path / "flows.db") as store:
        session = store.start_run()
        store.save_flow(FlowRecord(
            id=new_flow_id(), session_id=session.id, method="POST", scheme="https",
            url="https://grpc.test/echo.Echo/Say", host="grpc.test", path="/echo.Echo/Say",
            http_version="HTTP/2.0", started_at=time.time(), status=200, duration=3.0,
            request_headers=[("content-type", "application/grpc"), ("te", "trailers")],
            response_headers=[("content-type", "application/grpc")],
            request_trailers=None,
            response_trailers=[("grpc-status", "5"), ("grpc-message", "no such thing")]))
    with running(tmp_path, "--session", str(session.id)) as inspector:
        page = pages.open(inspector)
        row_with(page, "/echo.Echo/Say").click()
        trailers = page.get_by_test_id("response-trailers")
        sync_api.expect(trailers).to_contain_text("Trailers (2)")
        sync_api.expect(trailers).to_contain_text("grpc-message")
        sync_api.expect(trailers).to_contain_text("no such thing")
        sync_api.expect(page.get_by_test_id("request-trailers")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "trailers.png"))
