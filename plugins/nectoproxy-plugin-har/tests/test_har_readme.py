"""The README's nectoproxy.toml examples, run verbatim through a real proxy."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from har_testing import readme_toml_blocks, validate, wait_for_entries

from nectoproxy.testing.origin import JSON_BODY


def _config(toml_text: str) -> dict[str, dict[str, object]]:
    """The README's tables, loading the plugin through its entry point (others disabled)."""
    tables = tomllib.loads(toml_text)
    others = sorted({ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")}
                    - {"har"})
    plugins = tables.setdefault("plugins", {})
    plugins.update({"entry_points": True, "disable": others})
    return tables


def test_readme_has_the_two_examples():
    record_example, replay_example = readme_toml_blocks()
    assert "path = " in record_example and "replay = " in replay_example


def test_readme_examples_verbatim(make_proxy, origin, tls_origin, tmp_path, monkeypatch):
    record_example, replay_example = readme_toml_blocks()
    monkeypatch.chdir(tmp_path)  # relative paths: there is no config file, so under the cwd

    with make_proxy(config=_config(record_example)) as proxy, proxy.client() as client:
        client.get(origin.url + "/json")  # recorded: host 127.0.0.1, URL */json
        client.get(origin.url + "/html")  # not recorded: no URL pattern matches
        client.get(tls_origin.url + "/api/users")  # recorded (a 404, recorded all the same)
        client.get(origin.url + "/echo?debug=10")  # not recorded: debug=10 is not debug=1
        client.get(origin.url + "/echo?x=y&debug=1")  # recorded by the regular expression
        recordings = Path("recordings")
        [path] = recordings.glob("flows-*.har")
        document = wait_for_entries(path, 3)
    validate(document)
    assert sorted(e["request"]["url"] for e in document["log"]["entries"]) == sorted([
        origin.url + "/json", tls_origin.url + "/api/users", origin.url + "/echo?x=y&debug=1"])

    # The replay example reads recordings/api.har: make it from this recording.
    path.rename(recordings / "api.har")
    reached = len(origin.requests)
    origin.stop()
    tls_origin.stop()
    with make_proxy(config=_config(replay_example)) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").content == JSON_BODY
        assert client.get(tls_origin.url + "/api/users").status_code == 404
        echoed = client.get(origin.url + "/echo?debug=1&x=y").json()  # query order ignored
        assert echoed["path"] == "/echo?x=y&debug=1"
        assert client.get(origin.url + "/html").status_code == 404  # no fallthrough
    assert len(origin.requests) == reached
