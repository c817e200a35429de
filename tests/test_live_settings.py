"""Live settings through the inspector's API, on a real ``nectoproxy`` process: rules, the
network profile and pass-through hosts are changed over HTTP and apply to the next request
(in every worker process), survive a restart, and refuse bad values with a 400."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_support import WsClient

from nectoproxy.testing.command import NectoProxyCommand, run_nectoproxy
from nectoproxy.testing.origin import free_port

#: What "applied within a second" is measured against (the API answered before the clock).
APPLIED_WITHIN = 1.0


class Running:
    def __init__(self, command: NectoProxyCommand) -> None:
        self.command = command
        self.process = command.process
        self.port = command.port
        self.web_port = command.web_port
        self.token = command.token

    def api(self) -> httpx.Client:
        return self.command.api()

    def get(self, url: str) -> httpx.Response:
        """A request through the proxy on a new connection."""
        with self.command.client() as client:
            return client.get(url)

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "--noproxy", "", "--proxy",
                               f"http://127.0.0.1:{self.port}", *args],
                              capture_output=True, text=True, timeout=30, check=False)


def config_text(*, workers: int = 1, rules: bool = True, throttle: bool = True,
                extra: str = "") -> str:
    """nectoproxy.toml: the installed rules and throttle plugins, no other entry point."""
    others = sorted({ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")}
                    - {"rules", "throttle"})
    text = (f"[proxy]\nworkers = {workers}\n\n[plugins]\nentry_points = true\n"
            f"disable = {json.dumps(others)}\n\n")
    if rules:
        text += "[plugins.rules]\n\n"
    if throttle:
        text += "[plugins.throttle]\n\n"
    return text + extra


@contextmanager
def nectoproxy(home: Path, config: str | None = None, *, workers: int = 1) -> Iterator[Running]:
    path = home / "nectoproxy.toml"
    path.write_text(config if config is not None else config_text(workers=workers))
    port = free_port()
    with run_nectoproxy("--config", str(path), "-q", "--listen-host", "127.0.0.1",
                        "--listen-port", str(port), "--web-port", "0", home=home) as command:
        assert command.web_port, command.output()
        if workers > 1:
            assert wait_for(lambda: listeners(port) == workers, 30), "the workers never listened"
        yield Running(command)


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (one per worker process: SO_REUSEPORT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            count += 1
    return count


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def mock(name: str, url: str, body: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "mock": {"body": body}, **more}


def answered_within(running: Running, url: str, body: str, seconds: float) -> float:
    """Seconds until a request through the proxy is answered with ``body`` (fails after
    ``seconds``)."""
    started = time.monotonic()
    while True:
        if running.get(url).text == body:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"not answered with {body!r} in {seconds} s"


# -- rules ------------------------------------------------------------------------------------


def test_a_mock_rule_made_through_the_api_answers_at_once_and_after_a_restart(
        tmp_path: Path, origin: Any) -> None:
    url = origin.url + "/mocked/thing"
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        assert proxy.get(url).status_code == 404  # the origin's own answer
        created = api.post("/api/rules", json=mock("hello", origin.url + "/mocked/*",
                                                    "mocked by the API\n"))
        assert created.status_code == 201, created.text
        assert created.json()["id"] == "hello"
        took = answered_within(proxy, url, "mocked by the API\n", APPLIED_WITHIN)
        result = proxy.curl(url)  # and curl, the next client, too
        assert result.stdout == "mocked by the API\n", result.stderr
        listing = api.get("/api/rules").json()
        assert [r["id"] for r in listing["rules"]] == ["hello"]
        assert listing["file"] == str(tmp_path / "rules.toml")
    assert took < APPLIED_WITHIN
    assert "hello" in (tmp_path / "rules.toml").read_text()
    with nectoproxy(tmp_path) as again, again.api() as api:
        assert again.curl(url).stdout == "mocked by the API\n"
        assert api.get("/api/rules/hello").json()["mock"] == {"body": "mocked by the API\n"}


def test_disabling_reordering_editing_and_deleting_apply(tmp_path: Path, origin: Any) -> None:
    url = origin.url + "/which"
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        for name in ("first", "second"):
            assert api.post("/api/rules", json=mock(name, url, name)).status_code == 201
        assert proxy.get(url).text == "first"  # equal priority: file order
        assert api.post("/api/rules/reorder", json={"ids": ["second", "first"]}).json()[
            "rules"][0]["id"] == "second"
        answered_within(proxy, url, "second", APPLIED_WITHIN)
        changed = api.patch("/api/rules/second", json={"enabled": False})
        assert changed.status_code == 200 and changed.json()["enabled"] is False
        answered_within(proxy, url, "first", APPLIED_WITHIN)
        toggled = api.post("/api/rules/second/toggle")
        assert toggled.json()["enabled"] is True
        answered_within(proxy, url, "second", APPLIED_WITHIN)
        replaced = api.put("/api/rules/second", json=mock("second", url, "edited",
                                                          priority=5))
        assert replaced.status_code == 200, replaced.text
        answered_within(proxy, url, "edited", APPLIED_WITHIN)
        renamed = api.patch("/api/rules/second", json={"name": "renamed"})
        assert renamed.json()["id"] == "renamed"
        assert api.get("/api/rules/second").status_code == 404
        assert api.delete("/api/rules/renamed").json() == {"deleted": "renamed"}
        answered_within(proxy, url, "first", APPLIED_WITHIN)
        assert api.delete("/api/rules/first").status_code == 200
        assert wait_for(lambda: proxy.get(url).status_code == 404, APPLIED_WITHIN)
        assert api.get("/api/rules").json()["rules"] == []
        assert api.delete("/api/rules/first").status_code == 404


def test_every_worker_process_applies_a_change(tmp_path: Path, origin: Any,
                                               tls_origin: Any) -> None:
    url = origin.url + "/everywhere"
    tls = ("--cacert", tls_origin.ca_pem_path, f"https://localhost:{tls_origin.port}/json")
    with nectoproxy(tmp_path, workers=2) as proxy, proxy.api() as api:
        for _ in range(10):  # both workers have looked at the (missing) rules file just now
            assert proxy.get(url).status_code == 404
        assert api.post("/api/rules", json=mock("all", url, "one")).status_code == 201
        changed = time.monotonic()
        time.sleep(max(0.0, changed + APPLIED_WITHIN - time.monotonic()))
        answers = [proxy.get(url).text for _ in range(20)]  # a new connection each
        assert answers == ["one"] * 20
        assert api.patch("/api/rules/all", json={"mock": {"body": "two"}}).status_code == 200
        time.sleep(APPLIED_WITHIN)
        assert [proxy.get(url).text for _ in range(20)] == ["two"] * 20
        assert api.delete("/api/rules/all").status_code == 200
        time.sleep(APPLIED_WITHIN)
        assert [proxy.get(url).status_code for _ in range(20)] == [404] * 20
        # The pass-through hosts too (the built-in plugin watches its file in each worker).
        assert {proxy.curl(*tls).returncode for _ in range(10)} == {60}
        assert api.put("/api/settings/passthrough", json={"hosts": ["localhost"]}).is_success
        time.sleep(APPLIED_WITHIN)
        assert {proxy.curl(*tls).returncode for _ in range(20)} == {0}


def test_rules_of_nectoproxy_toml_are_shown_read_only(tmp_path: Path, origin: Any) -> None:
    config = config_text(rules=False) + (
        '[plugins.rules]\n\n[[plugins.rules.rule]]\nname = "from config"\n'
        f'url = "{origin.url}/configured"\nmock = {{ body = "configured" }}\n')
    with nectoproxy(tmp_path, config) as proxy, proxy.api() as api:
        listing = api.get("/api/rules").json()
        assert listing["rules"] == []
        assert listing["configured"][0]["id"] == "from config"
        assert listing["configured"][0]["readOnly"] is True
        refused = api.patch("/api/rules/from config", json={"enabled": False})
        assert refused.status_code == 409 and "nectoproxy.toml" in refused.json()["error"]
        clash = api.post("/api/rules", json=mock("from config", origin.url + "/x", "x"))
        assert clash.status_code == 400 and "already used" in clash.json()["error"]
        assert proxy.get(origin.url + "/configured").text == "configured"


# -- the network profile ----------------------------------------------------------------------


def download_seconds(proxy: Running, url: str) -> float:
    started = time.monotonic()
    response = proxy.get(url)
    assert response.status_code == 200 and len(response.content) == 200_000
    return time.monotonic() - started


def test_the_network_profile_set_through_the_api_slows_a_download(tmp_path: Path,
                                                                    origin: Any) -> None:
    url = origin.url + "/bytes/200000"
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        assert download_seconds(proxy, url) < 0.5
        value = {"profile": "dial-up", "profiles": {"dial-up": {"download_bps": 100_000}}}
        put = api.put("/api/settings/throttle", json=value)
        assert put.status_code == 200, put.text
        assert put.json()["source"] == "inspector"
        assert put.json()["profile"] == "dial-up"
        assert 1.6 < download_seconds(proxy, url) < 4.0  # 200 kB at 100 kB/s
        assert api.put("/api/settings/throttle", json={"profile": "none"}).status_code == 200
        assert download_seconds(proxy, url) < 0.5
        api.put("/api/settings/throttle", json=value)
    with nectoproxy(tmp_path) as again, again.api() as api:
        assert api.get("/api/settings/throttle").json()["profile"] == "dial-up"
        assert download_seconds(again, url) > 1.6


# -- pass-through hosts -----------------------------------------------------------------------


def test_a_pass_through_host_added_through_the_api_is_relayed_untouched(
        tmp_path: Path, tls_origin: Any) -> None:
    url = f"https://localhost:{tls_origin.port}/json"
    trust_the_origin_only = ("--cacert", tls_origin.ca_pem_path, url)
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        intercepted = proxy.curl(*trust_the_origin_only)
        assert intercepted.returncode == 60, intercepted  # the proxy's certificate
        put = api.put("/api/settings/passthrough", json={"hosts": ["LOCALHOST"]})
        assert put.status_code == 200, put.text
        assert put.json()["hosts"] == ["localhost"]
        relayed = proxy.curl(*trust_the_origin_only)  # the next CONNECT
        assert relayed.returncode == 0, relayed.stderr
        assert json.loads(relayed.stdout) == {"hello": "world", "n": 1}
        verbose = proxy.curl("-v", "-o", "/dev/null", *trust_the_origin_only).stderr
        assert re.search(r"issuer: .*trustme", verbose), verbose  # the origin's certificate
    assert "localhost" in (tmp_path / "passthrough.toml").read_text()
    with nectoproxy(tmp_path) as again, again.api() as api:
        assert again.curl(*trust_the_origin_only).returncode == 0
        value = api.get("/api/settings/passthrough").json()
        assert value["hosts"] == ["localhost"] and value["configured"] == []
        assert api.put("/api/settings/passthrough", json={"hosts": []}).status_code == 200
        assert again.curl(*trust_the_origin_only).returncode == 60


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "field", "words"), [
    # (a new rule comes after the one the test makes first: rules[1])
    ("POST", "/api/rules", {"name": "x", "mock": {"stauts": 500}}, "rules[1]",
     "rules[1] (name 'x'): mock: unknown key 'stauts'"),
    ("POST", "/api/rules", {"name": "x"}, "rules[1]", "no action"),
    ("POST", "/api/rules", {"name": "x", "mock": {"body": None}}, "rules[1].mock.body",
     "null"),
    ("POST", "/api/rules", {"name": "x", "url": "/(/", "block": True}, "rules[1]", "url"),
    ("POST", "/api/rules", {"name": "kept", "block": True}, "rules[1]", "already used"),
    ("PUT", "/api/settings/rules", {"rules": "all of them"}, "rules", "expected a list"),
    ("PUT", "/api/settings/rules", {"rules": [], "extra": 1}, "extra", "unknown key"),
    ("PUT", "/api/settings/throttle", {"profile": "warp speed"}, "profile",
     "unknown profile 'warp speed'"),
    ("PUT", "/api/settings/throttle", {"profiles": {"p": {"loss": 2}}}, "profiles.p.loss",
     "expected a number from 0 to 1"),
    ("PUT", "/api/settings/passthrough", {"hosts": ["ok.test", 3]}, "hosts[1]",
     "expected a host name"),
    ("PUT", "/api/settings/passthrough", {"hosts": ["a b"]}, "hosts[0]", "not a host name"),
    ("POST", "/api/rules/reorder", {"ids": ["nope"]}, "ids", "unknown: nope"),
])
def test_invalid_settings_are_400_and_change_nothing(tmp_path: Path, origin: Any, method: str,
                                                     path: str, body: Any, field: str,
                                                     words: str) -> None:
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        api.post("/api/rules", json=mock("kept", origin.url + "/kept", "kept"))
        api.put("/api/settings/passthrough", json={"hosts": ["kept.test"]})
        files = {name: (tmp_path / name).read_bytes()
                 for name in ("rules.toml", "passthrough.toml")}
        before = {name: api.get(f"/api/settings/{name}").json()
                  for name in ("rules", "throttle", "passthrough")}
        refused = api.request(method, path, json=body)
        assert refused.status_code == 400, refused.text
        assert words in refused.json()["error"]
        assert refused.json()["field"] == field
        after = {name: api.get(f"/api/settings/{name}").json()
                 for name in ("rules", "throttle", "passthrough")}
        assert after == before
        assert not (tmp_path / "throttle.toml").exists()
        for name, data in files.items():
            assert (tmp_path / name).read_bytes() == data
        assert proxy.get(origin.url + "/kept").text == "kept"


def test_without_the_plugins_their_settings_do_not_appear(tmp_path: Path) -> None:
    config = config_text(rules=False, throttle=False)
    with nectoproxy(tmp_path, config) as proxy, proxy.api() as api:
        listing = api.get("/api/settings").json()
        assert sorted(s["name"] for s in listing["settings"]) == ["breakpoints", "passthrough"]
        assert "[plugins.rules]" in listing["unavailable"]["rules"]
        assert "[plugins.throttle]" in listing["unavailable"]["throttle"]
        missing = api.get("/api/rules")
        assert missing.status_code == 404
        assert "pip install nectoproxy-plugin-rules" in missing.json()["error"]
        assert api.put("/api/settings/throttle", json={}).status_code == 404
        assert api.get("/api/settings/nothing").status_code == 404


# -- the API's description and the event socket ---------------------------------------------


def test_changes_are_announced_on_the_event_socket(tmp_path: Path, origin: Any) -> None:
    with nectoproxy(tmp_path) as proxy, proxy.api() as api:
        listing = api.get("/api/settings").json()
        assert {s["name"] for s in listing["settings"]} == {"rules", "throttle", "passthrough",
                                                            "breakpoints"}
        assert listing["unavailable"] == {}
        for entry in listing["settings"]:
            assert entry["schema"]["type"] == "object" and entry["title"]
        paths = api.get("/api/openapi.json").json()["paths"]
        assert {"get", "post"} <= set(paths["/api/rules"])
        assert {"put", "patch", "delete"} <= set(paths["/api/rules/{id}"])
        assert "put" in paths["/api/settings/{name}"]
        with WsClient(proxy.web_port, f"/api/events?token={proxy.token}") as events:
            events.messages_until(lambda m: m["type"] == "sessions")
            api.put("/api/settings/passthrough", json={"hosts": ["a.test"]})
            api.post("/api/rules", json=mock("r", origin.url + "/r", "r"))
            got = events.messages_until(lambda m: m == {"type": "settings", "name": "rules"},
                                        timeout=5)
            assert {"type": "settings", "name": "passthrough"} in got
