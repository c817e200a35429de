"""The network profile as live settings (what the inspector's API reads and saves): kept in
``$NECTOPROXY_HOME/throttle.toml``, in force at once here and, through the file, in any other
process's plugin; it replaces the ``[plugins.throttle]`` table while it exists."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nectoproxy_plugin_throttle import Throttle
from throttle_testutil import throttled

from nectoproxy.config import config_from_dict
from nectoproxy.settings import SettingsError, SettingsProvider, write_atomically

OFFLINE = {"profile": "offline", "loss_mode": "503"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NECTOPROXY_HOME", str(tmp_path))
    return tmp_path


def configured(table: dict) -> Throttle:
    plugin = Throttle()
    assert plugin.on_configure(config_from_dict({"plugins": {"throttle": table}}), table) is None
    return plugin


def test_a_table_keeps_it_on_and_offers_the_settings(home):
    plugin = configured({})
    [settings] = plugin.on_settings()
    assert isinstance(settings, SettingsProvider) and settings.name == "throttle"
    value = settings.get()
    assert value["source"] == "configuration" and value["file"] == str(home / "throttle.toml")
    assert [p["name"] for p in value["presets"]][:2] == ["Slow 2G", "Regular 2G"]
    assert Throttle().on_configure(config_from_dict({}), {}) is False  # no table: off


def test_put_applies_at_once_and_is_kept(make_proxy, origin, home):
    plugin = Throttle()
    with make_proxy(plugins=[plugin], config={"plugins": {"throttle": {"profile": "none"}}}) \
            as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
        [settings] = plugin.on_settings()
        value = settings.put({**settings.get(), **OFFLINE})  # read-only keys sent back: ignored
        assert value["source"] == "inspector" and value["profile"] == "offline"
        assert client.get(origin.url + "/").status_code == 503
        settings.put({"profile": "none"})
        assert client.get(origin.url + "/").status_code == 200
        settings.put(OFFLINE)
    again = configured({"profile": "none"})  # the next run: the file replaces the table
    assert again.settings.default is not None and again.settings.default.offline


@pytest.mark.parametrize(("value", "field"), [
    ({"profile": "warp"}, "profile"),
    ({"profile": None}, "profile"),
    ({"hosts": {"a.test": "slow 9g"}}, 'hosts."a.test"'),
    ({"profiles": {"x": {"download_bps": -1}}}, "profiles.x.download_bps"),
    ({"speed": 1}, "speed"),
])
def test_a_refused_put_changes_nothing(home, value, field):
    plugin = configured({})
    [settings] = plugin.on_settings()
    with pytest.raises(SettingsError) as info:
        settings.put(value)
    assert info.value.field == field and field in info.value.message
    assert not (home / "throttle.toml").exists() and plugin.settings.default is None


def test_other_processes_pick_the_file_up_within_a_second(make_proxy, origin, home):
    with throttled(make_proxy, {}) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
        write_atomically(home / "throttle.toml", 'profile = "offline"\nloss_mode = "503"\n')
        changed = time.monotonic()
        while client.get(origin.url + "/").status_code != 503:
            assert time.monotonic() - changed < 1.0
            time.sleep(0.02)
        (home / "throttle.toml").unlink()  # back to the table
        time.sleep(0.3)
        assert client.get(origin.url + "/").status_code == 200
