"""Configuration: errors that name the rule and the key, start-up, switching off, entry point."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nectoproxy_plugin_rules import RulesPlugin

import nectoproxy
from nectoproxy.config import config_from_dict

MOCK = {"mock": {"body": "ok"}}


def start_fails(rules_proxy, message: str, rules: list[dict[str, Any]] | None = None,
                **options: Any) -> str:
    proxy = rules_proxy(rules, **options)
    with pytest.raises(nectoproxy.ConfigError) as info, proxy:
        pass
    text = str(info.value)
    assert re.search(message, text), text
    return text


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "x", "mock": {"stauts": 200}},
     r"^\[plugins\.rules\]: rule 3 \(name 'x'\): mock: unknown key 'stauts' \(known: status,"),
    ({"name": "x", "priorty": 1, **MOCK}, r"rule 3 \(name 'x'\): unknown key 'priorty'"),
    ({"priority": "high", **MOCK}, r"rule 3: priority: expected an integer, got 'high'"),
    ({"enabled": "no", **MOCK}, r"rule 3: enabled: expected true or false"),
    ({"url": "/(unclosed/", **MOCK}, r"rule 3: url: invalid regular expression '/\(unclosed/'"),
    ({"method": [], **MOCK}, r"rule 3: method: must name at least one method"),
    ({"method": 7, **MOCK}, r"rule 3: method: expected a string or a list of strings"),
    ({"headers": {"X-A": 1}, **MOCK}, r"rule 3: headers: expected a table of strings"),
    ({"body_contains": "", **MOCK}, r"rule 3: body_contains: must not be empty"),
    ({"name": "both", "block": True, **MOCK}, r"rule 3 \(name 'both'\): mock and block cannot"),
    ({"map_remote": "http://127.0.0.1:1", "map_local": "."}, r"map_local and map_remote cannot"),
    ({"name": "idle", "path": "/x"}, r"rule 3 \(name 'idle'\): no action"),
    ({"mock": {"status": 99}}, r"rule 3: mock: status: 99 is not between 200 and 599"),
    ({"mock": {"body": 5}}, r"rule 3: mock: body: expected a string, or a table/array"),
    ({"mock": {"headers": {"Bad Name": "v"}}}, r"mock: headers: 'Bad Name' is not a valid header"),
    ({"mock": {"headers": {"X": "a\r\nInjected: 1"}}}, r"mock: headers: the value of 'X'"),
    ({"mock": {"body_file": "no/such/file.json"}}, r"mock: body_file: .*no such file"),
    ({"mock": {"body": "a", "body_file": "x"}}, r"mock: body and body_file cannot"),
    ({"mock": {"delay_ms": -1}}, r"mock: delay_ms: must be at least 0"),
    ({"block": {"status": "403"}}, r"block: status: expected an integer"),
    ({"delay": "slow"}, r"rule 3: delay: expected a number of milliseconds or a table"),
    ({"delay": {"variance_ms": 5}}, r"rule 3: delay: ms is required"),
    ({"throttle": {"bytes_per_second": 0}}, r"throttle: bytes_per_second: must be greater"),
    ({"throttle": {"latency_ms": 5}}, r"throttle: bytes_per_second is required"),
    ({"map_remote": "ftp://x/"}, r"map_remote: expected an absolute http\(s\) URL"),
    ({"map_remote": {"url": "http://h:99999"}}, r"map_remote: url: .*not a valid URL"),
    ({"map_remote": {"url": "http://h", "keep_query": True}}, r"map_remote: unknown key"),
    ({"map_local": "/definitely/not/here"}, r"rule 3: map_local: .*no such file or folder"),
    ({"map_local": {"path": ".", "index": "../x"}}, r"map_local: index: expected a file name"),
    ({"modify_request": {"set_headers": {"X": 1}}}, r"modify_request: set_headers: expected"),
    ({"modify_request": {"status": 201}}, r"modify_request: unknown key 'status'"),
    ({"modify_response": {"status": 1000}}, r"modify_response: status: 1000 is not between"),
    ({"modify_response": {"replace": [{"find": "a"}]}},
     r"modify_response: replace 1: find and replace are required"),
    ({"modify_response": {"replace": [{"find": "(a", "replace": "", "regex": True}]}},
     r"replace 1: find: invalid regular expression"),
    ({"modify_response": {"replace": [{"find": "a", "replace": r"\2", "regex": True}]}},
     r"replace 1: replace: invalid replacement"),
    ({"modify_response": {"replace": {"find": "a", "replace": "b"}}},
     r"modify_response: replace: expected an array of tables"),
    ({"name": "", **MOCK}, r"rule 3: name: must not be empty"),
    ({"name": "ok", "enabled": False, "mock": {"stauts": 1}}, r"unknown key 'stauts'"),
])
def test_rule_errors_name_the_rule_and_the_key(rules_proxy, rule, message):
    rules = [{"name": "ok", **MOCK}, {"name": "fine", **MOCK}, rule]
    start_fails(rules_proxy, message, rules)


@pytest.mark.parametrize(("options", "message"), [
    ({"files": "rules.toml"}, r"^\[plugins\.rules\]: unknown key 'files' \(known: rule, file, "),
    ({"rule": {"mock": {}}}, r"\[plugins\.rules\]: rule: expected an array of tables"),
    ({"rule": ["mock"]}, r"\[plugins\.rules\]: rule 1: expected a table, got 'mock'"),
    ({"file": 3}, r"\[plugins\.rules\]: file: expected a string"),
    ({"file": "missing-rules.toml"}, r"missing-rules\.toml: no such rules file"),
    ({"reload": "yes", "rule": [MOCK]}, r"reload: expected true or false"),
    ({"rule": [{"name": "twin", **MOCK}, {"name": "twin", **MOCK}]},
     r"rule 2 \(name 'twin'\): name 'twin' is already used by \[plugins\.rules\]: rule 1"),
])
def test_table_errors(rules_proxy, options, message):
    start_fails(rules_proxy, message, **options)


def test_rules_file_error_stops_start_up(rules_proxy, tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[rule]]\nname = "a"\nmock = { body = "a" }\n\n'
                          '[[rule]]\nblock = true\n\n'
                          '[[rule]]\nname = "x"\nmock = { stauts = 200 }\n')
    text = start_fails(rules_proxy, r"rules\.toml: rule 3 \(name 'x'\): mock: unknown key "
                                    r"'stauts'", file=str(rules_file))
    assert text.startswith(str(rules_file))


@pytest.mark.parametrize(("content", "message"), [
    ("[[rule]\n", r"rules\.toml: invalid TOML"),
    ('rules = []\n', r"rules\.toml: unknown key 'rules' \(known: rule\)"),
    ('[[rule]]\nname = "a"\npriority = 1.5\nblock = true\n',
     r"rules\.toml: rule 1 \(name 'a'\): priority: expected an integer, got 1\.5"),
])
def test_rules_file_syntax_and_type_errors(rules_proxy, tmp_path, content, message):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(content)
    start_fails(rules_proxy, message, file=str(rules_file))


def test_switched_off_without_rules():
    config = config_from_dict({})
    assert RulesPlugin().on_configure(config=config, options={}) is False
    assert RulesPlugin().on_configure(config=config, options={"rule": []}) is False


def test_an_empty_rules_file_keeps_it_on(tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("# nothing yet\n")
    plugin = RulesPlugin()
    assert plugin.on_configure(config=config_from_dict({}),
                               options={"file": str(rules_file)}) is None
    assert plugin.rules.rules == ()


def test_without_a_table_traffic_passes_untouched(make_proxy, origin):
    with make_proxy(plugins=[RulesPlugin()]) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").json()["hello"] == "world"


def test_paths_are_relative_to_the_config_file(tmp_path, shared_certs_dir, origin_ca_path,
                                               monkeypatch):
    from nectoproxy.testing import RunningProxy

    (tmp_path / "conf" / "mocks").mkdir(parents=True)
    (tmp_path / "conf" / "mocks" / "hello.txt").write_text("hello from a body_file")
    (tmp_path / "conf" / "rules.toml").write_text(
        '[[rule]]\nname = "from-file"\npath = "/file"\nmock = { body_file = "mocks/hello.txt" }\n')
    (tmp_path / "conf" / "nectoproxy.toml").write_text(
        '[plugins.rules]\nfile = "rules.toml"\n\n[[plugins.rules.rule]]\npath = "/inline/*"\n'
        'map_local = { path = "mocks", strip_prefix = "/inline" }\n\n'
        '[[plugins.rules.rule]]\npriority = -1\nblock = { status = 418 }\n')
    monkeypatch.chdir(tmp_path)  # not the config file's folder
    config = nectoproxy.load_config(str(tmp_path / "conf" / "nectoproxy.toml"), env={}, overrides={
        "proxy": {"listen_host": "127.0.0.1", "listen_port": 0, "upstream_ca": origin_ca_path},
        "certs": {"dir": str(shared_certs_dir)}, "plugins": {"entry_points": False}})
    with RunningProxy(config, plugins=[RulesPlugin()]) as proxy, proxy.client() as client:
        assert client.get("http://api.example.test/file").text == "hello from a body_file"
        assert client.get("http://api.example.test/inline/hello.txt").text == \
            "hello from a body_file"
        assert client.get("http://api.example.test/elsewhere").status_code == 418


def test_loaded_through_its_entry_point(make_proxy, origin):
    others = [ep.name for ep in importlib.metadata.entry_points(group="nectoproxy")
              if ep.name != "rules"]
    config = {"plugins": {"entry_points": True, "disable": others,
                          "rules": {"rule": [{"path": "/json", "mock": {"body": "via ep"}}]}}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        assert client.get(origin.url + "/json").text == "via ep"
    assert origin.requests == []


def test_listed_by_nectoproxy_plugins():
    result = subprocess.run([sys.executable, "-m", "nectoproxy", "plugins", "--no-config"],
                            capture_output=True, text=True, timeout=60, check=False,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^rules \S+\s+\[entry point: nectoproxy-plugin-rules\]", result.stdout,
                     re.MULTILINE), result.stdout
