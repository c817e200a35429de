"""Every example script, run through a real proxy against the local fake origins.

Host names ending in ``.test`` only ever reach the proxy: the plugins under test answer those
requests themselves, so nothing is resolved or contacted beyond 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from nectoproxy import ConfigError, Proxy
from nectoproxy.plugins import load_script
from nectoproxy.testing import proxy_config
from nectoproxy.testing.origin import HTML_BODY, RawServer

EXAMPLES = Path(__file__).resolve().parent.parent
PLUGINS_DOC = EXAMPLES.parent / "docs" / "plugins.md"
SCRIPTS = ["add_header", "mock_api", "block_hosts", "redact_secrets", "jsonl_log", "rewrite_html"]


def script(name: str) -> str:
    return str(EXAMPLES / f"{name}.py")


def with_options(name: str, **options: object) -> dict[str, dict[str, object]]:
    return {"plugins": {name: options}}


def assert_start_up_fails(make_proxy, name: str, match: str, **options: object) -> None:
    """Starting a proxy with script ``name`` and these options raises a ConfigError."""
    running = make_proxy(scripts=[script(name)], config=with_options(name, **options))
    with pytest.raises(ConfigError, match=match), running:
        pass


def echo_headers(response: httpx.Response) -> dict[str, str]:
    """The request headers the origin received, from its /echo answer (names lower-cased)."""
    return {k.lower(): v for k, v in response.json()["headers"]}


# -- every script --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_documented_and_loads(name, tmp_path):
    doc = load_script(Path(script(name))).__doc__
    assert doc and f"nectoproxy -s examples/{name}.py" in doc
    assert f"[plugins.{name}]" in doc
    env = {"NECTOPROXY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "nectoproxy", "plugins", "--json", "--no-config",
         "--no-entry-points", "-s", script(name)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["name"] == name]
    assert row["source"] == "script" and row["location"] == script(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_fails_start_up(make_proxy, name):
    assert_start_up_fails(make_proxy, name, f"plugins.{name}.*colour", colour="blue")


# -- add_header ----------------------------------------------------------------------------


def test_add_header_defaults(make_proxy, origin, tls_origin):
    with make_proxy(scripts=[script("add_header")]) as proxy, proxy.client() as client:
        for url in (origin.url, tls_origin.url):
            response = client.get(url + "/echo")
            assert response.status_code == 200
            assert echo_headers(response)["x-proxied-by"] == "NectoProxy"
            assert "server" not in response.headers
            assert response.headers["x-origin"] == "nectoproxy-test"


def test_add_header_options(make_proxy, origin, tls_origin):
    config = with_options("add_header",
                          request_headers={"X-Team": "blue", "User-Agent": "necto-agent"},
                          remove_response_headers=["X-Origin", "content-type"])
    with make_proxy(scripts=[script("add_header")], config=config) as proxy, \
            proxy.client(headers={"User-Agent": "client-agent"}) as client:
        for url in (origin.url, tls_origin.url):
            response = client.get(url + "/echo")
            received = echo_headers(response)
            assert received["x-team"] == "blue"
            assert received["user-agent"] == "necto-agent"
            assert "x-proxied-by" not in received
            assert "x-origin" not in response.headers
            assert "content-type" not in response.headers
            assert response.headers["server"].startswith("NectoProxyTestOrigin")
            assert response.json()["method"] == "GET"


def test_add_header_does_not_buffer_bodies(make_proxy, origin):
    with make_proxy(scripts=[script("add_header")]) as proxy, proxy.client() as client:
        # Bodies are buffered only for on_request (and on_response) implementations.
        assert not proxy.proxy.hooks.has("on_request")
        response = client.post(origin.url + "/echo", content=b"b" * 5000)
    assert echo_headers(response)["x-proxied-by"] == "NectoProxy"
    assert response.json()["body"] == "b" * 5000


@pytest.mark.parametrize(("options", "key"), [
    ({"request_headers": ["X-A: 1"]}, "request_headers"),
    ({"request_headers": {"X-A": 1}}, "request_headers.X-A"),
    ({"request_headers": {"bad name": "1"}}, "request_headers"),
    ({"remove_response_headers": "Server"}, "remove_response_headers"),
])
def test_add_header_bad_options(make_proxy, options, key):
    assert_start_up_fails(make_proxy, "add_header", key, **options)


# -- mock_api ------------------------------------------------------------------------------


def test_mock_api_default_file(make_proxy, origin):
    with make_proxy(scripts=[script("mock_api")]) as proxy, proxy.client() as client:
        users = client.get(origin.url + "/api/users?page=1")
        one = client.get(origin.url + "/api/users/1")
        missing = client.get(origin.url + "/api/users/7")
        login = client.post(origin.url + "/api/login", json={"user": "x"})
        health = client.delete(origin.url + "/api/health")
        assert origin.requests == []  # none of those reached the origin
        passed = client.get(origin.url + "/json")
    assert users.status_code == 200
    assert users.headers["content-type"] == "application/json"
    assert users.headers["x-mocked-by"] == "nectoproxy mock_api"
    assert [u["name"] for u in users.json()] == ["Ada Lovelace", "Alan Turing"]
    assert one.json()["email"] == "ada@example.com"
    assert (missing.status_code, missing.json()) == (404, {"error": "no such user"})
    assert login.status_code == 401 and login.headers["www-authenticate"] == "Bearer"
    assert (health.status_code, health.text) == (200, "ok\n")
    assert health.headers["cache-control"] == "no-store"
    assert passed.json() == {"hello": "world", "n": 1}
    assert [r.path for r in origin.requests] == ["/json"]


def test_mock_api_answers_https_without_any_origin(make_proxy):
    # api.test has no server anywhere: the proxy terminates TLS and answers from the file.
    with make_proxy(scripts=[script("mock_api")]) as proxy, proxy.client() as client:
        response = client.get("https://api.test/api/users/1")
    assert response.status_code == 200
    assert response.json()["name"] == "Ada Lovelace"


def test_mock_api_file_and_hosts_options(make_proxy, origin, tls_origin, tmp_path,
                                         monkeypatch):
    (tmp_path / "mocks.json").write_text(json.dumps({
        "GET /v1/*": {"body": {"mocked": True}},
        "PUT /v1/items/1": {"status": 204, "body": ""},
        "/v1/count": {"body": 3},
    }))
    monkeypatch.chdir(tmp_path)  # no nectoproxy.toml: "file" is relative to the directory
    config = with_options("mock_api", file="mocks.json", hosts=["API.test"])
    with make_proxy(scripts=[script("mock_api")], config=config) as proxy, \
            proxy.client() as client:
        glob = client.get("https://api.test/v1/anything/at/all")
        put = client.put("https://api.test/v1/items/1", content=b"x")
        count = client.get("http://api.test/v1/count")
        unmocked = client.get(origin.url + "/v1/anything")  # not one of the mocked hosts
        tls_unmocked = client.put(tls_origin.url + "/v1/items/1", content=b"x")
    assert glob.json() == {"mocked": True}
    assert put.status_code == 204 and put.content == b""
    assert count.json() == 3
    assert unmocked.status_code == 404 and unmocked.text == "not found\n"  # the real origin
    assert tls_unmocked.status_code == 404
    assert [r.path for r in origin.requests] == ["/v1/anything"]
    assert [r.path for r in tls_origin.requests] == ["/v1/items/1"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('["GET /a"]', "expected a JSON object"),
    ('{"GET a": {}}', "'GET a'"),
    ('{"/a": {"status": 99}}', "status"),
    ('{"/a": {"headers": {"X": 1}}}', "headers"),
])
def test_mock_api_bad_file(make_proxy, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert_start_up_fails(make_proxy, "mock_api", message, file=str(path))


def test_mock_api_missing_file(make_proxy, tmp_path):
    assert_start_up_fails(make_proxy, "mock_api", "file: cannot read .*nope.json",
                          file=str(tmp_path / "nope.json"))


# -- block_hosts ---------------------------------------------------------------------------

BLOCKED = with_options("block_hosts", hosts=["blocked.test", "*.ads.test"], message="Nope.")


def raw_connect(proxy_port: int, target: str) -> bytes:
    """Send a CONNECT by hand and return everything the proxy answers before closing."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_block_hosts_plain_http(make_proxy, origin):
    with make_proxy(scripts=[script("block_hosts")], config=BLOCKED) as proxy, \
            proxy.client() as client:
        for url in ("http://blocked.test/", "http://BLOCKED.test./x", "http://ads.test/",
                    "http://a.b.ads.test:8080/pixel.gif"):
            response = client.get(url)
            assert response.status_code == 403, url
            assert response.headers["content-type"].startswith("text/plain")
            assert response.text.startswith("Nope. (")
        allowed = client.get(origin.url + "/")
    assert allowed.text == "hello from origin\n"


