"""The README's example, verbatim: its nectoproxy.toml and rules.toml blocks run through a real
proxy. Every host in it is answered by a rule or mapped to 127.0.0.1, so nothing is looked up."""

from __future__ import annotations

import json
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nectoproxy_plugin_rules import RulesPlugin

README = Path(__file__).resolve().parents[1] / "README.md"
SEARCH = {"results": [{"id": 1, "title": "first"}]}


def toml_blocks() -> dict[str, str]:
    """The README's TOML blocks by the file name on their first line (``# rules.toml``)."""
    blocks = re.findall(r"^```toml\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE)
    return {block.splitlines()[0].lstrip("# ").strip(): block for block in blocks}


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The example's folder (nectoproxy.toml, rules.toml, mocks/, dist/) as the current one."""
    blocks = toml_blocks()
    (tmp_path / "nectoproxy.toml").write_text(blocks["nectoproxy.toml"])
    (tmp_path / "rules.toml").write_text(blocks["rules.toml"])
    (tmp_path / "mocks").mkdir()
    (tmp_path / "mocks" / "search.json").write_text(json.dumps(SEARCH))
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app.js").write_text("console.log('local build')")
    monkeypatch.chdir(tmp_path)
    return tomllib.loads(blocks["nectoproxy.toml"])


def test_readme_has_both_blocks():
    assert set(toml_blocks()) == {"nectoproxy.toml", "rules.toml"}


def test_readme_example_offline_rules(make_proxy, example, origin, recorder, tmp_path):
    with make_proxy(plugins=[RulesPlugin(), recorder], config=example) as proxy, \
            proxy.client() as client:
        login = client.post("https://api.example.com/v1/login", json={"user": "ada"})
        started = time.monotonic()
        search = client.get("https://api.example.com/v1/search?q=tea")
        search_time = time.monotonic() - started
        blocked = client.get("https://www.analytics.example.com/collect?e=1")
        script = client.get("https://app.example.com/static/app.js")
        teapot = client.get("https://api.example.com/v1/brew?kind=green")
        redacted = client.post(origin.url + "/echo", json={"token": "s3cret", "n": 1})

        rules = tmp_path / "rules.toml"  # the README says: switch maintenance on and save
        rules.write_text(rules.read_text().replace("enabled = false", "enabled = true"))
        deadline = time.monotonic() + 6
        while client.get("https://app.example.com/").status_code != 503:
            assert time.monotonic() < deadline, "the rules file was not reloaded"
            time.sleep(0.1)
        assert client.get("https://app.example.com/").text == "Back soon\n"

    assert (login.status_code, login.json()) == (200, {"token": "dev-token", "expires_in": 3600})
    assert login.headers["cache-control"] == "no-store"  # the "beta" rule ran first
    assert recorder.rules_of("/v1/login") == ["beta", "fake login"]
    assert search.json() == SEARCH and search.headers["content-type"] == "application/json"
    assert search_time >= 0.79
    assert recorder.rules_of("/v1/search") == ["beta", "slow search"]
    assert blocked.status_code == 403
    assert blocked.text == "Blocked by NectoProxy rule 'no analytics'\n"
    assert script.text == "console.log('local build')"
    assert recorder.rules_of("app.js") == ["local build"]
    assert (teapot.status_code, teapot.headers["retry-after"]) == (418, "60")
    assert recorder.rules_of("/v1/brew") == ["beta", "teapot"]
    assert json.loads(redacted.json()["body"]) == {"token": "REDACTED", "n": 1}
    assert recorder.rules_of("/echo") == ["redact tokens in uploads"]
    assert [r.path for r in origin.requests] == ["/echo"]


class _DevServer(BaseHTTPRequestHandler):
    """Stands in for the development server the example maps API v2 to."""

    def do_GET(self) -> None:
        if self.path.startswith("/v2/reports/"):
            body, kind = b"r" * 20000, "application/octet-stream"
        else:
            body = json.dumps({"path": self.path, "beta": False,
                               "x-beta": self.headers.get("X-Beta")}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def dev_server(example: dict[str, Any]) -> Iterator[ThreadingHTTPServer]:
    """The example's development server on 127.0.0.1:3000, as the README says; when something
    else holds that port, on a free one, with the example's files pointed at it instead."""
    try:
        server = ThreadingHTTPServer(("127.0.0.1", 3000), _DevServer)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _DevServer)
        moved = f"127.0.0.1:{server.server_address[1]}"
        for name in ("nectoproxy.toml", "rules.toml"):
            path = Path(name)  # the example fixture made the example's folder the current one
            path.write_text(path.read_text().replace("127.0.0.1:3000", moved))
        example.clear()
        example.update(tomllib.loads(Path("nectoproxy.toml").read_text()))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_readme_example_rules_for_the_dev_server(make_proxy, example, dev_server, recorder):
    with make_proxy(plugins=[RulesPlugin(), recorder], config=example) as proxy, \
            proxy.client() as client:
        users = client.get("https://api.example.com/v2/users?cache_bust=123&page=2")
        started = time.monotonic()
        report = client.get("https://api.example.com/v2/reports/2024")
        report_time = time.monotonic() - started
    assert users.json() == {"path": "/v2/users?page=2", "beta": True, "x-beta": "1"}
    assert users.headers["cache-control"] == "no-store" and "etag" not in users.headers
    assert recorder.rules_of("/v2/users") == ["beta", "api v2 to localhost"]
    assert len(report.content) == 20000
    assert report_time >= 0.2 + 0.2 + 0.9  # delay (300 - 100 ms), latency, 20000 B at 20000 B/s
    assert recorder.rules_of("/v2/reports") == ["beta", "api v2 to localhost", "slow reports"]
