"""The [plugins.har] table: off without path/replay, filters, the output path, bad values."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import anyio
import pytest
from har_testing import load_har, validate, wait_for_entries
from nectoproxy_plugin_har import HarPlugin
from nectoproxy_plugin_har.settings import output_path, parse_settings

import nectoproxy
from nectoproxy.testing import proxy_config


@pytest.mark.parametrize("options", [{}, {"hosts": ["*"], "max_body_size": 10}])
def test_inactive_without_path_or_replay(make_proxy, origin, tmp_path, monkeypatch, options):
    monkeypatch.chdir(tmp_path)
    plugin = HarPlugin()
    config = proxy_config(tmp_path / "certs", sections={"plugins": {"har": options}})
    assert anyio.run(plugin.on_configure, config, options) is False
    seen: list[dict[str, object]] = []

    class Spy:
        name = "spy"

        def on_complete(self, flow: nectoproxy.Flow) -> None:
            seen.append(dict(flow.metadata))

    with make_proxy(plugins=[plugin, Spy()], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/").status_code == 200
    assert seen == [{}]  # its on_request_headers never ran (it would have noted the URL)
    assert plugin.path is None and plugin.writer is None
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_entry_point_loads_it(make_proxy, origin, tmp_path):
    import importlib.metadata

    others = sorted({ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")}
                    - {"har"})
    config = {"plugins": {"entry_points": True, "disable": others,
                          "har": {"path": str(tmp_path / "ep.har")}}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        client.get(origin.url + "/json")
        document = wait_for_entries(tmp_path / "ep.har", 1)
    validate(document)


def test_hosts_and_urls_filters(make_proxy, origin, tls_origin, tmp_path):
    plugin = HarPlugin()
    options = {"path": str(tmp_path / "filtered.har"), "hosts": ["LOCALHOST", "127.0.0.*"],
               "urls": ["*/json", "/[?&]keep=1\\b/"]}
    localhost = origin.url.replace("127.0.0.1", "localhost")
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        for url in (origin.url + "/json", origin.url + "/html", origin.url + "/?keep=1",
                    tls_origin.url + "/json", localhost + "/json", origin.url + "/?keep=10"):
            client.get(url)
        client.get(origin.url + "/?keep=1&last=1")  # a marker: every flow before it is finished
        document = wait_for_entries(plugin.path, 5)
    assert sorted(e["request"]["url"] for e in document["log"]["entries"]) == sorted([
        origin.url + "/json", origin.url + "/?keep=1", tls_origin.url + "/json",
        localhost + "/json", origin.url + "/?keep=1&last=1"])


def test_host_filter_excludes_other_hosts(make_proxy, origin, tmp_path):
    plugin = HarPlugin()
    options = {"path": str(tmp_path / "some.har"), "hosts": ["*.example.com", "localhost"]}
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        client.get(origin.url + "/")
        client.get(origin.url.replace("127.0.0.1", "localhost") + "/")  # a marker, recorded
        document = wait_for_entries(plugin.path, 1)
    assert document["log"]["entries"][0]["request"]["url"].startswith("http://localhost:")
    assert len(load_har(plugin.path)["log"]["entries"]) == 1


def test_max_body_size_zero_keeps_no_body(make_proxy, origin, tmp_path):
    plugin = HarPlugin()
    options = {"path": str(tmp_path / "nobody.har"), "max_body_size": 0}
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        assert client.get(origin.url + "/json").json() == {"hello": "world", "n": 1}
        client.get(origin.url + "/status/204")
        document = wait_for_entries(plugin.path, 2)
    validate(document)
    first, empty = document["log"]["entries"]
    assert first["response"]["content"]["_truncated"] is True
    assert empty["response"]["content"] == {"size": 0, "mimeType": "x-unknown", "text": ""}


def test_timestamp_pattern_and_never_overwrite(tmp_path):
    now = datetime(2024, 5, 1, 12, 30, 45)
    assert output_path(tmp_path / "flows-{timestamp}.har", now) == \
        tmp_path / "flows-20240501-123045.har"
    assert output_path(tmp_path / "%Y" / "%m%d.har", now) == tmp_path / "2024" / "0501.har"
    (tmp_path / "fixed.har").write_text("precious")
    (tmp_path / "fixed-1.har").write_text("precious too")
    assert output_path(tmp_path / "fixed.har", now) == tmp_path / "fixed-2.har"


def test_path_pattern_through_the_proxy(make_proxy, origin, tmp_path):
    plugin = HarPlugin()
    options = {"path": str(tmp_path / "runs" / "run-{timestamp}.har")}
    with make_proxy(plugins=[plugin], config={"plugins": {"har": options}}) as proxy, \
            proxy.client() as client:
        client.get(origin.url + "/")
        wait_for_entries(plugin.path, 1)
    assert plugin.path.parent == tmp_path / "runs"
    assert re.fullmatch(r"run-\d{8}-\d{6}\.har", plugin.path.name)


def test_relative_path_is_under_the_config_file(tmp_path):
    settings = parse_settings({"path": "out/x.har", "replay": "in.har"}, tmp_path)
    assert settings.path == tmp_path / "out" / "x.har"
    assert settings.replay == tmp_path / "in.har"


@pytest.mark.parametrize(("options", "key"), [
    ({"path": 42}, "path"),
    ({"path": ""}, "path"),
    ({"path": "x-{date}.har"}, "path"),
    ({"path": "x.har", "hosts": "*.test", "urls": [1]}, "urls"),
    ({"path": "x.har", "urls": ["/(unclosed/"]}, "urls"),
    ({"path": "x.har", "hosts": [""]}, "hosts"),
    ({"path": "x.har", "max_body_size": -1}, "max_body_size"),
    ({"path": "x.har", "max_body_size": "1MB"}, "max_body_size"),
    ({"path": "x.har", "max_body_size": True}, "max_body_size"),
    ({"replay": "x.har", "replay_fallthrough": "yes"}, "replay_fallthrough"),
    ({"path": "x.har", "replay_ignore_query_order": 1}, "replay_ignore_query_order"),
    ({"path": "x.har", "url": "*"}, "'url'"),
])
def test_bad_options_stop_start_up_naming_the_key(make_proxy, tmp_path, options, key):
    proxy = make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": options}})
    with pytest.raises(nectoproxy.ConfigError, match=re.escape(key)) as info, proxy:
        pass
    assert "[plugins.har]" in str(info.value)


def test_unwritable_path_stops_start_up(make_proxy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    options = {"path": str(blocker / "flows.har")}
    proxy = make_proxy(plugins=[HarPlugin()], config={"plugins": {"har": options}})
    with pytest.raises(nectoproxy.ConfigError, match="cannot create"), proxy:
        pass


def test_relative_path_without_config_file_is_under_cwd(make_proxy, origin, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugin = HarPlugin()
    with make_proxy(plugins=[plugin], config={"plugins": {"har": {"path": "here.har"}}}) \
            as proxy, proxy.client() as client:
        client.get(origin.url + "/")
        wait_for_entries(Path("here.har"), 1)
    assert plugin.path == tmp_path / "here.har"