def test_block_hosts_refuses_connect(make_proxy, tls_origin):
    with make_proxy(scripts=[script("block_hosts")], config=BLOCKED) as proxy:
        answer = raw_connect(proxy.port, "tracker.ads.test:443")
        assert answer.startswith(b"HTTP/1.1 403 ")
        assert b"Nope. (tracker.ads.test)" in answer
        with proxy.client() as client:
            with pytest.raises(httpx.ProxyError, match="403"):
                client.get("https://blocked.test/")
            assert client.get(tls_origin.url + "/").text == "hello from origin\n"
        result = proxy.curl("https://blocked.test/")
        assert result.returncode != 0 and b"403" in result.stderr
    assert len(tls_origin.requests) == 1


def test_block_hosts_answers_a_post_whose_body_it_did_not_read(make_proxy):
    body = b"x" * 1_000_000
    with make_proxy(scripts=[script("block_hosts")], config=BLOCKED) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST http://blocked.test/upload HTTP/1.1\r\nHost: blocked.test\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.3)  # the proxy answers and closes meanwhile
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ")


def test_block_hosts_matching():
    module = load_script(Path(script("block_hosts")))
    module.set_hosts(["Exact.test", "*.wild.test"])
    assert module.is_blocked("exact.test") and module.is_blocked("EXACT.TEST.")
    assert not module.is_blocked("sub.exact.test")
    assert module.is_blocked("wild.test") and module.is_blocked("a.b.wild.test")
    assert not module.is_blocked("notwild.test") and not module.is_blocked("wild.test.evil")


