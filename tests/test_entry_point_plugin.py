"""The installed example plugin (examples/nectoproxy-plugin-example) found through its entry point.

Needs ``pip install -e ./examples/nectoproxy-plugin-example`` (the test command runs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from nectoproxy.config import load_config
from nectoproxy.testing import RunningProxy

pytestmark = pytest.mark.skipif(
    not any(ep.name == "example" for ep in entry_points(group="nectoproxy")),
    reason="pip install -e ./examples/nectoproxy-plugin-example first",
)

HEADER = "X-Example-Plugin"
GREETING = "hello from nectoproxy-plugin-example"


def other_entry_points() -> list[str]:
    """Installed plugins other than ours, disabled so that they cannot disturb these tests."""
    return [ep.name for ep in entry_points(group="nectoproxy") if ep.name != "example"]


def clean_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NECTOPROXY_")}
    env["NECTOPROXY_HOME"] = str(tmp_path)
    env.update(extra)
    return env


def plugins_json(tmp_path, *args: str, **env: str) -> list[dict]:
    others = [arg for name in other_entry_points() for arg in ("--disable", name)]
    result = subprocess.run(
        [sys.executable, "-m", "nectoproxy", "plugins", "--json", "--no-config", *others, *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(tmp_path, **env),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_entry_point_is_registered():
    (ep,) = [ep for ep in entry_points(group="nectoproxy") if ep.name == "example"]
    assert ep.value == "nectoproxy_plugin_example"
    assert ep.dist is not None and ep.dist.name == "nectoproxy-plugin-example"
    module = ep.load()
    assert ep.dist.version == module.__version__


def test_plugins_command_lists_it(tmp_path):
    import nectoproxy_plugin_example

    rows = {row["name"]: row for row in plugins_json(tmp_path)}
    row = rows["example"]
    assert row["source"] == "entry point"
    assert row["version"] == nectoproxy_plugin_example.__version__
    assert row["location"] == "nectoproxy-plugin-example"
    assert row["hooks"] == ["on_configure", "on_response"]


@pytest.mark.parametrize("how", ["env", "flag", "no-entry-points"])
def test_plugins_command_without_it(tmp_path, how):
    if how == "env":
        rows = plugins_json(tmp_path, NECTOPROXY_DISABLE_PLUGINS="example")
    elif how == "flag":
        rows = plugins_json(tmp_path, "--disable", "example")
    else:
        rows = plugins_json(tmp_path, "--no-entry-points")
    assert "example" not in {row["name"] for row in rows}
    assert "flowlog" in {row["name"] for row in rows}


def test_proxy_with_entry_points_applies_it(make_proxy, origin, tls_origin):
    config = {"plugins": {"entry_points": True, "disable": other_entry_points()}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        assert proxy.proxy.hooks.infos["example"].source == "entry point"
        plain = client.get(origin.url + "/")
        secure = client.get(tls_origin.url + "/")
    assert plain.headers[HEADER] == GREETING
    assert secure.headers[HEADER] == GREETING
    assert plain.text == secure.text == "hello from origin\n"


def test_entry_point_plugin_gets_its_table(make_proxy, origin):
    config = {"plugins": {"entry_points": True, "disable": other_entry_points(),
                          "example": {"header_name": "X-Hi", "greeting": "hi"}}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        response = client.get(origin.url + "/")
    assert response.headers["X-Hi"] == "hi"
    assert HEADER not in response.headers


def test_disable_in_config_removes_it(make_proxy, origin):
    config = {"plugins": {"entry_points": True, "disable": [*other_entry_points(), "example"]}}
    with make_proxy(config=config) as proxy, proxy.client() as client:
        assert "example" not in proxy.proxy.hooks.infos
        response = client.get(origin.url + "/")
    assert response.status_code == 200
    assert HEADER not in response.headers


@pytest.mark.parametrize("separator", [",", " , "])
def test_disable_environment_variable_removes_it(tmp_path, shared_certs_dir, origin_ca_path,
                                                 origin, separator):
    disable = separator.join([*other_entry_points(), "example", "not-installed"])
    env = clean_env(tmp_path, NECTOPROXY_DISABLE_PLUGINS=disable)
    config = load_config(use_file=False, env=env, overrides={
        "proxy": {"listen_host": "127.0.0.1", "listen_port": 0, "upstream_ca": origin_ca_path},
        "certs": {"dir": str(shared_certs_dir)},
        "log": {"quiet": True},
    })
    assert config.plugins.entry_points is True
    with RunningProxy(config) as proxy, proxy.client() as client:
        assert "example" not in proxy.proxy.hooks.infos
        response = client.get(origin.url + "/")
    assert response.status_code == 200
    assert HEADER not in response.headers
