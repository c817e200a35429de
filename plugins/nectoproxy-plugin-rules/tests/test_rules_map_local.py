"""map_local: files from a folder or one file, content types, 404s, and no way out of the
folder (``..``, encoded ``%2e%2e``, absolute paths, symbolic links)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

import pytest

SECRET = "top secret, outside the folder"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "app.js").write_text("console.log('local')")
    (root / "data.json").write_text('{"local": true}')
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (root / "sub" / "index.html").write_text("<h1>sub</h1>")
    (tmp_path / "secret.txt").write_text(SECRET)
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
def map_local_proxy(rules_proxy, site):
    rules = [{"name": "files", "host": "files.example.test", "map_local": str(site)},
             {"name": "cdn", "host": "cdn.example.test", "path": "/static/*",
              "map_local": {"path": str(site), "strip_prefix": "/static",
                            "headers": {"Cache-Control": "no-cache"}}},
             {"name": "one", "host": "one.example.test", "map_local": str(site / "data.json")},
             # Nothing under .example.test may ever be looked up: a visible 418 instead.
             {"name": "safety-net", "host": "*.example.test", "priority": -100,
              "block": {"status": 418}}]
    return rules_proxy(rules)


def test_serves_files_with_content_types(map_local_proxy, site, recorder):
    with map_local_proxy as proxy, proxy.client() as client:
        index = client.get("http://files.example.test/")
        script = client.get("http://files.example.test/app.js?v=3")
        logo = client.get("https://files.example.test/logo.png")
        sub = client.get("http://files.example.test/sub/")
        sub_no_slash = client.get("http://files.example.test/sub")
        inside = client.get("http://files.example.test/sub/../data.json")
    assert (index.status_code, index.text) == (200, "<h1>home</h1>")
    assert index.headers["content-type"] == "text/html"
    assert script.text == "console.log('local')"
    assert script.headers["content-type"] == mimetypes.guess_type("app.js")[0]
    assert logo.content == (site / "logo.png").read_bytes()
    assert logo.headers["content-type"] == "image/png"
    assert sub.text == sub_no_slash.text == "<h1>sub</h1>"
    assert inside.json() == {"local": True}
    assert recorder.rules_of("app.js") == ["files"]


def test_strip_prefix_and_extra_headers(map_local_proxy):
    with map_local_proxy as proxy, proxy.client() as client:
        response = client.get("http://cdn.example.test/static/data.json")
    assert response.json() == {"local": True}
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"] == "application/json"


def test_one_file_for_every_path(map_local_proxy):
    with map_local_proxy as proxy, proxy.client() as client:
        a = client.get("http://one.example.test/")
        b = client.get("https://one.example.test/any/thing?x=1")
    assert a.json() == b.json() == {"local": True}


def test_missing_file_is_404(map_local_proxy):
    with map_local_proxy as proxy, proxy.client() as client:
        response = client.get("http://files.example.test/nope.txt")
    assert response.status_code == 404
    assert response.text == "Not found: /nope.txt\n"


@pytest.mark.parametrize("path", [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/..%2fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/link.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/..%5csecret.txt",
    "/%00/../secret.txt",
])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_never_outside_the_folder(map_local_proxy, origin, tmp_path, path, scheme):
    absolute = f"/{tmp_path}/secret.txt"  # "//tmp/.../secret.txt": an absolute path
    with map_local_proxy as proxy:
        for attempt in (path, absolute, "/static" + path):
            host = "cdn" if attempt.startswith("/static") else "files"
            result = proxy.curl("--path-as-is", "-w", "\n%{http_code}",
                                f"{scheme}://{host}.example.test{attempt}")
            assert result.returncode == 0, result.stderr
            assert result.stdout.endswith(b"\n404"), (attempt, result.stdout[:200])
            assert SECRET.encode() not in result.stdout
            assert b"root:" not in result.stdout
    assert origin.requests == []