def test_block_hosts_rejects_other_wildcards(make_proxy):
    assert_start_up_fails(make_proxy, "block_hosts", r"hosts: 'ads\.\*\.test'",
                          hosts=["ads.*.test"])


# -- redact_secrets ------------------------------------------------------------------------

TOKEN = "s3cr3t-t0ken-value"
SESSION = "abcdef123456"
SECRET_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Cookie": f"session={SESSION}; theme=dark"}
CARD = "4111 1111 1111 1111"
ORDER = "1234 5678 9012 3456"  # fails the Luhn check: not a card number


@pytest.mark.parametrize("tls", [False, True])
def test_redact_secrets_both_directions(make_proxy, origin, tls_origin, tls):
    server = tls_origin if tls else origin
    body = {"user": "bob", "password": "hunter2", "card": CARD, "order": ORDER}
    with make_proxy(scripts=[script("redact_secrets")]) as proxy, proxy.client() as client:
        response = client.post(server.url + "/echo", json=body, headers=SECRET_HEADERS)
    (received,) = server.requests
    # The request body was redacted before it left the proxy...
    sent = json.loads(received.body)
    assert sent == {"user": "bob", "password": "[REDACTED]", "card": "[REDACTED]",
                    "order": ORDER}
    # ...the credentials themselves still reach the origin (it needs them)...
    assert received.header("Authorization") == f"Bearer {TOKEN}"
    # ...and the origin's answer, which echoes them, is redacted on its way back.
    assert response.status_code == 200
    assert TOKEN not in response.text and SESSION not in response.text
    echoed = echo_headers(response)
    assert echoed["authorization"] == "Bearer [REDACTED]"
    assert echoed["cookie"] == "session=[REDACTED]; theme=dark"
    assert json.loads(response.json()["body"])["password"] == "[REDACTED]"
    assert int(response.headers["content-length"]) == len(response.content)


def test_redact_secrets_forms_text_and_large_bodies(make_proxy, origin):
    form = {"user": "bob", "password": "hunter2"}
    text = "log line\nAuthorization: Basic dXNlcjpwYXNz\ncard 5555-5555-5555-4444 paid\n"
    big = "x" * 200_000 + ' {"Password" : "late secret"} ' + CARD
    with make_proxy(scripts=[script("redact_secrets")]) as proxy, proxy.client() as client:
        client.post(origin.url + "/upload", data=form)
        client.post(origin.url + "/upload", content=text, headers={"Content-Type": "text/plain"})
        client.post(origin.url + "/upload", content=big.encode(),
                    headers={"Content-Type": "application/json"})
        client.post(origin.url + "/upload", content=CARD.encode(),
                    headers={"Content-Type": "application/octet-stream"})
    bodies = [r.body.decode() for r in origin.requests]
    assert bodies[0] == "user=bob&password=[REDACTED]"
    assert bodies[1] == "log line\nAuthorization: [REDACTED]\ncard [REDACTED] paid\n"
    assert bodies[2] == "x" * 200_000 + ' {"Password" : "[REDACTED]"} [REDACTED]'
    assert bodies[3] == CARD  # binary bodies are left alone


