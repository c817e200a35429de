"""The rules as live settings (what the inspector's API reads and saves): saved to the rules
file, in force at once here and, through the file, in any other process's plugin."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
from nectoproxy_plugin_rules import RulesPlugin

from nectoproxy.config import config_from_dict
from nectoproxy.settings import SettingsError, SettingsProvider, write_atomically


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$NECTOPROXY_HOME`` of this test alone (the default rules file lives there)."""
    monkeypatch.setenv("NECTOPROXY_HOME", str(tmp_path))
    return tmp_path


def configured(table: dict | None = None) -> tuple[RulesPlugin, object]:
    plugin = RulesPlugin()
    config = config_from_dict({"plugins": {"rules": table or {}}})
    return plugin, plugin.on_configure(config=config, options=table or {})


def test_an_empty_table_keeps_the_rules_in_the_home_folder(home):
    plugin, result = configured()
    assert result is None and plugin.file == home / "rules.toml" and plugin.rules.rules == ()
    [settings] = plugin.on_settings()
    assert isinstance(settings, SettingsProvider) and settings.name == "rules"
    assert settings.get() == {"rules": [], "configured": [], "file": str(home / "rules.toml")}


def test_without_a_table_it_offers_nothing_and_with_reload_off_neither(home):
    plugin = RulesPlugin()
    assert plugin.on_configure(config=config_from_dict({}), options={}) is False
    plugin, result = configured({"reload": False})
    assert result == {"on_request_headers"}
    assert plugin.on_settings() == []


def test_put_saves_the_file_and_applies_at_once(make_proxy, origin, home):
    plugin = RulesPlugin()
    config = {"plugins": {"rules": {"rule": [{"name": "inline", "path": "/inline",
                                               "mock": {"body": "inline"}}]}}}
    with make_proxy(plugins=[plugin], config=config) as proxy, proxy.client() as client:
        [settings] = plugin.on_settings()
        assert client.get(origin.url + "/live").status_code == 404
        value = settings.put({"rules": [{"url": origin.url + "/live", "mock": {"body": "live"}},
                                        {"name": "named", "path": "/named", "block": True}]})
        assert client.get(origin.url + "/live").text == "live"  # no waiting in this process
        assert client.get(origin.url + "/inline").text == "inline"
        assert [r["name"] for r in value["rules"]] == ["rule 1", "named"]
        assert value["configured"] == config["plugins"]["rules"]["rule"]
    saved = tomllib.loads((home / "rules.toml").read_text())
    assert saved["rule"][0] == {"url": origin.url + "/live", "mock": {"body": "live"},
                                "name": "rule 1"}
    other, _ = configured()  # another worker process, or the next run
    assert [r.name for r in other.rules.rules] == ["rule 1", "named"]


@pytest.mark.parametrize(("rules", "field", "words"), [
    ([{"name": "a", "mock": {"stauts": 1}}], "rules[0]", "rules[0] (name 'a'): mock: unknown"),
    ([{"name": "a", "block": True}, {"name": "a", "block": True}], "rules[1]", "already used"),
    ([{"name": "a", "block": True, "priority": None}], "rules[0].priority", "null"),
    ([{"name": "a", "map_local": "no/such/folder"}], "rules[0]", "no such file or folder"),
])
def test_a_refused_put_changes_nothing(home, rules, field, words):
    plugin, _ = configured()
    [settings] = plugin.on_settings()
    settings.put({"rules": [{"name": "kept", "block": True}]})
    before = (home / "rules.toml").read_bytes()
    with pytest.raises(SettingsError) as info:
        settings.put({"rules": rules})
    assert info.value.field == field and words in info.value.message
    assert (home / "rules.toml").read_bytes() == before
    assert [r.name for r in plugin.rules.rules] == ["kept"]


def test_a_hand_edited_file_shows_its_rules_and_errors(home):
    plugin, _ = configured()
    [settings] = plugin.on_settings()
    (home / "rules.toml").write_text('[[rule]]\nblock = true\n\n[[rule]]\nstauts = 1\n')
    value = settings.get()
    assert value["rules"][0] == {"name": "rules.toml rule 1", "block": True}
    assert "unknown key 'stauts'" in value["error"]
    (home / "rules.toml").write_text("[[rule]\n")
    assert "invalid TOML" in settings.get()["error"]


def test_other_processes_pick_the_file_up_within_a_second(make_proxy, origin, home):
    plugin = RulesPlugin()
    with make_proxy(plugins=[plugin], config={"plugins": {"rules": {}}}) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/other").status_code == 404
        write_atomically(home / "rules.toml",  # as another worker's inspector would
                         f'[[rule]]\nname = "x"\nurl = "{origin.url}/other"\n'
                         'mock = { body = "from the file" }\n')
        changed = time.monotonic()
        while client.get(origin.url + "/other").text != "from the file":
            assert time.monotonic() - changed < 1.0
            time.sleep(0.02)


def test_the_inspector_never_serves_nectoproxys_own_files(home):
    (home / "certs").mkdir()
    (home / "certs" / "ca-key.pem").write_text("secret")
    (home / "web-token").write_text("token")
    (home / "mocks").mkdir()
    (home / "mocks" / "ok.json").write_text("{}")
    plugin, _ = configured()
    [settings] = plugin.on_settings()
    for rule, field in (({"map_local": str(home)}, "rules[0].map_local"),
                        ({"map_local": "certs"}, "rules[0].map_local"),
                        ({"mock": {"body_file": "web-token"}}, "rules[0].mock.body_file"),
                        ({"mock": {"body_file": "certs/ca-key.pem"}}, "rules[0].mock.body_file"),
                        ({"map_local": "/"}, "rules[0].map_local")):
        with pytest.raises(SettingsError) as info:
            settings.put({"rules": [{"name": "x", **rule}]})
        assert info.value.field == field and "never serves" in info.value.message
    assert not (home / "rules.toml").exists()
    settings.put({"rules": [{"name": "ok", "map_local": "mocks"},
                            {"name": "file", "mock": {"body_file": "mocks/ok.json"}}]})
    assert [r.name for r in plugin.rules.rules] == ["ok", "file"]
