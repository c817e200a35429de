"""The pieces of live settings without a proxy process: the registry and its hook, files
written atomically and watched, the pass-through hosts' checks, the merge patch of
``PATCH /api/rules/{id}``, and the API over a provider of our own (real sockets: ``serve_web``
on 127.0.0.1)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_support import TOKEN, WebServer, WsClient

from nectoproxy.config import config_from_dict
from nectoproxy.passthrough import LivePassthrough, PassthroughSettings, check_hosts
from nectoproxy.plugins import PluginHost
from nectoproxy.settings import (
    FileWatch,
    SettingsError,
    SettingsProvider,
    SettingsRegistry,
    write_atomically,
)
from nectoproxy.web import create_app
from nectoproxy.web.rulesapi import merge_patch


class Colour:
    """A provider of our own: ``{"colour": "red" | "green"}``, kept in memory."""

    name = "colour"
    title = "Colour"
    description = "A colour."

    def __init__(self) -> None:
        self.schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}}}
        self.value = {"colour": "red"}
        self.puts = 0

    def get(self) -> dict[str, Any]:
        return dict(self.value)

    def put(self, value: Any) -> dict[str, Any]:
        if value.get("colour") not in ("red", "green"):
            raise SettingsError(f"colour: expected red or green, got {value.get('colour')!r}",
                                "colour")
        self.puts += 1
        self.value = {"colour": value["colour"]}
        return self.get()


class Offers:
    name = "offers"

    def __init__(self, *providers: object) -> None:
        self.providers = list(providers)

    def on_settings(self) -> list[Any]:
        return self.providers


class Broken:
    name = "broken"

    def on_settings(self) -> list[Any]:
        raise RuntimeError("no settings today")


def test_the_registry_collects_providers_through_the_hook(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    host = PluginHost(config_from_dict({"plugins": {"entry_points": False}}))
    colour = Colour()
    host.load(objects=[Offers(colour), Broken(), Offers("not a provider")])
    registry = SettingsRegistry()
    with caplog.at_level(logging.ERROR, logger="nectoproxy.plugins"):
        registry.collect(host)
    assert registry.get("colour") is colour
    assert "passthrough" in registry.providers  # the built-in
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'broken'" in messages and "no settings today" in messages
    assert "not a SettingsProvider" in messages


def test_names_must_be_fit_for_a_url_and_unique() -> None:
    registry = SettingsRegistry([Colour()])
    with pytest.raises(ValueError, match="already taken"):
        registry.add(Colour())
    bad = Colour()
    bad.name = "Bad Name"
    with pytest.raises(ValueError, match="lower-case"):
        registry.add(bad)
    assert isinstance(Colour(), SettingsProvider)


def test_changes_are_remembered_in_order() -> None:
    registry = SettingsRegistry([Colour()])
    start = registry.version
    registry.changed("colour")
    registry.changed("other")
    assert [name for _, name in registry.changes_since(start)] == ["colour", "other"]
    assert registry.changes_since(registry.version) == []


def test_a_file_written_atomically_is_seen_by_its_watch(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "settings.toml"
    watch = FileWatch(path, interval=0.05)
    assert not watch.due()  # missing, and still missing
    write_atomically(path, "a = 1\n")
    time.sleep(0.06)
    assert watch.due()
    assert path.read_text() == "a = 1\n"
    assert os.stat(path).st_mode & 0o077 == 0  # owner-only
    write_atomically(path, "a = 2\n")  # same size, maybe the same mtime: a new inode
    assert not watch.due()  # looked at less than an interval ago
    time.sleep(0.06)
    assert watch.due() and not watch.due()
    write_atomically(path, "a = 3\n")
    watch.seen()  # this process wrote it
    time.sleep(0.06)
    assert not watch.due()
    assert [p.name for p in path.parent.iterdir()] == ["settings.toml"]  # no temporary left


def test_readers_never_see_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    versions = [f"x = \"{c * 200_000}\"\n" for c in "abcd"]
    write_atomically(path, versions[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(20):
        for text in versions:
            write_atomically(path, text)
    stop.set()
    reader.join()
    assert seen <= set(versions)


@pytest.mark.parametrize(("hosts", "expected"), [
    (["Bank.Example.", "*.apple.com", "10.0.0.1", "::1", "bank.example"],
     ["bank.example", "*.apple.com", "10.0.0.1", "::1"]),
    ([], []),
])
def test_pass_through_hosts_are_normalised(hosts: list[str], expected: list[str]) -> None:
    assert check_hosts(hosts) == expected


@pytest.mark.parametrize(("hosts", "field"), [
    ("bank.example", "hosts"), ([""], "hosts[0]"), (["ok", "a/b"], "hosts[1]"), ([None], "hosts[0]"),
])
def test_bad_pass_through_hosts_name_the_field(hosts: Any, field: str) -> None:
    with pytest.raises(SettingsError) as info:
        check_hosts(hosts)
    assert info.value.field == field and info.value.message.startswith(field)


def test_pass_through_hosts_are_saved_and_read_back(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NECTOPROXY_HOME", str(tmp_path))
    config = config_from_dict({"proxy": {"passthrough": ["static.test"]}})
    plugin = LivePassthrough(config)
    settings = PassthroughSettings(plugin)
    assert settings.get()["hosts"] == [] and settings.get()["configured"] == ["static.test"]
    saved = settings.put({**settings.get(), "hosts": ["*.Live.test"]})
    assert saved["hosts"] == ["*.live.test"] and plugin.hosts == ("*.live.test",)
    assert LivePassthrough(config).hosts == ("*.live.test",)  # a restart, or another worker
    (tmp_path / "passthrough.toml").write_text("hosts = [1]\n")  # broken by hand
    assert "hosts[0]" in settings.get()["error"]
    with pytest.raises(SettingsError, match="unknown key"):
        settings.put({"hosts": [], "colour": "red"})


def test_merge_patch() -> None:
    rule = {"name": "a", "mock": {"status": 200, "body": "x"}, "enabled": True}
    assert merge_patch(rule, {"enabled": False}) == {**rule, "enabled": False}
    assert merge_patch(rule, {"mock": {"body": None, "status": 201}}) == {
        "name": "a", "mock": {"status": 201}, "enabled": True}
    assert merge_patch(rule, {"mock": "replaced"})["mock"] == "replaced"
    assert "enabled" not in merge_patch(rule, {"enabled": None})


# -- the API over our own provider ------------------------------------------------------------


@pytest.fixture
def colour() -> Colour:
    return Colour()


@pytest.fixture
def web(tmp_path: Path, colour: Colour) -> Iterator[WebServer]:
    server = WebServer(tmp_path)
    server.app = create_app(server.store, token=TOKEN, settings=SettingsRegistry([colour]))
    with server:
        yield server


def test_the_api_serves_any_provider(web: WebServer, colour: Colour) -> None:
    with web.client() as api:
        listing = api.get("/api/settings").json()
        assert listing["settings"] == [{"name": "colour", "title": "Colour",
                                        "description": "A colour.", "schema": colour.schema,
                                        "value": {"colour": "red"}}]
        assert set(listing["unavailable"]) == {"rules", "throttle", "passthrough"}
        with WsClient(web.port, f"/api/events?token={TOKEN}") as events:
            events.messages_until(lambda m: m["type"] == "sessions")
            assert api.put("/api/settings/colour", json={"colour": "green"}).json() == {
                "colour": "green"}
            events.messages_until(lambda m: m == {"type": "settings", "name": "colour"},
                                  timeout=5)
        refused = api.put("/api/settings/colour", json={"colour": "blue"})
        assert refused.status_code == 400
        assert refused.json() == {"error": "colour: expected red or green, got 'blue'",
                                  "field": "colour"}
        assert api.get("/api/settings/colour").json() == {"colour": "green"}
        assert colour.puts == 1
        assert api.put("/api/settings/colour", content=b"[1]").status_code == 400
        assert api.get("/api/rules").status_code == 404
        assert httpx.get(web.url + "/api/settings", trust_env=False).status_code == 401


def test_the_openapi_document_describes_the_settings_routes(web: WebServer) -> None:
    with web.client() as api:
        doc = api.get("/api/openapi.json").json()
    paths = doc["paths"]
    assert set(paths["/api/settings/{name}"]) == {"get", "put"}
    assert set(paths["/api/rules/{id}"]) == {"get", "put", "patch", "delete"}
    assert set(paths["/api/rules/reorder"]) == {"post"}
    ours = {path: ops for path, ops in paths.items()
            if path.startswith(("/api/settings", "/api/rules"))}
    assert len(ours) == 6
    ids = [op["operationId"] for ops in ours.values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    others = {op["operationId"] for path, ops in paths.items() if path not in ours
              for op in ops.values()}
    assert not others & set(ids)
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate({**doc, "paths": ours})


def test_the_plugin_example_of_docs_api_md_works(make_proxy: Any, origin: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    section = text.split("### Offering settings from a plugin", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/api.md", "exec"), namespace)  # noqa: S102 - our docs
    monkeypatch.setenv("NECTOPROXY_HOME", str(tmp_path))
    plugin = namespace["GreetingPlugin"]()
    with make_proxy(plugins=[plugin]) as proxy, proxy.client() as client:
        registry = SettingsRegistry()
        registry.collect(proxy.proxy.hooks)
        greeting = registry.get("greeting")
        assert greeting is not None
        assert client.get(origin.url + "/").headers["x-greeting"] == "hello"
        assert greeting.put({"text": "hi"}) == {"text": "hi"}
        assert client.get(origin.url + "/").headers["x-greeting"] == "hi"
        with pytest.raises(SettingsError):
            greeting.put({"text": 3})
        write_atomically(tmp_path / "greeting.txt", "from another worker")
        time.sleep(0.3)
        assert client.get(origin.url + "/").headers["x-greeting"] == "from another worker"


class FakeRules:
    """A ``rules`` provider that keeps the list as given (names are all it checks)."""

    name = "rules"
    title = "Rules"
    description = "Rules, kept in memory."

    def __init__(self) -> None:
        self.schema: dict[str, Any] = {"type": "object"}
        self.value: dict[str, Any] = {"rules": [], "configured": [{"block": True}],
                                      "file": "/nowhere/rules.toml"}

    def get(self) -> dict[str, Any]:
        return {**self.value, "rules": [dict(r) for r in self.value["rules"]]}

    def put(self, value: Any) -> dict[str, Any]:
        names = [r.get("name") for r in value["rules"]]
        if len(set(names)) != len(names):
            raise SettingsError("rules: names must be unique", "rules")
        self.value = {**self.value, "rules": value["rules"]}
        self.value.pop("error", None)
        return self.get()


@pytest.fixture
def rules_web(tmp_path: Path) -> Iterator[tuple[WebServer, FakeRules]]:
    rules = FakeRules()
    server = WebServer(tmp_path)
    server.app = create_app(server.store, token=TOKEN, settings=SettingsRegistry([rules]))
    with server:
        yield server, rules


def test_the_rules_endpoints_edit_the_list(rules_web: tuple[WebServer, FakeRules]) -> None:
    web, rules = rules_web
    with web.client() as api:
        for name in ("a", "b"):
            assert api.post("/api/rules", json={"name": name, "block": True}).status_code == 201
        first = api.post("/api/rules", json={"name": "first", "block": True, "index": 0,
                                             "id": "ignored", "readOnly": False})
        assert first.json() == {"id": "first", "name": "first", "block": True}
        assert [r["name"] for r in rules.value["rules"]] == ["first", "a", "b"]
        listing = api.get("/api/rules").json()
        assert listing["configured"] == [{"id": "rule 1", "block": True, "readOnly": True}]
        assert api.patch("/api/rules/rule 1", json={"block": False}).status_code == 409
        assert api.get("/api/rules/rule 1").json()["readOnly"] is True
        patched = api.patch("/api/rules/a", json={"block": None, "mock": {"body": "x"}})
        assert patched.json() == {"id": "a", "name": "a", "mock": {"body": "x"}}
        assert api.post("/api/rules/a/toggle").json()["enabled"] is False
        assert api.post("/api/rules/a/toggle").json()["enabled"] is True
        assert api.put("/api/rules/b", json={"block": True, "priority": 3}).json() == {
            "id": "b", "name": "b", "block": True, "priority": 3}
        clash = api.put("/api/rules/b", json={"name": "a", "block": True})
        assert clash.status_code == 400 and clash.json()["field"] == "rules"
        reordered = api.post("/api/rules/reorder", json={"ids": ["b", "a", "first"]})
        assert [r["id"] for r in reordered.json()["rules"]] == ["b", "a", "first"]
        bad = api.post("/api/rules/reorder", json={"ids": ["b", "a"]})
        assert bad.status_code == 400 and "missing: first" in bad.json()["error"]
        assert api.post("/api/rules", json={"block": True, "index": "top"}).status_code == 400
        assert api.delete("/api/rules/a").json() == {"deleted": "a"}
        assert api.get("/api/rules/a").status_code == 404
        assert api.delete("/api/rules/a").status_code == 404
        rules.value = {**rules.value, "rules": [], "error": "invalid TOML"}  # edited by hand
        refused = api.post("/api/rules", json={"name": "c", "block": True})
        assert refused.status_code == 409 and "invalid TOML" in refused.json()["error"]
        assert api.get("/api/rules").json()["error"] == "invalid TOML"