def test_redact_secrets_options(make_proxy, origin):
    config = with_options("redact_secrets", replacement="***", json_fields=["pin"],
                          cards=False, redact_request_headers=True, headers=["X-Api-Key"])
    with make_proxy(scripts=[script("redact_secrets")], config=config) as proxy, \
            proxy.client() as client:
        response = client.post(origin.url + "/echo",
                               json={"pin": "1234", "password": "kept", "card": CARD},
                               headers={"X-Api-Key": "key-1234567", **SECRET_HEADERS})
    (received,) = origin.requests
    assert json.loads(received.body) == {"pin": "***", "password": "kept", "card": CARD}
    assert received.header("X-Api-Key") == "***"
    assert received.header("Authorization") == f"Bearer {TOKEN}"  # not in `headers` any more
    assert "key-1234567" not in response.text


def test_redact_secrets_bad_option(make_proxy):
    assert_start_up_fails(make_proxy, "redact_secrets", "json_fields: expected a list",
                          json_fields="password")


# -- jsonl_log -----------------------------------------------------------------------------


def read_lines(path: Path, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def test_jsonl_log(make_proxy, origin, tls_origin, tmp_path):
    path = tmp_path / "logs" / "flows.jsonl"
    config = with_options("jsonl_log", path=str(path))
    with make_proxy(scripts=[script("jsonl_log")], config=config) as proxy, \
            proxy.client() as client:
        client.get(origin.url + "/bytes/1000")
        # Flushed line by line: the entry is there while the proxy still runs.
        (first,) = read_lines(path, 1)
        client.get(tls_origin.url + "/json")
        assert client.get(origin.url + "/close").status_code == 502
        module = proxy.proxy.hooks.infos["jsonl_log"].plugin
        assert not module._file.closed
        read_lines(path, 3)
    assert module._file is None  # closed in on_stop
    lines = {line["url"]: line for line in read_lines(path, 3)}
    assert len(lines) == 3 and first["url"] == origin.url + "/bytes/1000"

    ok = lines[origin.url + "/bytes/1000"]
    assert ok["method"] == "GET" and ok["status"] == 200 and ok["error"] is None
    assert ok["response_size"] == 1000
    assert ok["client"].startswith("127.0.0.1:")
    assert ok["server"] == f"127.0.0.1:{origin.port}"
    stamp = datetime.fromisoformat(ok["time"])
    assert ok["time"].endswith("Z") and stamp.utcoffset() == timedelta(0)
    assert abs(stamp.timestamp() - time.time()) < 60
    assert 0 <= ok["request_ms"] <= ok["duration_ms"]
    assert ok["wait_ms"] is not None and ok["response_ms"] is not None

    secure = lines[tls_origin.url + "/json"]
    assert secure["status"] == 200 and secure["response_size"] == len(b'{"hello": "world", "n": 1}')

    failed = lines[origin.url + "/close"]
    assert failed["status"] == 502 and "closed the connection" in failed["error"]


def test_jsonl_log_appends_and_defaults(make_proxy, origin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        with make_proxy(scripts=[script("jsonl_log")]) as proxy, proxy.client() as client:
            client.get(origin.url + "/")
            read_lines(tmp_path / "flows.jsonl", 1)
    assert [line["status"] for line in read_lines(tmp_path / "flows.jsonl", 2)] == [200, 200]


def test_jsonl_log_unopenable_path_fails_start_up(make_proxy, tmp_path):
    assert_start_up_fails(make_proxy, "jsonl_log", "jsonl_log.*path: cannot open",
                          path=str(tmp_path))  # a directory


def test_failed_start_up_releases_the_port(shared_certs_dir, tmp_path):
    config = proxy_config(shared_certs_dir, sections=with_options("jsonl_log", path=str(tmp_path)))
    proxy = Proxy(config, scripts=[script("jsonl_log")])

    async def start_and_probe() -> None:
        with pytest.raises(ConfigError):
            async with proxy:
                pass
        assert proxy.address[1] != 0  # it did listen before on_start failed
        with pytest.raises(OSError) as refused:
            with anyio.fail_after(5):
                stream = await anyio.connect_tcp(*proxy.address)
            await stream.aclose()
        assert not isinstance(refused.value, TimeoutError)

    anyio.run(start_and_probe)


def test_jsonl_log_request_size(make_proxy, origin, tmp_path):
    path = tmp_path / "flows.jsonl"
    with make_proxy(scripts=[script("jsonl_log")],
                    config=with_options("jsonl_log", path=str(path))) as proxy, \
            proxy.client() as client:
        client.post(origin.url + "/upload", content=b"x" * 1234)
        (line,) = read_lines(path, 1)
    assert line["request_size"] == 1234


# -- rewrite_html --------------------------------------------------------------------------

REWRITE = with_options("rewrite_html", banner="<p>BANNER</p>",
                       replace={"hello from origin": "hello from the proxy"})


def gzip_html_origin() -> RawServer:
    """An origin that answers every request with a gzip-encoded HTML page."""
    page = gzip.compress(HTML_BODY)

    def handler(sock: socket.socket) -> None:
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(page), page))

    return RawServer(handler)


