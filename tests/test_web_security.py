"""The inspector's gate over real sockets: the token (header, cookie, ?token= for pages and the
event socket), the Host check against DNS rebinding, same-origin only, no CORS, and nothing of
the NectoProxy home directory served."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_support import TOKEN, WebServer, WsClient

from nectoproxy.web.security import split_authority


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebServer]:
    with WebServer(tmp_path, allowed_hosts=["inspector.test", "fixed.test:8000"]) as server:
        yield server


@pytest.fixture
def anonymous(web: WebServer) -> Iterator[httpx.Client]:
    with web.client(token=None) as client:
        yield client


def _every_request(web: WebServer) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every HTTP operation of the OpenAPI document."""
    with web.client() as client:
        doc = client.get("/api/openapi.json").json()
    flow_id = "a" * 32
    for template, operations in doc["paths"].items():
        path = (template.replace("{id}", flow_id if "traffic" in template else "1")
                .replace("{sessionId}", "1"))
        for method in operations:
            if template != "/api/events":
                yield method.upper(), path


def test_every_route_but_health_needs_the_token(web: WebServer,
                                                anonymous: httpx.Client) -> None:
    requests = list(_every_request(web))
    assert len(requests) > 25
    for method, path in requests:
        if path == "/api/health":
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Cookie": "nectoproxy_token=no"}):
            response = anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert "token" in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.get("/api/health").json() == {"status": "ok"}
    assert anonymous.get("/api/traffic", params={"token": TOKEN}).status_code == 401  # pages only
    assert anonymous.get("/api/traffic",
                         headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_page_visit_with_token_sets_the_cookie_and_redirects(web: WebServer,
                                                             anonymous: httpx.Client) -> None:
    response = anonymous.get("/", params={"token": TOKEN, "tab": "flows", "q": "a b"})
    assert response.status_code == 303
    assert response.headers["location"] == "/?tab=flows&q=a+b"
    cookie = response.headers["set-cookie"]
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == f"nectoproxy_token={TOKEN}"
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(parts)
    assert not any(p.lower().startswith(("domain", "expires", "max-age")) for p in parts)
    # httpx keeps the cookie: from now on this client is let in without a header.
    assert anonymous.get("/api/sessions").status_code == 200
    assert anonymous.get("/").status_code == 200
    with web.client(token=None) as stranger:
        bad = stranger.get("/", params={"token": "guess"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        assert stranger.get("/", params={"token": TOKEN}).headers["location"] == "/"


@pytest.mark.parametrize("host", [
    "localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.1.2.3", "[::1]", "0.0.0.0",
    "inspector.test", "Inspector.Test", "inspector.test:1234", "fixed.test:8000",
])
def test_hosts_of_this_machine_are_served(web: WebServer, host: str) -> None:
    authority = host if ":" in host.replace("[::1]", "") else f"{host}:{web.port}"
    with web.client(headers={"Host": authority}) as client:
        assert client.get("/api/sessions").status_code == 200, host
        assert client.get("/api/health").status_code == 200, host


def test_the_machines_own_name_and_address_are_served(web: WebServer) -> None:
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    for host in [name, *sorted(addresses)]:
        with web.client(headers={"Host": f"{host}:{web.port}"}) as client:
            assert client.get("/api/sessions").status_code == 200, host


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:8889", "localhost.evil.example", "127.0.0.1.evil.example",
    "fixed.test:8001", "fixed.test", "10.255.255.1", "[2001:db8::1]", "", "a:b:c:d:e", "[::1",
    "host:99999",
])
def test_foreign_hosts_are_refused(web: WebServer, host: str) -> None:
    with web.client(headers={"Host": host}) as client:
        for path in ("/api/sessions", "/api/health", "/"):
            response = client.get(path)
            assert response.status_code == 403, (host, path)
            assert "error" in response.json()


def test_cross_origin_requests_are_refused_and_no_cors_is_sent(web: WebServer) -> None:
    own = f"http://127.0.0.1:{web.port}"
    with web.client() as client:
        assert client.post("/api/sessions", json={"name": "x"},
                           headers={"Origin": own}).status_code == 201
        for origin in ("http://evil.example", f"http://localhost:{web.port}",
                       "http://127.0.0.1:3000", f"https://127.0.0.1:{web.port}", "null",
                       "file://", "http://fixed.test:8001"):
            response = client.post("/api/sessions", json={"name": "x"},
                                   headers={"Origin": origin})
            assert response.status_code == 403, origin
        assert client.get("/api/sessions", headers={
            "Origin": "http://inspector.test:5173"}).status_code == 200  # an allowed name
        preflight = client.options("/api/sessions", headers={
            "Origin": own, "Access-Control-Request-Method": "DELETE"})
        for response in (preflight, client.get("/api/sessions", headers={"Origin": own}),
                         client.get("/api/sessions")):
            assert not [k for k in response.headers if k.lower().startswith("access-control")]


def test_security_headers_on_every_answer(web: WebServer, anonymous: httpx.Client) -> None:
    with web.client() as client:
        answers = [client.get("/api/sessions"), client.get("/"), anonymous.get("/api/traffic"),
                   client.get("/api/nothing-here")]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "no-store" in response.headers["cache-control"]
        assert "server" not in response.headers


def test_nothing_under_the_home_directory_is_served(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "certs").mkdir(parents=True)
    secret = "-----BEGIN PRIVATE KEY----- do-not-serve"
    (home / "certs" / "ca-key.pem").write_text(secret)
    (home / "web-token").write_text(TOKEN)
    with WebServer(home) as web, web.client() as client:
        for path in ("/certs/ca-key.pem", "/ca-key.pem", "/web-token", "/flows.db",
                     "/static/../certs/ca-key.pem", "/api/../certs/ca-key.pem",
                     "/%2e%2e/certs/ca-key.pem", "/api/certificates/ca/key",
                     "/api/traffic/..%2f..%2fcerts%2fca-key.pem"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "PRIVATE KEY" not in response.text and TOKEN not in response.text


def _ws(web: WebServer, target: str = "/api/events", **kwargs: Any) -> WsClient:
    return WsClient(web.port, target, **kwargs)


def test_event_socket_token_host_and_origin(web: WebServer) -> None:
    with _ws(web) as refused:
        assert refused.rejected is not None and refused.rejected.status_code == 401
    with _ws(web, "/api/events?token=wrong") as refused:
        assert refused.rejected is not None and refused.rejected.status_code == 401
    accepted: list[WsClient] = [
        _ws(web, f"/api/events?token={TOKEN}"),
        _ws(web, headers=[("Authorization", f"Bearer {TOKEN}")]),
        _ws(web, headers=[("Cookie", f"nectoproxy_token={TOKEN}")]),
        _ws(web, f"/api/events?token={TOKEN}",
            headers=[("Origin", f"http://127.0.0.1:{web.port}")]),
    ]
    for client in accepted:
        with client:
            assert client.rejected is None
            first = client.message()
            assert first is not None and first["type"] == "sessions"
    for kwargs in ({"headers": [("Origin", "http://evil.example")]},
                   {"headers": [("Origin", f"http://localhost:{web.port}")]},
                   {"host": f"evil.example:{web.port}"}):
        with _ws(web, f"/api/events?token={TOKEN}", **kwargs) as refused:
            assert refused.rejected is not None, kwargs
            assert refused.rejected.status_code == 403, kwargs
            assert b"error" in refused.reject_body


def test_split_authority() -> None:
    assert split_authority("Example.COM.:80") == ("example.com", 80)
    assert split_authority("[::1]:8889") == ("::1", 8889)
    assert split_authority("::1") == ("::1", None)
    assert split_authority("localhost") == ("localhost", None)
    for bad in ("", ":80", "host:", "host:x", "[::1", "[::1]x", "host:70000"):
        assert split_authority(bad) is None, bad


def test_create_app_refuses_an_empty_token(tmp_path: Path) -> None:
    from nectoproxy.store import SQLiteStore
    from nectoproxy.web import create_app

    with SQLiteStore(tmp_path / "s.db") as store:
        with pytest.raises(ValueError, match="token"):
            create_app(store, token="")
        with pytest.raises(ValueError, match="allowed_hosts"):
            create_app(store, token="t", allowed_hosts=["bad host:x"])
