"""The web UI's files: ``/`` is the bundle's page behind the token, ``/assets/<name>`` only
the files the build wrote (cached for a year: their names carry a hash), and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_web_support import TOKEN, WebServer

from nectoproxy.web import ui


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a real inspector, without a token of its own."""
    with WebServer(tmp_path) as web, web.client(token=None) as anonymous:
        yield anonymous


def _asset_names() -> list[str]:
    return sorted(p.name for p in (ui.STATIC / "assets").iterdir())


def test_the_bundle_is_in_the_package() -> None:
    index = (ui.STATIC / "index.html").read_text()
    names = re.findall(r'(?:src|href)="/assets/([^"]+)"', index)
    assert any(n.endswith(".js") for n in names) and any(n.endswith(".css") for n in names)
    assert set(names) <= set(_asset_names())


def test_the_page_needs_the_token_and_sets_the_cookie(client: httpx.Client) -> None:
    assert client.get("/").status_code == 401
    visit = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert visit.status_code == 303 and visit.headers["location"] == "/"
    page = client.get("/")  # the cookie now
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (ui.STATIC / "index.html").read_text()
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"


def test_assets_are_served_with_long_cache_headers(client: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for name in _asset_names():
        answer = client.get(f"/assets/{name}", headers=headers)
        assert answer.status_code == 200, name
        assert answer.content == (ui.STATIC / "assets" / name).read_bytes()
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answer.headers["x-content-type-options"] == "nosniff"
        if name.endswith(".js"):
            assert answer.headers["content-type"].startswith("text/javascript")
    assert client.get(f"/assets/{_asset_names()[0]}").status_code == 401  # no token


@pytest.mark.parametrize("path", [
    "/assets/../index.html", "/assets/%2e%2e%2fweb-token", "/assets/..%2F..%2Fui.py",
    "/assets/missing.js", "/assets/", "/static/index.html", "/index.html", "/ui.py",
    "/assets/.hidden.js",
])
def test_nothing_else_is_served(client: httpx.Client, path: str) -> None:
    answer = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404, path
    assert answer.headers["content-type"] == "application/json"


def test_the_api_page_lists_the_endpoints(client: httpx.Client) -> None:
    page = client.get("/api/endpoints", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "/api/traffic/{id}/replay" in page.text
    assert 'href="/"' in page.text


def test_without_a_bundle_the_page_is_the_api_page(client: httpx.Client, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui, "STATIC", tmp_path / "no-bundle")
    page = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "NectoProxy inspector" in page.text
    assert client.get("/assets/x.js", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 404