def test_rewrite_html_plain_and_https(make_proxy, origin, tls_origin):
    with make_proxy(scripts=[script("rewrite_html")], config=REWRITE) as proxy, \
            proxy.client() as client:
        for url in (origin.url, tls_origin.url):
            response = client.get(url + "/html")
            assert "<body><p>BANNER</p><p>hello from the proxy</p></body>" in response.text
            assert int(response.headers["content-length"]) == len(response.content)
            # Other content types are left alone.
            assert client.get(url + "/").text == "hello from origin\n"
            assert client.get(url + "/json").json() == {"hello": "world", "n": 1}


def test_rewrite_html_gzip(make_proxy):
    with gzip_html_origin() as server, \
            make_proxy(scripts=[script("rewrite_html")], config=REWRITE) as proxy, \
            proxy.client() as client, client.stream("GET", server.url + "/") as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    page = gzip.decompress(raw).decode()
    assert "<body><p>BANNER</p><p>hello from the proxy</p></body>" in page


def test_rewrite_html_default_banner(make_proxy, origin):
    with make_proxy(scripts=[script("rewrite_html")]) as proxy, proxy.client() as client:
        text = client.get(origin.url + "/html").text
    assert '<body><div id="nectoproxy-banner"' in text and "hello from origin" in text


# -- hot reload ----------------------------------------------------------------------------


def test_reloaded_script_keeps_its_options(make_proxy, origin, tmp_path):
    path = tmp_path / "add_header.py"
    shutil.copy(script("add_header"), path)
    config = with_options("add_header", request_headers={"X-Team": "blue"})
    with make_proxy(scripts=[str(path)], config=config) as proxy, proxy.client() as client:
        assert echo_headers(client.get(origin.url + "/echo"))["x-team"] == "blue"
        before = proxy.proxy.hooks.infos["add_header"].plugin
        path.write_text(path.read_text() + "\n# edited\n")
        later = time.time() + 5
        os.utime(path, (later, later))
        deadline = time.monotonic() + 10
        while proxy.proxy.hooks.infos["add_header"].plugin is before:
            assert time.monotonic() < deadline, "the script was not reloaded"
            time.sleep(0.05)
        received = echo_headers(client.get(origin.url + "/echo"))
    assert received.get("x-team") == "blue"


# -- docs/plugins.md -----------------------------------------------------------------------


def doc_blocks(language: str) -> list[str]:
    text = PLUGINS_DOC.read_text()
    return [block.split("\n```", 1)[0] for block in text.split(f"```{language}\n")[1:]]


def test_docs_five_line_script(make_proxy, origin, tmp_path):
    hello = doc_blocks("python")[0]
    assert "async def on_request(flow" in hello and len(hello.strip().splitlines()) <= 6
    (tmp_path / "hello.py").write_text(hello)
    with make_proxy(scripts=[str(tmp_path / "hello.py")]) as proxy, proxy.client() as client:
        response = client.get("http://hello.test/")
        passed = client.get(origin.url + "/")
    assert response.text == "Hello from NectoProxy, 127.0.0.1!\n"
    assert passed.text == "hello from origin\n"


def test_docs_testing_examples(tmp_path):
    tests = next(block for block in doc_blocks("python") if "def test_script(" in block)
    tests = tests.replace('"examples/add_header.py"', repr(script("add_header")))
    (tmp_path / "test_from_docs.py").write_text(tests)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "test_from_docs.py"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert result.returncode == 0 and "3 passed" in result.stdout, result.stdout + result.stderr



def test_chunk_filter_that_changes_the_size_of_a_buffered_body(make_proxy, origin):
    class Doubler:
        name = "doubler"

        def on_response(self, flow):
            del flow.response.headers["Content-Length"]
            flow.response.chunk_filters.append(lambda chunk: chunk + chunk)

    with make_proxy(plugins=[Doubler()]) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/")
    assert response.text == "hello from origin\n" * 2
